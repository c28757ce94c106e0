"""The database: accounts and API keys (never prompts or outputs)."""
