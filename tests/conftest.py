"""Shared test setup: tests marked ``lab`` need root (real namespaces); skipped otherwise."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(
        reason="lab tests need root (network namespaces): sudo .venv/bin/pytest -m lab"
    )
    for item in items:
        if item.get_closest_marker("lab") is not None:
            item.add_marker(skip)
