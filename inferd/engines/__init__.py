"""Task code. An engine knows nothing of HTTP, accounts or prices."""
