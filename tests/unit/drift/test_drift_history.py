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


def test_the_claim_of_one_run_is_found(tmp_path):
    history = DriftHistory(tmp_path / "history.db")
    assert history.emission("churn_retrain", "r1") is None
    history.claim_emission("churn_retrain", "churn", "r1", T, 3, {"drift_share": 0.4}, rails("r1", T))
    claim = history.emission("churn_retrain", "r1")
    assert claim["try_number"] == 3 and claim["extra"] == {"drift_share": 0.4}
    assert history.emission("docs_reindex", "r1") is None


def test_a_retry_completes_a_claim_airflow_never_recorded_and_skips_one_it_did(tmp_path):
    """emit_trigger after a claim: Airflow has no event of the run → the claimed extra again; has one → dedupe."""
    import yaml

    from pipelines.core.settings import LooplineSettings
    from pipelines.drift import steps
    from pipelines.drift.config import DriftCheckConfig
    from pipelines.drift.targets import target_asset
    from support.airflow_helpers import REPO

    config = DriftCheckConfig.model_validate(
        yaml.safe_load((REPO / "dags" / "configs" / "churn_drift_check.yaml").read_text()))
    target, settings = target_asset(config), LooplineSettings(home=tmp_path)
    evidence = {"kind": "tabular", "instance": "churn", "run_id": "r1", "drift_share": 0.4}
    verdict = {"drifted": True, "signals": ["data_drift"], "reasons": ["data drift: 4 of 10"]}

    def emit(try_number, already_emitted):
        return steps.emit_trigger(config, target, evidence, verdict, "r1", T, try_number, settings=settings,
                                  already_emitted=already_emitted)

    first = emit(1, lambda: False)
    assert first["drift_share"] == 0.4 and first["action"] == "retrain"
    # Try 1 died before Airflow recorded its event; try 2 completes it with the claimed extra, without the guard
    # rails counting the claim against itself.
    assert emit(2, lambda: False) == first
    for already_emitted in (lambda: True, None):  # Airflow holds the event, or the caller cannot tell
        with pytest.raises(steps.NotEmitted, match=r"dedupe: this run \(r1\) already emitted churn_retrain"):
            emit(3, already_emitted)
    assert len(DriftHistory(tmp_path / "drift" / "history.db").emissions("churn_retrain")) == 1
