"""Shared helpers of the foundation test suite (log checks, store dumps, definitions)."""
