"""Implementations of the public attribution classes (one family per file)."""
