"""The `loadgen` command line."""
