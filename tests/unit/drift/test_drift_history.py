"""The drift history (SQLite): checks are replaced per DAG run, emissions are claimed atomically once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from pipelines.drift.history import DriftHistory
from pipelines.drift.policy import guard

pytestmark = pytest.mark.unit

T = datetime(2026, 11, 20, 3, tzinfo=UTC)


def rails(run_id, at):
    return partial(guard, "churn_retrain", run_id, at, cooldown_hours=24, max_triggers_per_day=1)


def test_a_check_rerun_replaces_its_row(tmp_path):
    history = DriftHistory(tmp_path / "history.db")
    for share in (0.1, 0.4):
        history.record_check(instance="churn", kind="tabular", dag_run_id="r1", run_after=T.isoformat(),
                             status="checked", drift_share=share, drifted_columns=["a"])
    rows = history.checks("churn")
    assert len(rows) == 1 and rows[0]["drift_share"] == 0.4 and rows[0]["drifted_columns"] == ["a"]
    history.set_action("churn", "r1", "emitted churn_retrain")
    assert history.check("churn", "r1")["action"] == "emitted churn_retrain"
    with pytest.raises(ValueError, match="unknown drift history column"):
        history.record_check(instance="churn", kind="tabular", dag_run_id="r2", run_after="x", status="y", nope=1)


def test_an_emission_is_recorded_once_per_run_and_the_guard_sees_it(tmp_path):
    history = DriftHistory(tmp_path / "history.db")
    first = history.claim_emission("churn_retrain", "churn", "r1", T, 1, {"drift_share": 0.4}, rails("r1", T))
    assert first.emit
    retry = history.claim_emission("churn_retrain", "churn", "r1", T, 2, {"drift_share": 0.4}, rails("r1", T))
    assert not retry.emit and retry.reason.startswith("dedupe")
    later = T + timedelta(hours=3)
    cooled = history.claim_emission("churn_retrain", "churn", "r2", later, 1, {}, rails("r2", later))
    assert not cooled.emit
    assert [(e["dag_run_id"], e["extra"]) for e in history.emissions("churn_retrain")] == [("r1", {"drift_share": 0.4})]
