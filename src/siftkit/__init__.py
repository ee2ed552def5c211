"""siftkit: select the SFT data that matters from pools of millions of conversations.

Python API (mirrors the CLI): ``read``, ``score``, ``inspect``, ``select``, ``write``, ``run``, ``report``; ``evolve`` and ``testset`` generate data
(docs/generate.md).
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

_API = ("read", "score", "inspect", "select", "write", "run", "report", "selection_config", "evolve", "testset")


def __getattr__(name: str) -> Any:  # lazy: `import siftkit` stays light
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'siftkit' has no attribute {name!r}")


__all__ = list(_API) + ["__version__"]
