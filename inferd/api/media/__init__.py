"""User-supplied binary inputs: data URLs, SSRF-guarded URL fetches, format checks."""
