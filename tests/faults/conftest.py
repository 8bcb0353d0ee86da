"""Fixtures shared by the fault-injection tests."""

from __future__ import annotations

import pytest

from pipelines.core.settings import get_settings


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh data home for this test, seen by this process and by the children it starts."""
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()
