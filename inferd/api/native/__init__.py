"""The native per-model API: POST /v1/inference/{model} and GET /models/{model}."""
