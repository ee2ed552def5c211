"""Readers, format adapters and writers around one canonical conversation record."""

from .pool import InputSpec, Pool, read_pool

__all__ = ["InputSpec", "Pool", "read_pool"]
