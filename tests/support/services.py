"""Services and system facilities some tests need: missing ones skip a test on a laptop and fail it on CI.

``.ci/run`` starts PostgreSQL and Redis and runs as root (a tmpfs can be mounted), so under ``CI=true`` a
missing one means the run did not test what it claims: it fails instead of passing with a skip.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Skip the test (fail it under ``CI=true``) because ``what`` is not available here."""
    if on_ci():
        pytest.fail(f"CI=true and this test cannot run: {what}", pytrace=False)
    pytest.skip(what)


def postgres_admin():
    """An autocommit connection to the local PostgreSQL's ``postgres`` database, or skip/fail."""
    import psycopg

    try:
        return psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        missing(f"no PostgreSQL on 127.0.0.1:5432: {exc}")


def fresh_login_role(admin, role: str) -> str:
    """(Re)create the Postgres login role ``role`` with a random password, its ``<role>_*`` databases left by
    an interrupted run dropped first; return the password (the production tests check it never leaks)."""
    import secrets

    password = "pg-" + secrets.token_hex(12)
    for (database,) in admin.execute("select datname from pg_database where datname like %s", (f"{role}\\_%",)):
        admin.execute(f'drop database "{database}" with (force)')
    admin.execute(f"drop role if exists {role}")
    admin.execute(f"create role {role} login createdb password '{password}'")
    return password


def redis_client(db: int):
    """A client of the local Redis database ``db`` that answered a ping, or skip/fail."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        missing(f"no Redis on 127.0.0.1:6379: {exc}")
    return client


@contextmanager
def small_filesystem(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` mounted on ``path`` (created), unmounted afterwards: a disk that really fills up.

    Needs root (CI runs as root); elsewhere the test is skipped.
    """
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        missing(f"cannot mount a small tmpfs on {path} to fill a disk for real (needs root): "
                f"{mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Fill ``folder``'s filesystem until at most ``leave_bytes`` are free; return the filler file."""
    filler = folder / ".filler"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(filler, "wb") as out:
        try:
            out.write(b"\0" * max(free - leave_bytes, 0))
        except OSError:
            pass
    return filler
