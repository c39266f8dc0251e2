"""The live view of a run: what the terminal panel and Locust's LLM tab show while it goes."""
