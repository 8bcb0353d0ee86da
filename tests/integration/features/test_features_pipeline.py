"""churn_features end to end: simulated landing → dbt → Great Expectations → Feast, through Airflow.

One module-wide data home: two days run through ``dag.test()``, then re-runs and bad days are checked
against that state. Online values are compared with the simulator's own pandas truth.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import monotonic

import pandas as pd
import pytest

from pipelines.core.home import DataHome
from pipelines.core.settings import get_settings
from pipelines.demo import simulator
from pipelines.features import steps as feature_steps
from pipelines.templates import load_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DAY1, DAY2, BAD_DAY = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)
N_CUSTOMERS = 60
ACTIVITY = ["sessions_7d", "sessions_30d", "purchases_30d", "spend_30d", "support_tickets_30d",
            "days_since_last_session"]
PROFILE = ["tenure_days", "plan", "region", "monthly_charges"]


def load_dags(folder: Path = REPO / "dags"):
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=str(folder), bundle_path=folder)
    assert bag.import_errors == {}
    return bag.dags


def run_day(dag, ds: date):
    """Run the DAG for the data interval [ds, ds+1): a manual run at ds+1 covers the day before."""
    run = dag.test(logical_date=datetime.combine(ds + timedelta(days=1), time(), tzinfo=UTC))
    # A run before the DAG's start_date "succeeds" with no task at all: make sure the tasks really ran.
    assert run.get_task_instances(), f"no task ran for {ds}"
    return run


def online_snapshot(project: str) -> list[tuple]:
    """Every value in the SQLite online store with its event time (not the write time)."""
    path = DataHome().feast(project) / "online_store.db"
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table' order by name")]
        return [(t, *row) for t in tables
                for row in db.execute(f'select entity_key, feature_name, value, event_ts from "{t}" order by 1, 2')]


def online_frame(config, keys) -> pd.DataFrame:
    from pipelines.features.feast_store import read_online

    frame = read_online(config.feast.project, config.feast.feature_service, config.feast.entity_key, keys)
    return frame.sort_values("customer_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def churn(airflow_db):
    """churn_features run through Airflow for two consecutive days."""
    config = load_config(REPO / "dags" / "configs" / "churn_features.yaml")
    landing = get_settings().resolve(config.landing.path)
    simulator.land_days(landing, DAY1, 2, n_customers=N_CUSTOMERS)
    dag = load_dags()["churn_features"]
    runs = [run_day(dag, DAY1), run_day(dag, DAY2)]
    return config, landing, dag, runs


def test_two_days_run_through_airflow_and_serve_the_simulators_truth(churn):
    config, landing, _, runs = churn
    assert [r.state for r in runs] == ["success", "success"]
    assert [r.data_interval_start.date() for r in runs] == [DAY1, DAY2]

    expected = simulator.expected_customer_daily_features(landing, DAY2)
    online = online_frame(config, expected["customer_id"].tolist())

    assert len(online) == N_CUSTOMERS
    for column in ACTIVITY + PROFILE:
        got, want = online[column].tolist(), expected[column].tolist()
        if column in ("spend_30d", "monthly_charges"):
            assert got == pytest.approx(want, abs=1e-6), column
        else:
            assert got == want, column
    # Day 2's aggregates include day 1's events: the rolling window spans partitions.
    day1_only = simulator.expected_customer_daily_features(landing, DAY1)
    assert (expected["sessions_30d"].to_numpy() >= day1_only["sessions_30d"].to_numpy()).all()
    assert expected["sessions_30d"].sum() > day1_only["sessions_30d"].sum()


def test_the_features_asset_is_emitted_once_per_day(churn):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "churn_features")
        ).all()
        assert len(events) == 2
        assert {e.source_task_id for e in events} == {"materialize_interval"}


def test_rerunning_a_day_changes_nothing(churn):
    config, _, dag, _ = churn
    before_online = online_snapshot(config.feast.project)
    before_mart = feature_steps.FeaturePaths(config).warehouse.path.stat().st_size and _mart_rows(config)
    applied_marker = DataHome().feast(config.feast.project) / "applied_definitions.sha256"
    applied_at = applied_marker.stat().st_mtime_ns

    # An older day re-run after a newer one: Feast alone would put day 1's values back online.
    assert run_day(dag, DAY1).state == "success"
    assert run_day(dag, DAY2).state == "success"

    assert online_snapshot(config.feast.project) == before_online
    assert _mart_rows(config) == before_mart
    assert applied_marker.stat().st_mtime_ns == applied_at, "unchanged definitions were re-applied"
    assert feature_steps.apply_definitions(config)["applied"] is False


WRITER = """
import sys, time
import duckdb
from pipelines.core.locks import instance_lock
with instance_lock("features:churn"):
    with duckdb.connect(sys.argv[1]) as db:  # what another run's dbt build holds while it writes
        print("writing", flush=True)
        time.sleep(2)
"""


def test_a_read_of_the_mart_waits_for_another_runs_build(churn):
    """Two runs at once (a backfill beside the daily run): DuckDB refuses a reader while a build writes the file;
    the reading steps wait for the instance's lock instead of failing into a retry minutes later."""
    config, _, _, _ = churn
    warehouse = feature_steps.FeaturePaths(config).warehouse.path
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(warehouse)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        started = monotonic()
        published = feature_steps.publish_features(config, DAY2)
        assert monotonic() - started > 0.5  # it waited for the writer
        assert published["rows"] == N_CUSTOMERS
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == 0


def _mart_rows(config) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(feature_steps.FeaturePaths(config).warehouse.path), read_only=True) as db:
        return db.execute(f"select * from {config.dbt.mart} order by ds, customer_id").fetchall()


FAULT_ERRORS = {
    "null_burst": (feature_steps.validate_mart, r"monthly_charges has \d+ nulls out of 60 rows \(allowed 0\)"),
    "duplicate_keys": (feature_steps.validate_mart, r"\(customer_id, ds\) has \d+ duplicate rows"),
    "renamed_column": (feature_steps.check_landing,
                       r"customers.parquet has no column 'monthly_charges' \(unexpected columns: monthly_charge\)"),
    "retyped_column": (feature_steps.check_landing,
                       r"customers.parquet column 'customer_id' is string, expected int64"),
    "empty_file": (feature_steps.check_landing, r"events.parquet is an empty file \(0 bytes\)"),
    "corrupt_file": (feature_steps.check_landing, r"events.parquet cannot be read as parquet"),
}


def _run_steps_until(config, ds: date, failing_step) -> None:
    steps = [feature_steps.check_landing, feature_steps.build_mart, feature_steps.validate_mart]
    for step in steps:
        step(config, ds)
        assert step is not failing_step, f"{step.__name__} should have failed"


@pytest.mark.parametrize("fault", sorted(FAULT_ERRORS))
def test_a_bad_day_fails_clearly_is_quarantined_and_loses_nothing(churn, fault):
    config, landing, _, _ = churn
    failing_step, message = FAULT_ERRORS[fault]
    online_before = online_snapshot(config.feast.project)
    mart_before = _mart_rows(config)
    offline = feature_steps.FeaturePaths(config).offline
    simulator.land_day(landing, BAD_DAY, n_customers=N_CUSTOMERS, faults=[fault])

    with pytest.raises(Exception, match=message) as failure:
        _run_steps_until(config, BAD_DAY, failing_step)

    quarantined = DataHome().quarantine(config.instance) / f"ds={BAD_DAY}"
    assert f"quarantined to {quarantined}" in str(failure.value)
    assert (quarantined / "reason.json").exists() and (quarantined / "_SUCCESS").exists()
    assert not (landing / f"ds={BAD_DAY}").exists()
    assert online_snapshot(config.feast.project) == online_before
    assert _mart_rows(config) == mart_before
    assert not (offline / f"{BAD_DAY}.parquet").exists()
    shutil.rmtree(quarantined)


def test_a_missing_file_is_named(churn):
    config, landing, _, _ = churn
    partition = simulator.land_day(landing, BAD_DAY, n_customers=N_CUSTOMERS)
    (partition / "labels.parquet").unlink()
    with pytest.raises(Exception, match=r"landing partition 2026-11-03 breaks its contract: labels.parquet is missing"):
        feature_steps.check_landing(config, BAD_DAY)
    shutil.rmtree(DataHome().quarantine(config.instance) / f"ds={BAD_DAY}")


def test_users_own_csv_landing_folder_works_unchanged(churn, tmp_path):
    """The same steps on a YAML pointed at a CSV folder outside the data home, with its own Feast project."""
    own_landing = tmp_path / "my_landing"
    text = (REPO / "dags" / "configs" / "churn_features.yaml").read_text()
    text = (text.replace("instance: churn", "instance: mycsv")
            .replace("path: home:landing/churn", f"path: {own_landing}")
            .replace("format: parquet", "format: csv")
            .replace("project: churn", "project: mycsv"))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mycsv_features.yaml").write_text(text)
    config = load_config(tmp_path / "configs" / "mycsv_features.yaml")
    simulator.land_days(own_landing, DAY1, 2, n_customers=N_CUSTOMERS, file_format="csv")

    for ds in (DAY1, DAY2):
        assert feature_steps.partition_ready(config, ds)
        feature_steps.check_landing(config, ds)
        feature_steps.build_mart(config, ds)
        feature_steps.validate_mart(config, ds)
        published = feature_steps.publish_features(config, ds)
        feature_steps.apply_definitions(config)
        feature_steps.materialize_day(config, ds, published["rows"])

    expected = simulator.expected_customer_daily_features(own_landing, DAY2)
    online = online_frame(config, expected["customer_id"].tolist())
    assert online["sessions_30d"].tolist() == expected["sessions_30d"].tolist()
    assert online["spend_30d"].tolist() == pytest.approx(expected["spend_30d"].tolist())
    # Its own project: the churn instance's online values are not what it serves.
    churn_config = churn[0]
    assert online_snapshot(config.feast.project) != online_snapshot(churn_config.feast.project)
