"""Shared test set-up: one data home and one Airflow home for the whole session.

The environment is set here, at import, because Airflow reads its configuration when first imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SESSION_HOME = Path(os.environ.get("LOOPLINE_TEST_HOME") or tempfile.mkdtemp(prefix="loopline-test-"))

os.environ["LOOPLINE_HOME"] = str(SESSION_HOME)
from pipelines.core.airflow_runtime import airflow_environment  # noqa: E402
from pipelines.core.settings import get_settings  # noqa: E402

get_settings.cache_clear()
os.environ.update(airflow_environment())
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def loopline_home() -> Path:
    return SESSION_HOME


@pytest.fixture(scope="session")
def airflow_db(loopline_home: Path) -> Path:
    """An initialised Airflow metadata database (SQLite) under the session's data home."""
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True,
                   capture_output=True, env=os.environ.copy())
    return loopline_home / "airflow" / "airflow.db"
