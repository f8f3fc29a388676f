"""Parrot client SDK and framework adapters."""
