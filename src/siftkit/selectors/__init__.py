"""Selectors: one per module, registered by name, pure functions of the pool and its signal table."""
