"""Unit fixtures; the helpers behind them are in helpers.py."""

from __future__ import annotations

import pytest

from .helpers import FORMATS


@pytest.fixture(params=FORMATS, ids=lambda f: f.name)
def fmt(request):
    """Every core test runs in every wire format."""
    return request.param
