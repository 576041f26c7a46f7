"""Tests that build real network namespaces (root); shared helpers in ``helpers.py``."""
