"""Moved to :mod:`siftkit.derive.cherry` (kept so ``siftkit.cherry`` imports keep working)."""

from .derive.cherry import BriefExperience, band_picks, brief_experience, brief_options, check_signal_spec

__all__ = ["BriefExperience", "band_picks", "brief_experience", "brief_options", "check_signal_spec"]
