"""Reliability and privacy under fault (issue 17): load with faults, bad input, SSRF, tenancy."""
