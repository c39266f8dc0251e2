"""Talking to OpenAI-compatible streaming endpoints: request bodies, SSE parsing, per-event timestamps."""
