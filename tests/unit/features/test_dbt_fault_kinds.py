"""Which dbt failures are the day's data (quarantine) and which are the infrastructure's (retry)."""

from __future__ import annotations

import pytest

from pipelines.features.dbt import is_data_failure

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("status", "message"), [
    ("fail", "Got 3 results, configured to fail if != 0"),
    ("error", "Conversion Error: Could not convert string 'abc' to INT64"),
    ("error", 'Binder Error: Table "source" does not have a column named "monthly_charges"'),
    ("error", "Invalid Input Error: No magic bytes found at end of file '/l/ds=2026-11-03/events.parquet'"),
    ("error", "Compilation Error: no events.parquet landed for ds=2026-11-03: expected /l/ds=2026-11-03/…"),
    ("error", 'invalid input syntax for type bigint: "abc"'),
])
def test_data_failures_are_the_days_fault(status, message):
    assert is_data_failure(status, message)


@pytest.mark.parametrize("message", [
    'IO Error: Could not set lock on file "/h/warehouse/churn.duckdb": Conflicting lock is held in python (PID 7)',
    "terminating connection due to administrator command",
    "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
    'connection to server at "127.0.0.1", port 5432 failed: Connection refused',
    "IO Error: Could not write file \"/h/warehouse/churn.duckdb.wal\": No space left on device",
    "IO Error: Could not read from file \"/l/ds=2026-11-03/events.parquet\": Input/output error",
    "Conversion Error while the connection was lost: server closed the connection unexpectedly",
    "something dbt says that nobody has seen before",
])
def test_infrastructure_and_unknown_failures_are_retried(message):
    assert not is_data_failure("error", message)
