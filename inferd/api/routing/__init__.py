"""The routes API: a model name served by targets here or at other providers."""
