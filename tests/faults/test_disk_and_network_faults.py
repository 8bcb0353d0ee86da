"""A disk that fills up and a network that resets, injected for real under the churn features steps.

- a full disk: a small tmpfs mounted where the step writes (the quarantine folder, the DuckDB warehouse),
  filled until a few kB are left, so the kernel answers ENOSPC exactly as on a full volume;
- a flaky network: :class:`support.tcp_proxy.TcpProxy` between Loopline and the real PostgreSQL or Redis,
  resetting connections (RST) mid-conversation or slowing every packet.

Each test names the fault, where it is injected and the invariant checked after it: the fault is retryable
(never a ``NotRetryable`` error, never "bad data"), nothing is quarantined or lost, and the retry, once
the disk or the network is healthy again, does the whole job.
"""

from __future__ import annotations

import uuid

import pytest
from test_features_faults import (  # the same churn world as the other features faults
    CONFIG_FILE,
    CUSTOMERS,
    DAY1,
    DAY2,
    digests,
    file_rows,
    landed_rows,
    landing_root,
    online_values,
    quarantine_root,
    two_days_offline_with_day1_online,
)

from pipelines.core.errors import NotRetryable
from pipelines.core.settings import get_settings
from pipelines.demo import simulator
from pipelines.templates import load_config
from support import services
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.faults

REDIS_DB = 10  # ≥ 8 and not test_features_faults' 11: never the broker's; flushed after use


def nothing_quarantined(config) -> bool:
    root = quarantine_root(config)
    return not root.exists() or not [p for p in root.iterdir() if not p.name.startswith(".")]


# --- a full disk ---------------------------------------------------------------------------------------------


def test_a_full_disk_under_quarantine_keeps_the_partition_whole_in_landing(home):
    """Fault: the quarantine folder's filesystem is full (ENOSPC) while a bad day is copied into it.
    Where: check_landing → quarantine_partition, copying across filesystems (landing on the data home's disk,
    quarantine on a 1 MiB tmpfs with 4 kB left).
    Invariant: the error is an OSError (retried, not NotRetryable), every landed file keeps its bytes in
    landing, no half copy is left in quarantine; with space again, the retry quarantines the day whole."""
    from pipelines.features import steps

    config = load_config(CONFIG_FILE)
    partition = simulator.land_day(landing_root(config), DAY1, n_customers=400, faults=["renamed_column"])
    original = digests(partition)
    with services.small_filesystem(home / "quarantine", size_kib=1024) as disk:
        filler = services.fill(disk, leave_bytes=4096)
        with pytest.raises(OSError) as failure:
            steps.check_landing(config, DAY1)
        assert not isinstance(failure.value, NotRetryable) and "No space left" in str(failure.value)
        assert digests(partition) == original
        leftovers = [p.name for p in quarantine_root(config).iterdir()] if quarantine_root(config).exists() else []
        assert leftovers == [], f"a half copy was left in quarantine: {leftovers}"

        filler.unlink()
        with pytest.raises(steps.BatchQuarantined) as quarantined:
            steps.check_landing(config, DAY1)
        kept = digests(quarantined.value.quarantined_to)
        assert kept.pop("reason.json") and kept == original
        assert not partition.exists()


def test_a_full_disk_under_the_warehouse_is_retryable_and_quarantines_nothing(home):
    """Fault: the DuckDB warehouse's filesystem is full (ENOSPC) during dbt build.
    Where: build_mart, the warehouse folder on a 2 MiB tmpfs with 16 kB left.
    Invariant: the build fails as an infrastructure fault (DbtBuildError.data_fault False or an OSError, never
    NotRetryable), nothing is quarantined, the day's files are unchanged; with space again the retry builds
    the day with one mart row per customer."""
    from pipelines.features import steps
    from pipelines.features.dbt import DbtBuildError

    config = load_config(CONFIG_FILE)
    partition = simulator.land_day(landing_root(config), DAY1, n_customers=CUSTOMERS)
    original = digests(partition)
    warehouse = steps.FeaturePaths(config).warehouse.path
    with services.small_filesystem(warehouse.parent, size_kib=2048) as disk:
        filler = services.fill(disk, leave_bytes=16384)
        with pytest.raises((DbtBuildError, OSError)) as failure:
            steps.build_mart(config, DAY1)
        assert not isinstance(failure.value, NotRetryable)
        assert not getattr(failure.value, "data_fault", False), str(failure.value)
        assert nothing_quarantined(config) and digests(partition) == original

        filler.unlink()
        assert steps.build_mart(config, DAY1)["mart_rows"] == CUSTOMERS


# --- a network that resets or crawls ---------------------------------------------------------------------------


@pytest.fixture
def redis_through_proxy(home, monkeypatch):
    """Feast's online store on Redis database REDIS_DB, reached through a TcpProxy (flushed after)."""
    client = services.redis_client(REDIS_DB)
    client.flushdb()
    with TcpProxy(services.REDIS_HOST, services.REDIS_PORT) as proxy:
        monkeypatch.setenv("LOOPLINE_FEAST_ONLINE_STORE", "redis")
        monkeypatch.setenv("LOOPLINE_FEAST_REDIS_CONNECTION", f"127.0.0.1:{proxy.port},db={REDIS_DB}")
        get_settings.cache_clear()
        yield proxy
    client.flushdb()
    client.close()


def test_redis_connections_reset_during_materialize_then_the_retry_serves_the_day(redis_through_proxy):
    """Fault: every Redis connection is reset (RST) mid-conversation, and new ones refused, while Feast
    writes a day online.
    Where: materialize_day (Feast's Redis online store) through a TcpProxy that cuts the link after 12 bytes
    of Redis replies.
    Invariant: the error is retryable (a connection error, not NotRetryable); once the network heals the
    retried day is served online for every customer, with the day's own values."""
    from pipelines.features import steps

    proxy = redis_through_proxy
    config = load_config(CONFIG_FILE)
    truth, _ = two_days_offline_with_day1_online(config)
    day1_online = online_values(config)

    proxy.reset_after(bytes_from_server=12)
    with pytest.raises(Exception) as failure:
        steps.materialize_day(config, DAY2, CUSTOMERS)
    assert not isinstance(failure.value, NotRetryable)
    assert "connect" in f"{type(failure.value).__name__} {failure.value}".lower(), repr(failure.value)
    assert proxy.resets > 0

    proxy.heal()
    steps.materialize_day(config, DAY2, CUSTOMERS)
    online = online_values(config)
    expected = truth[DAY2].sort_values("customer_id")
    columns = [c for c in online[0] if c in expected.columns]
    assert columns, "no feature column in common with the simulator's truth"
    assert [{c: row[c] for c in columns} for row in online] == expected[columns].to_dict("records")
    assert online != day1_online


@pytest.fixture
def postgres_through_proxy(home, monkeypatch):
    """dbt's warehouse on a fresh Postgres database ``<prefix>_warehouse`` reached through a TcpProxy."""
    admin = services.postgres_admin()
    prefix = f"llnet{uuid.uuid4().hex[:8]}"
    admin.execute(f'create database "{prefix}_warehouse"')
    with TcpProxy("127.0.0.1", 5432) as proxy:
        monkeypatch.setenv("LOOPLINE_DBT_TARGET", "postgres")
        monkeypatch.setenv("LOOPLINE_DATABASE_PREFIX", prefix)
        monkeypatch.setenv("LOOPLINE_POSTGRES_URL", f"postgresql://postgres@127.0.0.1:{proxy.port}")
        get_settings.cache_clear()
        try:
            yield proxy, f"{prefix}_warehouse"
        finally:
            get_settings.cache_clear()
            admin.execute(f'drop database if exists "{prefix}_warehouse" with (force)')
            admin.close()


def test_postgres_connections_reset_during_staging_then_a_slow_network_builds_the_day(postgres_through_proxy,
                                                                                      monkeypatch):
    """Fault: the network to Postgres resets every connection (RST) after the day's rows were deleted and
    before its COPY; then the retry runs over a link that delays every packet by 20 ms.
    Where: build_mart → PostgresWarehouse.stage_landing, point "stage:before-copy", through a TcpProxy.
    Invariant: the error is retryable (psycopg.OperationalError), nothing is quarantined, the staging
    transaction is rolled back (no landing table staged); the slow retry stages rows per table and day =
    file rows and builds one mart row per customer."""
    import psycopg

    from pipelines.features import steps, warehouse

    proxy, database = postgres_through_proxy
    config = load_config(CONFIG_FILE)
    simulator.land_days(landing_root(config), DAY1, 2, n_customers=CUSTOMERS)

    def cut_the_network(name: str) -> None:
        if name == "stage:before-copy" and not proxy.refuse and proxy.resets == 0:
            proxy.reset_all()

    real_crash_point = warehouse.crash_point
    monkeypatch.setattr(warehouse, "crash_point", cut_the_network)
    with pytest.raises(psycopg.OperationalError) as failure:
        steps.build_mart(config, DAY2)
    assert not isinstance(failure.value, NotRetryable) and proxy.resets > 0
    assert nothing_quarantined(config)
    with psycopg.connect(f"{services.POSTGRES}/{database}") as connection:
        staged = connection.execute("select count(*) from information_schema.tables "
                                    "where table_schema = 'churn_landing'").fetchone()[0]
    assert staged == 0

    monkeypatch.setattr(warehouse, "crash_point", real_crash_point)
    proxy.heal()
    proxy.add_latency(0.02)
    assert steps.build_mart(config, DAY2)["mart_rows"] == CUSTOMERS
    assert landed_rows(database) == file_rows(config, [DAY1, DAY2])
