"""Signals: one ``Signal`` class per computation, cached by id + fingerprint (``store``), run by ``compute``."""
