"""The self-contained HTML selection report (``siftkit report``)."""

from .html import render_report

__all__ = ["render_report"]
