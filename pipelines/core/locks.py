"""One writer per pipeline instance: a named lock held around the steps that change shared state.

``max_active_runs=1`` keeps two scheduled runs of one DAG apart, but not a backfill, ``airflow dags test``,
a command run by hand (the RAG rollback), or two configs that share a store. Writer steps therefore take
:func:`instance_lock` for what they write (``"rag:docs"``, ``"features:churn"``, …):

- embedded profile: an exclusive ``flock`` on ``<home>/locks/<name>.lock``. The kernel drops it when the
  holder dies, so a killed worker never leaves a stale lock behind;
- production profile: a Postgres session-level advisory lock (``pg_try_advisory_lock``) in the Airflow
  metadata database, which every worker on every machine reaches; it too ends with the holder's connection.

Waiting past ``timeout_s`` raises :class:`LockTimeout`, which is a fault, not bad data: the task retries and
nothing is quarantined or discarded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pipelines.core.home import DataHome
from pipelines.core.settings import LooplineSettings, get_settings

log = logging.getLogger(__name__)

POLL_S = 0.2


class LockTimeout(TimeoutError):
    """Another run holds the instance's lock for longer than the wait allows; retry later (nothing was changed)."""


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (Postgres advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(f"loopline:{name}".encode()).digest()[:8], "big", signed=True)


def _lock_file_name(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}.lock"


@contextmanager
def instance_lock(name: str, *, settings: LooplineSettings | None = None, timeout_s: float = 600) -> Iterator[None]:
    """Hold the exclusive lock ``name`` for the ``with`` block, waiting up to ``timeout_s`` seconds for it.

    Raises:
        LockTimeout: the lock stayed held by another process for ``timeout_s``.
    """
    settings = settings or get_settings()
    if settings.profile == "production":
        with _advisory_lock(name, settings, timeout_s):
            yield
    else:
        with _file_lock(name, settings, timeout_s):
            yield


def _wait_message(name: str, waited: float, timeout_s: float) -> str:
    return (f"lock {name!r} is held by another run for {waited:.0f} s (timeout {timeout_s:.0f} s): another run, "
            "backfill or command is writing the same instance; this attempt changed nothing and will be retried")


@contextmanager
def _file_lock(name: str, settings: LooplineSettings, timeout_s: float) -> Iterator[None]:
    import fcntl

    path = DataHome(settings).path("locks", _lock_file_name(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    started = time.monotonic()
    announced = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= timeout_s:
                    raise LockTimeout(_wait_message(name, waited, timeout_s)) from None
                if not announced:
                    log.info("Waiting for lock %r (held by another run)", name)
                    announced = True
                time.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a person looking; never read back
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


@contextmanager
def _advisory_lock(name: str, settings: LooplineSettings, timeout_s: float) -> Iterator[None]:
    import psycopg

    key = advisory_key(name)
    with psycopg.connect(settings.database_url("airflow"), autocommit=True) as connection:  # URL has connect_timeout
        started = time.monotonic()
        announced = False
        while not connection.execute("select pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            waited = time.monotonic() - started
            if waited >= timeout_s:
                raise LockTimeout(_wait_message(name, waited, timeout_s))
            if not announced:
                log.info("Waiting for lock %r (Postgres advisory lock %d, held by another run)", name, key)
                announced = True
            time.sleep(POLL_S)
        try:
            yield
        finally:
            connection.execute("select pg_advisory_unlock(%s)", (key,))
