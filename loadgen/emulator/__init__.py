"""An OpenAI-compatible streaming server whose timing comes from a performance model instead of a GPU."""
