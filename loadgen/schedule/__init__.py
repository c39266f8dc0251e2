"""What to send and when: length distributions, arrival pacers and the per-stage plan of requests.

Import the modules themselves (`loadgen.schedule.plan`): the emulator needs the length sampler only, not the plan's
trace readers and DuckDB."""
