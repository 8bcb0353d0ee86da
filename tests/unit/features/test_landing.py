"""Landing checks on tiny partitions: every fault the simulator injects gets a readable error."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from pipelines.demo import simulator
from pipelines.features.landing import (
    LandingContractError,
    check_partition,
    partition_dir,
    partition_ready,
    quarantine_partition,
)
from pipelines.templates import load_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
CONFIG = load_config(REPO / "dags" / "configs" / "churn_features.yaml")
DAY = date(2026, 11, 3)


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_a_clean_partition_passes_and_counts_rows(tmp_path, file_format):
    landing = CONFIG.landing.model_copy(update={"format": file_format})
    simulator.land_day(tmp_path, DAY, n_customers=20, file_format=file_format)
    check = check_partition(landing, tmp_path, DAY)
    assert check.rows["customers"] == 20
    assert check.rows["events"] > 0


def test_ready_waits_for_the_marker_or_the_files(tmp_path):
    assert not partition_ready(CONFIG.landing, tmp_path, DAY)
    partition = simulator.land_day(tmp_path, DAY, n_customers=5)
    assert partition_ready(CONFIG.landing, tmp_path, DAY)
    (partition / "_SUCCESS").unlink()
    assert not partition_ready(CONFIG.landing, tmp_path, DAY)
    no_marker = CONFIG.landing.model_copy(update={"ready_marker": None})
    assert partition_ready(no_marker, tmp_path, DAY)


@pytest.mark.parametrize("fault, message", [
    ("renamed_column", r"customers.parquet has no column 'monthly_charges' \(unexpected columns: monthly_charge\)"),
    ("retyped_column", r"customers.parquet column 'customer_id' is string, expected int64"),
    ("empty_file", r"events.parquet is an empty file \(0 bytes\)"),
    ("corrupt_file", r"events.parquet cannot be read as parquet"),
])
def test_each_structural_fault_is_named(tmp_path, fault, message):
    simulator.land_day(tmp_path, DAY, n_customers=10, faults=[fault])
    with pytest.raises(LandingContractError, match=rf"landing partition 2026-11-03 breaks its contract: {message}"):
        check_partition(CONFIG.landing, tmp_path, DAY)


def test_several_problems_are_all_listed(tmp_path):
    partition = simulator.land_day(tmp_path, DAY, n_customers=10, faults=["renamed_column", "empty_file"])
    (partition / "labels.parquet").unlink()
    with pytest.raises(LandingContractError) as failure:
        check_partition(CONFIG.landing, tmp_path, DAY)
    text = str(failure.value)
    assert "monthly_charges" in text and "empty file" in text and "labels.parquet is missing" in text


def test_quarantine_moves_the_whole_partition_with_its_reason(tmp_path):
    landing, quarantine = tmp_path / "landing", tmp_path / "quarantine"
    simulator.land_day(landing, DAY, n_customers=5)
    source = partition_dir(CONFIG.landing, landing, DAY)
    files = sorted(p.name for p in source.iterdir())

    target = quarantine_partition(source, quarantine, "monthly_charges has 3 nulls", {"failed": 1})

    assert not source.exists()
    assert sorted(p.name for p in target.iterdir()) == sorted([*files, "reason.json"])
    reason = json.loads((target / "reason.json").read_text())
    assert reason["reason"] == "monthly_charges has 3 nulls" and reason["details"] == {"failed": 1}
    # Quarantining the same day again (a re-landed, still bad partition) keeps both copies.
    simulator.land_day(landing, DAY, n_customers=5)
    second = quarantine_partition(source, quarantine, "again")
    assert second == quarantine / f"{source.name}.2" and not source.exists()
    assert json.loads((target / "reason.json").read_text())["reason"] == "monthly_charges has 3 nulls"
    assert json.loads((second / "reason.json").read_text())["reason"] == "again"
    # A retry after the partition left landing touches nothing and creates no empty folder.
    assert quarantine_partition(source, quarantine, "retried") == second
    assert json.loads((second / "reason.json").read_text())["reason"] == "again"
    assert sorted(p.name for p in quarantine.iterdir()) == [source.name, f"{source.name}.2"]


def test_quarantining_a_partition_that_never_landed_creates_nothing(tmp_path):
    source = partition_dir(CONFIG.landing, tmp_path / "landing", DAY)
    assert quarantine_partition(source, tmp_path / "quarantine", "missing") is None
    assert list((tmp_path / "quarantine").iterdir()) == []


@pytest.mark.parametrize(("error", "retried"), [
    (OSError(5, "Input/output error"), True),
    (OSError(28, "No space left on device"), True),
    (OSError("Couldn't deserialize thrift: TProtocolException: Invalid data"), False),  # pyarrow: bad bytes
])
def test_a_machine_fault_reading_a_file_is_not_a_contract_error(tmp_path, monkeypatch, error, retried):
    from pipelines.features import landing

    simulator.land_day(tmp_path, DAY, n_customers=5)

    def failing_read(path, file_format, columns):
        raise error

    monkeypatch.setattr(landing, "_read_schema", failing_read)
    expected = OSError if retried else LandingContractError
    with pytest.raises(expected) as raised:
        check_partition(CONFIG.landing, tmp_path, DAY)
    assert isinstance(raised.value, LandingContractError) is not retried
