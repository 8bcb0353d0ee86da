"""Unit tests for pipelines.core.expectations against the customer_daily_features suite."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from pipelines.core.expectations import (
    DataValidationError,
    ExpectationFailure,
    ValidationReport,
    load_suite,
    raise_for_failures,
    validate_dataframe,
)
from pipelines.demo.simulator import MART_COLUMNS

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
SUITE_PATH = REPO / "dags" / "expectations" / "customer_daily_features.json"
BATCH = "churn 2026-11-03"
DS = dt.date(2026, 11, 3)
N_EXPECTATIONS = 26
CONTRACT_COLUMNS = list(MART_COLUMNS)


def make_features(n: int = 500) -> pd.DataFrame:
    """Builds one valid day of customer_daily_features, n customers, as the mart reads back."""
    ids = pd.Series(range(1, n + 1), dtype="int64")
    sessions_30d = ids % 9  # some customers had no session in the window
    return pd.DataFrame(
        {
            "customer_id": ids,
            "ds": [DS] * n,  # a parquet date column reads back as datetime.date objects
            "feature_timestamp": pd.Timestamp("2026-11-03 23:59:59", tz="UTC"),
            "tenure_days": (ids * 7) % 1500,
            "plan": ["monthly" if i % 3 else "annual" for i in ids],
            "region": [("north", "south", "east", "west")[i % 4] for i in ids],
            "monthly_charges": 20.0 + (ids % 100) * 1.25,
            "sessions_7d": sessions_30d // 3,
            "sessions_30d": sessions_30d,
            "purchases_30d": ids % 4,
            "spend_30d": (ids % 4) * 19.99,
            "support_tickets_30d": ids % 2,
            "days_since_last_session": sessions_30d.where(sessions_30d == 0, ids % 30).where(
                sessions_30d > 0, 31
            ),
        }
    )


@pytest.fixture
def features() -> pd.DataFrame:
    return make_features()


def validate(df: pd.DataFrame) -> ValidationReport:
    """Validates a copy and checks the caller's frame came back untouched."""
    before = df.copy()
    report = validate_dataframe(df, SUITE_PATH, batch_name=BATCH)
    pd.testing.assert_frame_equal(df, before)
    return report


def error_message(report: ValidationReport) -> str:
    with pytest.raises(DataValidationError) as excinfo:
        raise_for_failures(report)
    assert excinfo.value.report is report
    return str(excinfo.value)


def test_suite_file_is_a_gx_suite_with_every_expectation_loaded() -> None:
    raw = json.loads(SUITE_PATH.read_text())
    suite = load_suite(SUITE_PATH)

    assert suite.name == "customer_daily_features"
    assert raw["meta"]["notes"]
    assert len(suite.expectations) == len(raw["expectations"]) == N_EXPECTATIONS
    column_set = next(
        e for e in raw["expectations"] if e["type"] == "expect_table_columns_to_match_set"
    )
    assert sorted(column_set["kwargs"]["column_set"]) == sorted(CONTRACT_COLUMNS)


def test_valid_frame_passes(features: pd.DataFrame) -> None:
    report = validate(features)

    assert report.success, report.summary()
    assert report.evaluated == N_EXPECTATIONS
    assert report.failures == ()
    assert report.summary() == f"batch {BATCH} passed all {N_EXPECTATIONS} expectations"
    raise_for_failures(report)  # does not raise


def test_null_burst_in_monthly_charges_fails(features: pd.DataFrame) -> None:
    features.loc[100:249, "monthly_charges"] = None  # 150 of 500 rows, about 30%

    report = validate(features)

    assert not report.success
    assert report.failures == (
        ExpectationFailure(
            "expect_column_values_to_not_be_null",
            "monthly_charges",
            "monthly_charges has 150 nulls out of 500 rows (allowed 0)",
        ),
    )
    assert error_message(report) == (
        f"batch {BATCH} failed 1 of {N_EXPECTATIONS} expectations: "
        "monthly_charges has 150 nulls out of 500 rows (allowed 0)"
    )


def test_duplicate_keys_fail(features: pd.DataFrame) -> None:
    doubled = pd.concat([features, features.iloc[:6]], ignore_index=True)

    report = validate(doubled)

    assert [f.summary for f in report.failures] == [
        "(customer_id, ds) has 12 duplicate rows, e.g. customer_id=1, ds=2026-11-03"
    ]
    assert report.failures[0].column == "customer_id, ds"


def test_bad_plan_value_fails(features: pd.DataFrame) -> None:
    features.loc[[3, 40, 41], "plan"] = "weekly"

    report = validate(features)

    assert [f.summary for f in report.failures] == [
        "plan has 3 values outside {annual, monthly}: ['weekly']"
    ]


def test_negative_count_fails(features: pd.DataFrame) -> None:
    features.loc[[7, 8], "sessions_7d"] = -1

    report = validate(features)

    assert [f.summary for f in report.failures] == ["sessions_7d has 2 values below 0: [-1]"]


def test_out_of_range_values_fail_with_their_bounds(features: pd.DataFrame) -> None:
    features.loc[0, "days_since_last_session"] = 45
    features.loc[1, "monthly_charges"] = 1500.0

    report = validate(features)

    assert [f.summary for f in report.failures] == [
        "monthly_charges has 1 value outside [0, 1000]: [1500.0]",
        "days_since_last_session has 1 value outside [0, 31]: [45]",
    ]
    assert error_message(report).startswith(
        f"batch {BATCH} failed 2 of {N_EXPECTATIONS} expectations: "
    )


def test_missing_column_fails(features: pd.DataFrame) -> None:
    report = validate(features.drop(columns=["monthly_charges"]))

    summaries = [f.summary for f in report.failures]
    assert summaries[0] == "columns do not match the contract: missing ['monthly_charges']"
    assert (
        "column monthly_charges is missing, so expect_column_values_to_not_be_null "
        "on monthly_charges could not run"
    ) in summaries
    assert {f.column for f in report.failures[1:]} == {"monthly_charges"}


def test_renamed_column_fails(features: pd.DataFrame) -> None:
    report = validate(features.rename(columns={"monthly_charges": "monthly_charge"}))

    assert report.failures[0].summary == (
        "columns do not match the contract: missing ['monthly_charges'], "
        "unexpected ['monthly_charge']"
    )
    assert report.failures[0].column is None
    assert not report.success


def test_empty_frame_fails(features: pd.DataFrame) -> None:
    report = validate(features.iloc[0:0])

    assert [f.summary for f in report.failures] == ["batch has 0 rows (expected at least 1)"]
    assert error_message(report) == (
        f"batch {BATCH} failed 1 of {N_EXPECTATIONS} expectations: "
        "batch has 0 rows (expected at least 1)"
    )


def test_error_names_the_quarantine_folder(features: pd.DataFrame, tmp_path: Path) -> None:
    features.loc[0:13, "customer_id"] = None
    features.loc[[3], "plan"] = "weekly"
    report = validate(features)
    quarantine = tmp_path / "quarantine" / "ds=2026-11-03"

    with pytest.raises(DataValidationError) as excinfo:
        raise_for_failures(report, quarantined_to=quarantine)

    # Null keys also collide with each other, so the grain check reports them too.
    assert str(excinfo.value) == (
        f"batch {BATCH} failed 3 of {N_EXPECTATIONS} expectations: "
        "(customer_id, ds) has 14 duplicate rows, e.g. customer_id=nan, ds=2026-11-03; "
        "customer_id has 14 nulls out of 500 rows (allowed 0); "
        "plan has 1 value outside {annual, monthly}: ['weekly']; "
        f"quarantined to {quarantine}"
    )
    assert excinfo.value.quarantined_to == quarantine


def test_report_to_dict_is_json_serialisable(features: pd.DataFrame) -> None:
    features.loc[0:2, "region"] = "central"
    report = validate(features)

    saved = json.loads(json.dumps(report.to_dict()))

    assert saved == {
        "batch_name": BATCH,
        "success": False,
        "evaluated": N_EXPECTATIONS,
        "failed": 1,
        "failures": [
            {
                "expectation_type": "expect_column_values_to_be_in_set",
                "column": "region",
                "summary": "region has 3 values outside {east, north, south, west}: ['central']",
            }
        ],
    }


def test_repeated_calls_do_not_leak_between_batches(features: pd.DataFrame) -> None:
    bad = features.copy()
    bad.loc[0, "tenure_days"] = -5

    assert not validate(bad).success
    assert validate(features).success
    assert [f.summary for f in validate(bad).failures] == ["tenure_days has 1 value below 0: [-5]"]


def test_suite_with_unknown_expectation_is_refused(tmp_path: Path) -> None:
    # GX's ExpectationSuite would log and drop this one, silently switching the check off.
    suite = tmp_path / "suite.json"
    suite.write_text(
        json.dumps(
            {
                "name": "broken",
                "expectations": [
                    {"type": "expect_column_values_to_not_be_nul", "kwargs": {"column": "plan"}}
                ],
            }
        )
    )

    with pytest.raises(ValueError, match=r"#0 \('expect_column_values_to_not_be_nul'\)"):
        load_suite(suite)
