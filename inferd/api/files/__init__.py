"""The OpenAI-compatible Files API over HTTP (`/v1/openai/files`, `/v1/files`)."""
