"""The churn dbt project on DuckDB: landed simulator days -> customer_daily_features.

Each test lands a few small days with pipelines.demo.simulator, runs pipelines.features.dbt.run_dbt_build
and compares the mart with the simulator's own pandas truth.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from pipelines.demo import simulator
from pipelines.features.dbt import (
    DbtBuildError,
    delete_mart_day,
    read_mart_day,
    run_dbt_build,
)

pytestmark = pytest.mark.integration

PROJECT_DIR = Path(__file__).resolve().parents[3] / "dags" / "dbt" / "churn"
START = date(2026, 11, 1)
LAST = START + timedelta(days=2)
N_CUSTOMERS = 50


def build(tmp_path: Path, ds: date, file_format: str = "parquet"):
    return run_dbt_build(
        PROJECT_DIR,
        ds=ds,
        landing_path=tmp_path / "landing",
        file_format=file_format,
        warehouse_path=tmp_path / "warehouse" / "churn.duckdb",
        work_dir=tmp_path / "dbt",
    )


def warehouse(tmp_path: Path) -> Path:
    return tmp_path / "warehouse" / "churn.duckdb"


def assert_matches_truth(tmp_path: Path, ds: date) -> None:
    actual = read_mart_day(warehouse(tmp_path), ds)
    expected = simulator.expected_customer_daily_features(tmp_path / "landing", ds)
    # Integers exactly, floats (sums of amounts) to rounding.
    pd.testing.assert_frame_equal(actual, expected, check_exact=False, rtol=1e-9)


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_mart_matches_the_simulator_truth(tmp_path: Path, file_format: str) -> None:
    simulator.land_days(tmp_path / "landing", START, 3, n_customers=N_CUSTOMERS, file_format=file_format)

    results = [build(tmp_path, START + timedelta(days=i), file_format) for i in range(3)]

    last = results[-1]
    assert last.ds == LAST
    assert last.models_built == 4
    assert last.tests_passed > 0 and last.nodes_run == last.models_built + last.tests_passed
    assert last.mart_rows == N_CUSTOMERS
    assert_matches_truth(tmp_path, LAST)
    assert_matches_truth(tmp_path, START)


def test_rebuilding_a_day_replaces_exactly_that_day(tmp_path: Path) -> None:
    simulator.land_days(tmp_path / "landing", START, 3, n_customers=N_CUSTOMERS)
    for i in range(3):
        build(tmp_path, START + timedelta(days=i))
    before = read_mart_day(warehouse(tmp_path), LAST)
    middle = read_mart_day(warehouse(tmp_path), START + timedelta(days=1))

    again = build(tmp_path, LAST)

    assert again.mart_rows == N_CUSTOMERS
    pd.testing.assert_frame_equal(read_mart_day(warehouse(tmp_path), LAST), before)
    pd.testing.assert_frame_equal(read_mart_day(warehouse(tmp_path), START + timedelta(days=1)), middle)


def test_null_charges_and_duplicate_customers_reach_the_mart(tmp_path: Path) -> None:
    # dbt lets these through on purpose: Great Expectations judges them after the build.
    landing = tmp_path / "landing"
    simulator.land_day(landing, START, n_customers=N_CUSTOMERS, faults=["null_burst", "duplicate_keys"])

    result = build(tmp_path, START)

    mart = read_mart_day(warehouse(tmp_path), START)
    assert result.mart_rows == len(mart) > N_CUSTOMERS
    assert mart["customer_id"].duplicated().any()
    assert mart["monthly_charges"].isna().any()
    assert_matches_truth(tmp_path, START)


def test_retyped_customer_id_is_cast_back_in_staging(tmp_path: Path) -> None:
    simulator.land_day(tmp_path / "landing", START, n_customers=N_CUSTOMERS, faults=["retyped_column"])

    build(tmp_path, START)

    assert read_mart_day(warehouse(tmp_path), START)["customer_id"].tolist() == list(
        range(1, N_CUSTOMERS + 1)
    )


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_corrupt_events_file_fails_with_a_readable_error(tmp_path: Path, file_format: str) -> None:
    landing = tmp_path / "landing"
    simulator.land_days(landing, START, 2, n_customers=N_CUSTOMERS, file_format=file_format)
    build(tmp_path, START, file_format)
    built = read_mart_day(warehouse(tmp_path), START)
    simulator.land_day(
        landing, LAST, n_customers=N_CUSTOMERS, file_format=file_format, faults=["corrupt_file"]
    )

    with pytest.raises(DbtBuildError) as raised:
        build(tmp_path, LAST, file_format)

    message = str(raised.value)
    assert message.startswith(f"dbt build for {LAST.isoformat()} failed: model stg_events: ")
    assert f"ds={LAST.isoformat()}/events.{file_format}" in message
    assert "downstream node(s) skipped" in message
    assert raised.value.ds == LAST and raised.value.data_fault
    assert (raised.value.log_path / "dbt.log").exists()
    # Nothing already built was lost, and the failed day wrote nothing.
    pd.testing.assert_frame_equal(read_mart_day(warehouse(tmp_path), START), built)
    assert read_mart_day(warehouse(tmp_path), LAST).empty


def test_failing_data_test_names_the_test_and_its_count(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    partition = simulator.land_day(tmp_path / "landing", START, n_customers=N_CUSTOMERS)
    events = pq.read_table(partition / "events.parquet")
    ids = events.column("customer_id").to_pylist()
    ids[:3] = [None, None, None]
    pq.write_table(
        events.set_column(1, "customer_id", pa.array(ids, pa.int64())), partition / "events.parquet"
    )

    with pytest.raises(DbtBuildError) as raised:
        build(tmp_path, START)

    assert str(raised.value).startswith(
        f"dbt build for {START.isoformat()} failed: test not_null_stg_events_customer_id: "
        "Got 3 results, configured to fail if != 0"
    )
    assert raised.value.data_fault


def test_renamed_column_names_the_missing_column(tmp_path: Path) -> None:
    simulator.land_day(tmp_path / "landing", START, n_customers=N_CUSTOMERS, faults=["renamed_column"])

    with pytest.raises(DbtBuildError, match=r"model stg_customers: .*monthly_charges") as raised:
        build(tmp_path, START)
    assert raised.value.data_fault


def test_a_bad_file_outside_the_window_does_not_break_later_days(tmp_path: Path) -> None:
    # DuckDB binds a glob's schema from its first file; the build must only open its own window.
    landing = tmp_path / "landing"
    simulator.land_day(landing, START, n_customers=N_CUSTOMERS, faults=["corrupt_file", "renamed_column"])
    later = START + timedelta(days=40)
    simulator.land_day(landing, later, n_customers=N_CUSTOMERS)

    result = build(tmp_path, later)

    assert result.mart_rows == N_CUSTOMERS
    assert_matches_truth(tmp_path, later)


def test_a_day_that_was_not_landed_names_the_missing_file(tmp_path: Path) -> None:
    simulator.land_day(tmp_path / "landing", START, n_customers=N_CUSTOMERS)
    missing = START + timedelta(days=1)

    with pytest.raises(DbtBuildError) as raised:
        build(tmp_path, missing)

    assert f"no customers.parquet landed for ds={missing.isoformat()}" in str(raised.value)
    assert raised.value.data_fault


def test_partition_layout_and_file_names_come_from_the_config(tmp_path: Path) -> None:
    """A landing folder laid out as ``day_<ds>/`` with its own file names builds the same mart."""
    landing = tmp_path / "landing"
    simulator.land_days(landing, START, 2, n_customers=N_CUSTOMERS)
    expected = simulator.expected_customer_daily_features(landing, LAST - timedelta(days=1))
    stems = {"customers": "clients", "events": "activity", "labels": "outcomes"}
    for partition in sorted(landing.glob("ds=*")):
        for table, stem in stems.items():
            (partition / f"{table}.parquet").rename(partition / f"{stem}.parquet")
        partition.rename(landing / partition.name.replace("ds=", "day_"))

    result = run_dbt_build(
        PROJECT_DIR, ds=LAST - timedelta(days=1), landing_path=landing, file_format="parquet",
        warehouse_path=warehouse(tmp_path), work_dir=tmp_path / "dbt", partition="day_{ds}", table_files=stems,
    )

    assert result.mart_rows == N_CUSTOMERS
    actual = read_mart_day(warehouse(tmp_path), LAST - timedelta(days=1))
    pd.testing.assert_frame_equal(actual, expected, check_exact=False, rtol=1e-9)


def test_delete_mart_day_removes_only_that_day(tmp_path: Path) -> None:
    assert delete_mart_day(warehouse(tmp_path), START) == 0  # no warehouse yet: a no-op
    simulator.land_days(tmp_path / "landing", START, 2, n_customers=N_CUSTOMERS)
    build(tmp_path, START)
    build(tmp_path, START + timedelta(days=1))

    assert delete_mart_day(warehouse(tmp_path), START) == N_CUSTOMERS

    assert read_mart_day(warehouse(tmp_path), START).empty
    assert len(read_mart_day(warehouse(tmp_path), START + timedelta(days=1))) == N_CUSTOMERS
    assert delete_mart_day(warehouse(tmp_path), START, mart="no_such_mart") == 0
