"""Talking to OpenAI-compatible streaming endpoints: the connection, SSE parsing, per-event timestamps."""
