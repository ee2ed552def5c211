"""siftkit: select the SFT data that matters from pools of millions of conversations."""

__version__ = "0.1.0"
