"""Engines that run ``Signal.compute`` per shard: ``local`` (process pool) and ``ray``."""
