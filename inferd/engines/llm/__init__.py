"""LLM engine: a continuous-batching scheduler over interchangeable model backends."""
