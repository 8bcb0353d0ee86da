"""The audit export holds every event of a scripted sequence, in order, with its evidence, and nothing else.

The sequence runs the real emitters against the session's MLflow: a model trained and put to a person (approved:
an approval and a promotion), a model the gate rejects, an adapter promoted by the answers gate and rolled back
by the fallback, and a drift trigger claimed in the drift history. The drift evidence is written here (the check
itself has its own tests: tests/integration/drift/); everything after it is the emitter's own code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from html import escape

import pytest

from pipelines.audit.export import export
from pipelines.core import tracking
from pipelines.training import steps
from support.weather_world import build, noise, run, warming

pytestmark = pytest.mark.integration


def drift_trigger(settings) -> dict:
    import yaml

    from pipelines.core.settings import REPO_ROOT
    from pipelines.drift import steps as drift_steps
    from pipelines.drift.config import DriftCheckConfig
    from pipelines.drift.targets import target_asset

    raw = yaml.safe_load((REPO_ROOT / "dags" / "configs" / "churn_drift_check.yaml").read_text())
    config = DriftCheckConfig.model_validate({**raw, "instance": "auditseq"})
    evidence = {"kind": "tabular", "instance": "auditseq", "dag_id": config.dag_id, "run_id": "auditseq_run",
                "check_day": "2026-12-03", "drift_share": 0.5, "drifted_columns": ["sessions_7d"],
                "report_uri": "file:///reports/auditseq.html", "mlflow_run_id": "none"}
    verdict = {"drifted": True, "signals": ["data_drift"], "reasons": ["data drift: 1 of 2 feature columns drifted"]}
    return drift_steps.emit_trigger(config, target_asset(config), evidence, verdict, "auditseq_run",
                                    datetime.now(UTC), 1, settings=settings)


def test_the_export_holds_every_event_of_a_scripted_sequence(tmp_path):
    from pipelines.core.settings import LooplineSettings, get_settings
    from pipelines.llm_eval.candidates import Candidate, record_decision, roll_back

    settings = get_settings()
    since = datetime.now(UTC)
    (tmp_path / "gated").mkdir()
    (tmp_path / "noise").mkdir()
    gated = build(tmp_path / "gated", warming, {"baseline": "previous_value:temp_c", "min_gain_over_baseline": 1.0,
                                                "approval": "required"})
    info, trained, decision = run(gated)
    steps.finalize_promotion(gated, info, trained, decision, {
        "chosen_options": ["Approve"], "responded_by_user": {"id": "dana", "name": "dana"},
        "responded_at": datetime.now(UTC).isoformat()})
    rejected = build(tmp_path / "noise", noise, {"baseline": "prior", "min_gain_over_baseline": 0.1})
    _, _, refused = run(rejected)
    client = tracking.client()
    client.create_registered_model("auditseq_adapter")
    first, second = (int(client.create_model_version("auditseq_adapter", source=f"file:///tmp/auditseq/{n}").version)
                     for n in range(2))
    client.set_registered_model_alias("auditseq_adapter", "champion", str(first))
    record_decision(Candidate("adapter", "auditseq_adapter", "challenger", second, first), passed=True,
                    reason="passed: all checks held", golden_digest="g" * 64, eval_run="eval-1")
    roll_back("adapter", "auditseq_adapter", "refusal share 0.6 above 0.5", "fallback-1")
    # The drift history of a home of its own (no cooldown or cap on the session's churn_retrain), the same MLflow.
    extra = drift_trigger(LooplineSettings(home=tmp_path / "drift-home", mlflow_tracking_uri=settings.mlflow_uri))
    until = datetime.now(UTC) + timedelta(seconds=1)

    written = export(since, tmp_path / "audit", until)
    payload = json.loads(written.json.read_text())
    assert [(e["kind"], e["subject"], e["decision"]) for e in payload["events"]] == [
        ("approval", f"model {gated.model_name}", "approved"),
        ("promotion", f"model {gated.model_name}", "promoted"),
        ("rejection", f"model {rejected.model_name}", "rejected"),
        ("promotion", "adapter auditseq_adapter", "promoted"),
        ("rollback", "adapter auditseq_adapter", "rolled_back"),
        ("drift_trigger", "asset churn_retrain", "emitted"),
    ]
    assert payload["counts"] == {"promotion": 2, "rejection": 1, "rollback": 1, "approval": 1, "drift_trigger": 1}
    approval, promotion, rejection, adapter, rollback, trigger = payload["events"]
    assert approval["approved_by"] == promotion["approved_by"] == "dana"
    assert promotion["evidence"]["challenger"] == pytest.approx(decision["challenger_value"], abs=1e-4)
    assert promotion["evidence"] == decision["evidence"]  # the gate's own figures, as the request showed them
    assert promotion["provenance"]["dataset_digest"] == info["digest"]
    assert rejection["reason"] == refused["reason"] and rejection["evidence"]["baseline"] is not None
    assert adapter["evidence"] == {"eval_run": "eval-1", "golden_digest": "g" * 64}
    assert (rollback["version"], rollback["previous"]) == (str(first), str(second))
    assert trigger["evidence"]["drift_share"] == extra["drift_share"] == 0.5
    page = written.html.read_text()
    assert page.count("<h2 id='ev-") == 6  # one section per event, each with its reason
    for event in payload["events"]:
        assert escape(event["reason"][:60], quote=True) in page
