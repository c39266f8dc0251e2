"""The server side of a run: its Prometheus metrics, sampled beside the load, and their canonical names."""
