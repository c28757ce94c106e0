"""The API's contract for people and tools: GET /openapi.json and Swagger UI at GET /docs."""
