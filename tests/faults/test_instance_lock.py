"""Faults around the instance lock: a holder killed with SIGKILL, a holder that keeps it, both profiles.

Invariants: a lock is never left behind by a dead holder (the next writer gets it at once), a second writer
waits and then times out with a retryable LockTimeout while the holder lives, and the Postgres advisory lock
of the production profile behaves the same across connections.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from pipelines.core.errors import NotRetryable
from pipelines.core.locks import LockTimeout, advisory_key, instance_lock
from pipelines.core.settings import LooplineSettings

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def holder(home: Path, name: str, *, profile: str = "embedded", prefix: str = "loopline") -> subprocess.Popen:
    """A child process that takes the lock, says so on stdout, then sleeps until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from pipelines.core.locks import instance_lock
        from pipelines.core.settings import LooplineSettings
        settings = LooplineSettings(home={str(home)!r}, profile={profile!r}, database_prefix={prefix!r})
        with instance_lock({name!r}, settings=settings):
            print("held", flush=True)
            time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_times_out_while_the_holder_lives_and_gets_the_lock_once_it_is_killed(tmp_path):
    settings = LooplineSettings(home=tmp_path)
    process = holder(tmp_path, "rag:docs")
    try:
        with pytest.raises(LockTimeout, match=r"lock 'rag:docs' is held by another run .* will be retried"):
            with instance_lock("rag:docs", settings=settings, timeout_s=0.5):
                pytest.fail("entered a lock another process holds")
        with instance_lock("rag:other", settings=settings, timeout_s=0.5):
            pass  # another instance's lock is independent
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    started = time.monotonic()
    with instance_lock("rag:docs", settings=settings, timeout_s=5):
        waited = time.monotonic() - started
    assert waited < 5, "a killed holder's lock is released by the kernel"


def test_a_lock_timeout_is_a_fault_that_retries_not_bad_input():
    assert not issubclass(LockTimeout, NotRetryable)


@pytest.fixture
def production_database():
    prefix = f"loopline_locktest_{os.getpid()}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f"create database {prefix}_airflow")
    yield prefix
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f"drop database if exists {prefix}_airflow with (force)")


def test_the_production_profile_uses_a_postgres_advisory_lock_that_dies_with_its_holder(tmp_path, production_database):
    settings = LooplineSettings(home=tmp_path, profile="production", database_prefix=production_database)
    process = holder(tmp_path, "features:churn", profile="production", prefix=production_database)
    try:
        with psycopg.connect(settings.database_url("airflow")) as probe:
            held = probe.execute("select count(*) from pg_locks where locktype = 'advisory' and objid = %s",
                                 (advisory_key("features:churn") & 0xFFFFFFFF,)).fetchone()[0]
        assert held == 1, "the holder's advisory lock is visible in pg_locks"
        with pytest.raises(LockTimeout):
            with instance_lock("features:churn", settings=settings, timeout_s=0.5):
                pytest.fail("entered a lock another process holds")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    with instance_lock("features:churn", settings=settings, timeout_s=10):
        pass
