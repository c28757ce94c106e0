"""HTTP: the only layer that knows wire formats (OpenAI and native)."""
