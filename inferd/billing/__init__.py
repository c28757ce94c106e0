"""Prices work from the catalog's price book."""
