"""Fixtures of the monitoring tests: a working promtool (fetched once, see scripts/promtool.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.promtool import PromtoolError, ensure_promtool


@pytest.fixture(scope="session")
def promtool() -> Path:
    try:
        return ensure_promtool()
    except PromtoolError as exc:
        pytest.fail(f"no promtool: {exc}", pytrace=False)
