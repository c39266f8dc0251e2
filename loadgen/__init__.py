"""loadgen: a phase-aware load generator for LLM serving endpoints."""

__version__ = "0.1.0"
