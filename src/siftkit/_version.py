"""The package version (its own module: any layer may read it without importing ``siftkit``'s API)."""

__version__ = "0.1.0"
