"""Unit tests for pipelines.demo.simulator: determinism, the data contract, faults, drift, labels."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.demo import simulator
from pipelines.demo.simulator import FAULTS, CovariateDrift, land_day, land_days

pytestmark = pytest.mark.unit

DS = date(2026, 11, 3)

CONTRACT_SCHEMAS = {
    "customers": pa.schema(
        [
            ("customer_id", pa.int64()),
            ("signup_date", pa.date32()),
            ("plan", pa.string()),
            ("region", pa.string()),
            ("monthly_charges", pa.float64()),
        ]
    ),
    "events": pa.schema(
        [
            ("event_id", pa.string()),
            ("customer_id", pa.int64()),
            ("event_ts", pa.timestamp("us", tz="UTC")),
            ("event_type", pa.string()),
            ("amount", pa.float64()),
        ]
    ),
    "labels": pa.schema(
        [
            ("customer_id", pa.int64()),
            ("label_ts", pa.timestamp("us", tz="UTC")),
            ("churned", pa.int64()),
        ]
    ),
}


def read(partition: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(partition / f"{table}.parquet")


def day_bounds(ds: date) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(datetime(ds.year, ds.month, ds.day, tzinfo=UTC))
    return start, start + pd.Timedelta(days=1)


def test_same_seed_and_day_give_identical_values(tmp_path: Path) -> None:
    first = land_day(tmp_path / "a", DS, n_customers=40)
    second = land_day(tmp_path / "b", DS, n_customers=40)
    for table in simulator.TABLES:
        pd.testing.assert_frame_equal(read(first, table), read(second, table))


def test_relanding_a_day_replaces_it_with_the_same_values(tmp_path: Path) -> None:
    partition = land_day(tmp_path, DS, n_customers=40, faults=["null_burst"])
    land_day(tmp_path, DS, n_customers=40)
    clean = land_day(tmp_path / "clean", DS, n_customers=40)

    for table in simulator.TABLES:
        pd.testing.assert_frame_equal(read(partition, table), read(clean, table))
    # No half-written or retired partitions are left beside the real one.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", f"ds={DS.isoformat()}"]


def test_different_seeds_or_days_differ(tmp_path: Path) -> None:
    base = read(land_day(tmp_path / "a", DS, n_customers=40), "events")
    other_seed = read(land_day(tmp_path / "b", DS, n_customers=40, seed=8), "events")
    other_day = read(land_day(tmp_path / "c", DS + timedelta(days=1), n_customers=40), "events")
    assert not base.equals(other_seed)
    assert not base[["customer_id", "event_type"]].equals(other_day[["customer_id", "event_type"]])


def test_parquet_files_follow_the_contract(tmp_path: Path) -> None:
    partition = land_day(tmp_path, DS, n_customers=60)

    assert partition == tmp_path / "ds=2026-11-03"
    for table, schema in CONTRACT_SCHEMAS.items():
        assert pq.read_schema(partition / f"{table}.parquet").remove_metadata() == schema
    success = (partition / "_SUCCESS").stat().st_mtime_ns
    assert all(success >= (partition / f"{t}.parquet").stat().st_mtime_ns for t in simulator.TABLES)

    customers = read(partition, "customers")
    assert customers["customer_id"].tolist() == list(range(1, 61))
    assert set(customers["plan"]) <= {"monthly", "annual"}
    assert set(customers["region"]) <= {"north", "south", "east", "west"}
    assert (customers["signup_date"] < DS).all()
    assert customers["monthly_charges"].notna().all()

    start, end = day_bounds(DS)
    events = read(partition, "events")
    assert events["event_id"].is_unique
    assert events["event_id"].str.startswith("20261103-").all()
    assert set(events["event_type"]) == {"session", "purchase", "support_ticket"}
    assert events["event_ts"].between(start, end, inclusive="left").all()
    is_purchase = events["event_type"] == "purchase"
    assert (events.loc[is_purchase, "amount"] > 0).all()
    assert (events.loc[~is_purchase, "amount"] == 0).all()

    labels = read(partition, "labels")
    assert (labels["customer_id"] % 30 == DS.toordinal() % 30).all()
    assert len(labels) == sum(1 for c in range(1, 61) if c % 30 == DS.toordinal() % 30)
    assert set(labels["churned"]) <= {0, 1}
    assert labels["label_ts"].between(start, end, inclusive="left").all()
    # Before 23:59:59, when the day's features are stamped: churn's training refuses labels that leak.
    assert (labels["label_ts"] < end - pd.Timedelta(seconds=1)).all()


def test_csv_files_have_a_header_and_iso_dates(tmp_path: Path) -> None:
    partition = land_day(tmp_path, DS, n_customers=20, file_format="csv")

    assert sorted(p.name for p in partition.iterdir()) == [
        "_SUCCESS",
        "customers.csv",
        "events.csv",
        "labels.csv",
    ]
    for table, schema in CONTRACT_SCHEMAS.items():
        header = (partition / f"{table}.csv").read_text().splitlines()[0]
        assert header.split(",") == schema.names
    first_event = (partition / "events.csv").read_text().splitlines()[1]
    assert "2026-11-03T" in first_event and first_event.split(",")[2].endswith("+00:00")
    assert pd.read_csv(partition / "customers.csv")["signup_date"].str.match(
        r"^\d{4}-\d{2}-\d{2}$"
    ).all()


def test_customer_attributes_are_stable_across_days(tmp_path: Path) -> None:
    days = land_days(tmp_path, DS, 3, n_customers=50)
    profiles = [read(p, "customers") for p in days]
    for later in profiles[1:]:
        pd.testing.assert_frame_equal(profiles[0], later)
    # The behaviour does change from day to day.
    assert not read(days[0], "events")["customer_id"].equals(read(days[1], "events")["customer_id"])


def test_customers_not_yet_signed_up_are_absent(tmp_path: Path) -> None:
    early = date(2022, 6, 1)
    partition = land_day(tmp_path, early, n_customers=200)
    customers = read(partition, "customers")

    assert 0 < len(customers) < 200
    assert (customers["signup_date"] <= early).all()
    assert set(read(partition, "events")["customer_id"]) <= set(customers["customer_id"])
    assert set(read(partition, "labels")["customer_id"]) <= set(customers["customer_id"])


def test_null_burst_nulls_about_a_third_of_monthly_charges(tmp_path: Path) -> None:
    customers = read(land_day(tmp_path, DS, n_customers=400, faults=["null_burst"]), "customers")
    assert 0.2 < customers["monthly_charges"].isna().mean() < 0.4
    assert customers["customer_id"].notna().all()


def test_renamed_column_renames_monthly_charges(tmp_path: Path) -> None:
    partition = land_day(tmp_path, DS, n_customers=20, faults=["renamed_column"])
    names = pq.read_schema(partition / "customers.parquet").names
    assert "monthly_charge" in names and "monthly_charges" not in names


def test_retyped_column_writes_customer_id_as_string(tmp_path: Path) -> None:
    partition = land_day(tmp_path, DS, n_customers=20, faults=["retyped_column"])
    schema = pq.read_schema(partition / "customers.parquet")
    assert schema.field("customer_id").type == pa.string()
    assert read(partition, "customers")["customer_id"].tolist() == [str(i) for i in range(1, 21)]


def test_duplicate_keys_repeats_some_customers(tmp_path: Path) -> None:
    clean = read(land_day(tmp_path / "clean", DS, n_customers=100), "customers")
    customers = read(land_day(tmp_path / "f", DS, n_customers=100, faults=["duplicate_keys"]), "customers")

    assert len(customers) == 105
    assert customers["customer_id"].duplicated().sum() == 5
    pd.testing.assert_frame_equal(customers.drop_duplicates().reset_index(drop=True), clean)


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_empty_file_writes_a_zero_byte_events_file(tmp_path: Path, file_format: str) -> None:
    partition = land_day(tmp_path, DS, n_customers=20, file_format=file_format, faults=["empty_file"])
    assert (partition / f"events.{file_format}").stat().st_size == 0
    assert (partition / "_SUCCESS").exists()


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_corrupt_file_writes_unreadable_events(tmp_path: Path, file_format: str) -> None:
    partition = land_day(tmp_path, DS, n_customers=20, file_format=file_format, faults=["corrupt_file"])
    path = partition / f"events.{file_format}"
    assert path.stat().st_size > 0
    with pytest.raises(Exception):  # noqa: B017 (pyarrow and pandas raise different types)
        if file_format == "parquet":
            pq.read_table(path)
        else:
            path.read_bytes().decode("utf-8")


def test_faults_leave_the_other_tables_untouched(tmp_path: Path) -> None:
    clean = land_day(tmp_path / "clean", DS, n_customers=50)
    faulty = land_day(tmp_path / "f", DS, n_customers=50, faults=["null_burst", "corrupt_file"])
    pd.testing.assert_frame_equal(read(clean, "labels"), read(faulty, "labels"))
    pd.testing.assert_frame_equal(
        read(clean, "customers").drop(columns="monthly_charges"),
        read(faulty, "customers").drop(columns="monthly_charges"),
    )


def test_unknown_fault_is_named_with_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as raised:
        land_day(tmp_path, DS, n_customers=5, faults=["null_burst", "flood"])
    message = str(raised.value)
    assert "'flood'" in message
    assert all(fault in message for fault in FAULTS)
    assert not any(tmp_path.iterdir())


def test_unknown_file_format_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="json"):
        land_day(tmp_path, DS, n_customers=5, file_format="json")  # type: ignore[arg-type]


def test_drift_shifts_sessions_charges_and_amounts(tmp_path: Path) -> None:
    drift = CovariateDrift(session_rate_factor=0.5, charges_shift=10.0, purchase_amount_factor=2.0)
    base = land_day(tmp_path / "base", DS, n_customers=400)
    drifted = land_day(tmp_path / "drift", DS, n_customers=400, drift=drift)

    def sessions(partition: Path) -> int:
        return int((read(partition, "events")["event_type"] == "session").sum())

    def mean_amount(partition: Path) -> float:
        events = read(partition, "events")
        return float(events.loc[events["event_type"] == "purchase", "amount"].mean())

    assert sessions(drifted) < 0.7 * sessions(base)
    assert mean_amount(drifted) > 1.5 * mean_amount(base)
    shift = read(drifted, "customers")["monthly_charges"] - read(base, "customers")["monthly_charges"]
    assert np.allclose(shift, 10.0)


def test_land_days_applies_drift_from_drift_start(tmp_path: Path) -> None:
    drift = CovariateDrift(charges_shift=25.0)
    days = land_days(tmp_path, DS, 3, n_customers=30, drift=drift, drift_start=DS + timedelta(days=2))
    charges = [read(p, "customers")["monthly_charges"] for p in days]

    assert [p.name for p in days] == ["ds=2026-11-03", "ds=2026-11-04", "ds=2026-11-05"]
    pd.testing.assert_series_equal(charges[0], charges[1])
    assert np.allclose(charges[2] - charges[1], 25.0)


def test_churn_follows_the_documented_relationship(tmp_path: Path) -> None:
    n_customers = 600
    days = land_days(tmp_path, DS, 30, n_customers=n_customers)
    labels = pd.concat([read(p, "labels") for p in days], ignore_index=True)
    population = simulator.customer_population(n_customers)
    labelled = labels.merge(population, on="customer_id")

    # Over 30 consecutive days every customer is labelled exactly once.
    assert sorted(labels["customer_id"]) == list(range(1, n_customers + 1))
    assert 0.15 < labels["churned"].mean() < 0.4

    quartile = pd.qcut(labelled["engagement"], 4, labels=False)
    rate_by_quartile = labelled.groupby(quartile)["churned"].mean()
    assert rate_by_quartile[0] > rate_by_quartile[3] + 0.15
    rate_by_plan = labelled.groupby("plan")["churned"].mean()
    assert rate_by_plan["monthly"] > rate_by_plan["annual"]


def test_expected_features_count_the_landed_events(tmp_path: Path) -> None:
    days = land_days(tmp_path, DS, 8, n_customers=25)
    last = DS + timedelta(days=7)
    features = simulator.expected_customer_daily_features(tmp_path, last)
    events = pd.concat(
        [read(p, "events").assign(day=date.fromisoformat(p.name[3:])) for p in days]
    )
    sessions = events[events["event_type"] == "session"]

    assert list(features.columns) == list(simulator.MART_COLUMNS)
    assert features["customer_id"].tolist() == list(range(1, 26))
    assert (features["ds"] == last).all()
    assert (features["feature_timestamp"] == pd.Timestamp("2026-11-10 23:59:59", tz="UTC")).all()
    for row in features.itertuples():
        own = sessions[sessions["customer_id"] == row.customer_id]
        assert row.sessions_30d == len(own)
        assert row.sessions_7d == int((own["day"] > last - timedelta(days=7)).sum())
        expected_gap = (last - own["day"].max()).days if len(own) else 31
        assert row.days_since_last_session == expected_gap
    assert features["tenure_days"].min() > 0


def test_expected_features_without_sessions_use_31_days(tmp_path: Path) -> None:
    land_days(tmp_path, DS, 2, n_customers=10, drift=CovariateDrift(session_rate_factor=0.0))
    features = simulator.expected_customer_daily_features(tmp_path, DS + timedelta(days=1))

    assert (features["sessions_30d"] == 0).all()
    assert (features["days_since_last_session"] == 31).all()
    assert features["sessions_7d"].dtype == np.int64
