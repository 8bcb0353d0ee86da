"""Faults injected into the churn features steps, and the invariants that hold after them.

Each test names the fault, where it is injected and the invariant it proves:

- a worker killed (``os._exit`` at a named point, or SIGKILL at a random moment) while a bad partition moves
  from landing to quarantine: every original file stays whole in landing or in quarantine, and a retry leaves
  the partition in exactly one place with the quarantined bytes unchanged;
- a DuckDB write lock held by another process, a Postgres backend terminated during staging: the build fails
  with a retryable error and nothing is quarantined; the retry builds the day;
- two overlapping ``build_mart`` windows at once: rows per landing table and day equal the file's rows;
- a worker killed between Feast's write and the ledger, then an older day re-run: the online store (SQLite
  and Redis) holds the newest day; a corrected, re-landed day reaches both stores;
- labels read outside the DAG respect the ready marker and the contract;
- a bad day run through ``dag.test()``: no Asset event, and the online store, offline files and mart unchanged.

Faults run in child processes (``python -c``) against a data home under ``tmp_path``; the steps in this
process read the same home through ``LOOPLINE_HOME``.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.core.errors import NotRetryable
from pipelines.core.faults import CRASH_AT_ENV, CRASH_EXIT_CODE
from pipelines.core.settings import get_settings
from pipelines.demo import simulator
from pipelines.templates import load_config
from support import services

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]
CONFIG_FILE = REPO / "dags" / "configs" / "churn_features.yaml"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
REDIS_DB = 11  # ≥ 8: never the broker's or the production test's databases; flushed after use
DAY1, DAY2, DAY3 = date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)
CUSTOMERS = 30


def churn_config(**landing_update):
    config = load_config(CONFIG_FILE)
    if landing_update:
        config = config.model_copy(update={"landing": config.landing.model_copy(update=landing_update)})
    return config


def landing_root(config) -> Path:
    return get_settings().resolve(config.landing.path)


def quarantine_root(config) -> Path:
    from pipelines.core.home import DataHome

    return DataHome().quarantine(config.instance)


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (hidden temporary copies left out), by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def start_step(step: str, ds: date, *, crash_at: str | None = None, landing_path: str | None = None,
               extra_env: dict | None = None) -> subprocess.Popen:
    """A child process that prints "go", then runs ``steps.<step>(config, ds)`` on this test's data home."""
    code = textwrap.dedent(f"""
        import sys
        from datetime import date
        from pipelines.features import steps
        from pipelines.templates import load_config
        config = load_config({str(CONFIG_FILE)!r})
        if {landing_path!r}:
            landing = config.landing.model_copy(update={{"path": {landing_path!r}}})
            config = config.model_copy(update={{"landing": landing}})
        print("go", flush=True)
        try:
            steps.{step}(config, date.fromisoformat({ds.isoformat()!r}))
        except Exception as exc:
            print(type(exc).__name__, exc, flush=True)
            sys.exit(1)
        print("done", flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), **(extra_env or {})}
    if crash_at:
        env[CRASH_AT_ENV] = crash_at
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "go"
    return process


# --- 1. quarantine never loses or deletes a partition --------------------------------------------------------


def test_kill_after_the_quarantine_move_then_retry_keeps_the_quarantined_bytes(home):
    """Fault: the worker dies (os._exit) right after the bad partition's move, before reason.json.
    Where: quarantine_partition, point "quarantine:after-move", in check_landing.
    Invariant: the retried check_landing and a cleared validate_mart change no quarantined byte and leave the
    partition in exactly one place (not in landing, one copy in quarantine); the retry is a readable failure."""
    from pipelines.features import steps

    config = churn_config()
    partition = simulator.land_day(landing_root(config), DAY1, n_customers=CUSTOMERS, faults=["renamed_column"])
    original = digests(partition)

    child = start_step("check_landing", DAY1, crash_at="quarantine:after-move")
    assert child.wait(timeout=60) == CRASH_EXIT_CODE

    copies = sorted(quarantine_root(config).iterdir())
    assert [c.name for c in copies] == [partition.name] and not partition.exists()
    assert digests(copies[0]) == original  # killed before reason.json: exactly the landed files

    for retried in (steps.check_landing, steps.validate_mart, steps.check_landing):
        with pytest.raises(steps.BatchQuarantined, match=f"was already quarantined to {copies[0]}"):
            retried(config, DAY1)
    assert sorted(quarantine_root(config).iterdir()) == copies and not partition.exists()
    kept = digests(copies[0])
    assert kept.pop("reason.json") and kept == original


def test_kill_at_random_points_of_landing_to_quarantine_loses_no_file(home, tmp_path):
    """Fault: SIGKILL at random moments, and os._exit between copy and delete, while a bad partition moves from
    a landing folder on another filesystem (/dev/shm, so the move is copy → rename → delete) to quarantine.
    Where: check_landing → quarantine_partition, in a child process.
    Invariant: after every kill, landing ∪ quarantine holds every original file with its original bytes; a
    retry to the end leaves nothing in landing and every byte in quarantine."""
    from pipelines.features import steps

    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    landing = shm / f"loopline-faults-{uuid.uuid4().hex}"
    config = churn_config(path=str(landing))
    rng = random.Random(16)
    # How long the step runs from "go" to its end: random kills fall inside that span.
    simulator.land_day(landing, DAY1, n_customers=400, faults=["renamed_column"])
    started = time.monotonic()
    start_step("check_landing", DAY1, landing_path=str(landing)).wait(timeout=60)
    span = time.monotonic() - started
    shutil.rmtree(quarantine_root(config))
    try:
        for trial in range(6):
            partition = simulator.land_day(landing, DAY1, n_customers=400, faults=["renamed_column"])
            original = digests(partition)
            if trial == 0:
                child = start_step("check_landing", DAY1, crash_at="quarantine:after-copy", landing_path=str(landing))
                assert child.wait(timeout=60) == CRASH_EXIT_CODE
            else:
                child = start_step("check_landing", DAY1, landing_path=str(landing))
                time.sleep(rng.uniform(0.0, span))
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=60)
            places = [partition] + [c for c in sorted(quarantine_root(config).glob(f"{partition.name}*"))]
            union: dict[str, str] = {}
            for place in places:
                if place.exists():
                    union.update({k: v for k, v in digests(place).items() if k != "reason.json"})
            assert {k: union.get(k) for k in original} == original, f"trial {trial}: a file was lost or torn"

            with pytest.raises(steps.BatchQuarantined):
                steps.check_landing(config, DAY1)
            assert not partition.exists()
            shutil.rmtree(quarantine_root(config))  # the next trial starts from a clean quarantine
    finally:
        shutil.rmtree(landing, ignore_errors=True)


# --- 2. infrastructure faults retry and quarantine nothing ---------------------------------------------------


def test_a_held_duckdb_lock_during_build_mart_is_retryable_and_quarantines_nothing(home):
    """Fault: another process holds the DuckDB warehouse file's write lock.
    Where: build_mart (dbt-duckdb opening the warehouse).
    Invariant: the error is retryable (not NotRetryable, DbtBuildError.data_fault False), nothing is
    quarantined, the partition stays in landing; once the lock is gone the retry builds the day."""
    from pipelines.features import steps
    from pipelines.features.dbt import DbtBuildError

    config = churn_config()
    partition = simulator.land_day(landing_root(config), DAY1, n_customers=CUSTOMERS)
    original = digests(partition)
    warehouse = steps.FeaturePaths(config).warehouse.path
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\n"
         f"c = duckdb.connect({str(warehouse)!r}); c.execute('create table held (x int)')\n"
         "print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DbtBuildError) as failure:
            steps.build_mart(config, DAY1)
        assert not failure.value.data_fault and not isinstance(failure.value, NotRetryable)
        assert "infrastructure fault" in str(failure.value) and "lock" in str(failure.value).lower()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not quarantine_root(config).exists() or not any(quarantine_root(config).iterdir())
    assert digests(partition) == original

    assert steps.build_mart(config, DAY1)["mart_rows"] == CUSTOMERS


@pytest.fixture
def postgres_home(home, monkeypatch):
    """The data home with dbt on a fresh Postgres database ``<prefix>_warehouse`` (dropped afterwards)."""
    prefix = f"llfault{uuid.uuid4().hex[:8]}"
    admin = services.postgres_admin()
    admin.execute(f'create database "{prefix}_warehouse"')
    monkeypatch.setenv("LOOPLINE_DBT_TARGET", "postgres")
    monkeypatch.setenv("LOOPLINE_DATABASE_PREFIX", prefix)
    monkeypatch.setenv("LOOPLINE_POSTGRES_URL", POSTGRES)
    get_settings.cache_clear()
    try:
        yield f"{prefix}_warehouse"
    finally:
        get_settings.cache_clear()
        admin.execute(f'drop database if exists "{prefix}_warehouse" with (force)')
        admin.close()


def landed_rows(database: str, schema: str = "churn_landing") -> dict[tuple[str, date], int]:
    import psycopg

    with psycopg.connect(f"{POSTGRES}/{database}") as connection:
        return {(table, day): count
                for table in ("customers", "events", "labels")
                for day, count in connection.execute(
                    f'select ds, count(*) from "{schema}"."{table}" group by ds').fetchall()}


def file_rows(config, days: list[date]) -> dict[tuple[str, date], int]:
    import pyarrow.parquet as pq

    from pipelines.features.landing import partition_dir, table_file

    root = landing_root(config)
    return {(table, day): pq.ParquetFile(table_file(config.landing, partition_dir(config.landing, root, day),
                                                    table)).metadata.num_rows
            for table in config.landing.tables for day in days}


def test_a_terminated_postgres_backend_during_staging_is_retryable_and_quarantines_nothing(postgres_home,
                                                                                             monkeypatch):
    """Fault: the staging connection's backend is killed with pg_terminate_backend.
    Where: build_mart → PostgresWarehouse.stage_landing, point "stage:before-copy" (after the day's delete,
    before its COPY), from a second connection.
    Invariant: the error is retryable (psycopg.OperationalError, not NotRetryable), nothing is quarantined,
    no half-loaded day stays staged; the retry stages rows per table and day = file rows and builds the day."""
    import psycopg

    from pipelines.features import steps, warehouse

    config = churn_config()
    simulator.land_days(landing_root(config), DAY1, 2, n_customers=CUSTOMERS)
    terminated: list[int] = []

    def terminate_staging_backend(name: str) -> None:
        if name == "stage:before-copy" and not terminated:
            with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
                rows = admin.execute(
                    "select pid, pg_terminate_backend(pid) from pg_stat_activity "
                    "where datname = %s and pid <> pg_backend_pid() and state = 'idle in transaction'",
                    (postgres_home,)).fetchall()
            terminated.extend(pid for pid, done in rows if done)

    monkeypatch.setattr(warehouse, "crash_point", terminate_staging_backend)
    with pytest.raises(psycopg.OperationalError) as failure:
        steps.build_mart(config, DAY2)
    assert not isinstance(failure.value, NotRetryable) and terminated
    assert not quarantine_root(config).exists() or not any(quarantine_root(config).iterdir())
    with psycopg.connect(f"{POSTGRES}/{postgres_home}") as connection:
        staged = connection.execute("select count(*) from information_schema.tables "
                                    "where table_schema = 'churn_landing'").fetchone()[0]
    assert staged == 0  # the whole staging transaction was rolled back

    monkeypatch.undo()
    assert steps.build_mart(config, DAY2)["mart_rows"] == CUSTOMERS
    assert landed_rows(postgres_home) == file_rows(config, [DAY1, DAY2])


def test_two_overlapping_build_mart_windows_stage_each_file_once(postgres_home):
    """Fault: two build_mart runs of overlapping windows (DAY2 and DAY3 both read DAY1…DAY3) at the same time,
    as a backfill beside a scheduled run does.
    Where: two child processes started together.
    Invariant: both succeed; rows per landing table and day = the file's rows; each day's mart rows = customers."""
    import psycopg

    config = churn_config()
    simulator.land_days(landing_root(config), DAY1, 3, n_customers=CUSTOMERS)
    children = [start_step("build_mart", day) for day in (DAY2, DAY3)]
    outputs = [child.communicate(timeout=300)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    assert landed_rows(postgres_home) == file_rows(config, [DAY1, DAY2, DAY3])
    with psycopg.connect(f"{POSTGRES}/{postgres_home}") as connection:
        mart = dict(connection.execute(
            f"select ds, count(*) from churn.{config.dbt.mart} group by ds").fetchall())
    assert mart == {DAY2: CUSTOMERS, DAY3: CUSTOMERS}


# --- 4. Feast: the ledger and both online stores -------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def online_store(request, home, monkeypatch):
    """The data home with Feast's online store on SQLite, or on Redis database REDIS_DB (flushed after)."""
    if request.param == "redis":
        client = services.redis_client(REDIS_DB)
        client.flushdb()
        monkeypatch.setenv("LOOPLINE_FEAST_ONLINE_STORE", "redis")
        monkeypatch.setenv("LOOPLINE_FEAST_REDIS_CONNECTION", f"127.0.0.1:6379,db={REDIS_DB}")
        get_settings.cache_clear()
        yield "redis"
        client.flushdb()
        client.close()
    else:
        yield "sqlite"


def online_values(config) -> list[dict]:
    from pipelines.features.feast_store import read_online

    frame = read_online(config.feast.project, config.feast.feature_service, config.feast.entity_key,
                        list(range(1, CUSTOMERS + 1)))
    return frame.sort_values("customer_id").drop(columns=["customer_id"]).to_dict("records")


def two_days_offline_with_day1_online(config):
    """DAY1 and DAY2 landed, their true features written as Feast's offline files, DAY1 materialized online.

    Returns:
        The true features by day, and the offline folder.
    """
    from pipelines.features import steps
    from pipelines.features.feast_store import offline_day_path

    simulator.land_days(landing_root(config), DAY1, 2, n_customers=CUSTOMERS)
    offline = steps.FeaturePaths(config).offline
    offline.mkdir(parents=True, exist_ok=True)
    truth = {day: simulator.expected_customer_daily_features(landing_root(config), day) for day in (DAY1, DAY2)}
    for day, frame in truth.items():
        frame.to_parquet(offline_day_path(offline, day), index=False)
    steps.apply_definitions(config)
    steps.materialize_day(config, DAY1, CUSTOMERS)
    return truth, offline


def test_kill_between_materialize_and_ledger_then_rerun_an_older_day(online_store, home):
    """Fault: the worker dies (os._exit) after Feast wrote DAY2 online, before the ledger records it.
    Where: materialize_interval, point "materialize:before-ledger", in a child process.
    Invariant: re-running the older DAY1 afterwards leaves DAY2's values online, on SQLite and on Redis;
    a corrected, re-landed DAY2 re-run reaches the online store on both."""
    import pandas as pd

    from pipelines.features import steps
    from pipelines.features.feast_store import offline_day_path

    config = churn_config()
    truth, offline = two_days_offline_with_day1_online(config)
    day1_online = online_values(config)

    code = textwrap.dedent(f"""
        from datetime import date
        from pipelines.features import steps
        from pipelines.templates import load_config
        steps.materialize_day(load_config({str(CONFIG_FILE)!r}), date.fromisoformat({DAY2.isoformat()!r}), {CUSTOMERS})
    """)
    child = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=180,
                           env={**os.environ, "PYTHONPATH": str(REPO), CRASH_AT_ENV: "materialize:before-ledger"})
    assert child.returncode == CRASH_EXIT_CODE
    day2_online = online_values(config)
    assert day2_online != day1_online  # DAY2 went online before the kill

    result = steps.materialize_day(config, DAY1, CUSTOMERS)
    assert online_values(config) == day2_online, f"{online_store}: an older re-run put stale values online"
    assert result["replayed_to"] == datetime.combine(DAY3, datetime.min.time(), tzinfo=UTC).isoformat()

    corrected = truth[DAY2].copy()
    corrected["sessions_7d"] = corrected["sessions_7d"] + 1000
    corrected.to_parquet(offline_day_path(offline, DAY2), index=False)
    steps.materialize_day(config, DAY2, CUSTOMERS)
    online = pd.DataFrame(online_values(config))
    assert (online["sessions_7d"] >= 1000).all(), f"{online_store}: the corrected day did not reach the store"


# --- 9. labels respect the ready marker and the contract -----------------------------------------------------


def test_labels_are_read_only_from_ready_partitions_that_keep_their_contract(home):
    """Fault: labels read while the day is still landing (no ready marker), after it was quarantined, and from
    a labels file that breaks its contract.
    Where: pipelines.features.landing.read_landed_table, the reader for labels outside the DAG.
    Invariant: an incomplete or quarantined day gives no labels; a broken labels file raises the contract error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.features.landing import LandingContractError, read_landed_table

    config = churn_config()
    root = landing_root(config)
    partition = simulator.land_day(root, DAY1, n_customers=CUSTOMERS)
    assert read_landed_table(config.landing, root, DAY1, "labels").num_rows > 0

    (partition / config.landing.ready_marker).unlink()
    assert read_landed_table(config.landing, root, DAY1, "labels") is None

    (partition / config.landing.ready_marker).touch()
    labels = pq.read_table(partition / "labels.parquet")
    pq.write_table(labels.set_column(labels.schema.get_field_index("churned"), "churned",
                                     pa.array([str(v) for v in labels["churned"].to_pylist()])),
                   partition / "labels.parquet")
    with pytest.raises(LandingContractError, match=r"labels.parquet column 'churned' is string, expected int64"):
        read_landed_table(config.landing, root, DAY1, "labels")

    shutil.move(partition, home / "elsewhere")  # quarantined: the partition left landing
    assert read_landed_table(config.landing, root, DAY1, "labels") is None


# --- the suite proves what it claims: a bad day through Airflow -----------------------------------------------


def test_a_bad_day_through_dag_test_emits_no_asset_and_changes_nothing_downstream(home, airflow_db):
    """Fault: a landed day with a burst of null monthly_charges (passes the landing contract and dbt).
    Where: the whole churn_features DAG, run by dag.test() after a good day went all the way online.
    Invariant: the run fails at validate_mart; publish_features and materialize_interval never run; no Asset
    event; the online store, the offline files and the mart are unchanged; the partition is quarantined."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from pipelines.features import steps
    from support.airflow_helpers import load_dags

    config = churn_config()
    simulator.land_day(landing_root(config), DAY1, n_customers=CUSTOMERS)
    simulator.land_day(landing_root(config), DAY2, n_customers=CUSTOMERS, faults=["null_burst"])
    steps.check_landing(config, DAY1)
    steps.build_mart(config, DAY1)
    steps.validate_mart(config, DAY1)
    published = steps.publish_features(config, DAY1)
    steps.apply_definitions(config)
    steps.materialize_day(config, DAY1, published["rows"])
    paths = steps.FeaturePaths(config)
    before = (online_values(config), digests(paths.offline), paths.warehouse.read_day(DAY1, config.dbt.mart))

    run = load_dags()["churn_features"].test(
        logical_date=datetime.combine(DAY2 + timedelta(days=1), datetime.min.time(), tzinfo=UTC))

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed" and states["validate_mart"] == "failed", states
    assert states["publish_features"] != "success" and states["materialize_interval"] != "success", states
    with create_session() as session:
        events = session.scalars(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == config.features_asset.name, AssetEvent.source_run_id == run.run_id)).all()
    assert events == []
    after = (online_values(config), digests(paths.offline), paths.warehouse.read_day(DAY1, config.dbt.mart))
    assert after[0] == before[0] and after[1] == before[1] and after[2].equals(before[2])
    assert paths.warehouse.count_day(DAY2, config.dbt.mart) == 0
    assert (quarantine_root(config) / f"ds={DAY2}" / "reason.json").exists()
