"""Promotion records and human approval in the training steps, on a real use case (weather stations: Feast, GE,
scikit-learn, MLflow's registry): every verdict is an audit record with its provenance; with
``promotion.approval: required`` the alias waits for a person, and an approval, a rejection, a timeout and a
champion that moved meanwhile each end as they should, recorded with who answered.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.audit import records
from pipelines.audit.export import export
from pipelines.core import tracking
from pipelines.training import steps
from support.weather_world import build, noise, run, warming

pytestmark = pytest.mark.unit

GATE = {"baseline": "previous_value:temp_c", "min_gain_over_baseline": 1.0}


def audit_events(model_name: str, since: datetime) -> list[records.AuditEvent]:
    return [e for e in records.events(since) if e.subject == f"model {model_name}"]


def tags(model_name: str, version: str) -> dict[str, str]:
    return tracking.client().get_model_version(model_name, version).tags


@pytest.fixture
def awaiting(tmp_path):
    """A first model the gate would promote, under ``approval: required``: (config, info, trained, decision)."""
    training = build(tmp_path, warming, {**GATE, "approval": "required", "approval_timeout_hours": 2})
    info, trained, decision = run(training)
    return training, info, trained, decision


def test_a_promotion_is_recorded_with_its_provenance_and_evidence(tmp_path):
    since = datetime.now(UTC) - timedelta(seconds=1)
    training = build(tmp_path, warming, GATE)
    info, trained, decision = run(training)
    assert decision["promoted"]

    [event] = audit_events(training.model_name, since)
    assert (event.kind, event.decision, event.version, event.previous) == ("promotion", "promoted",
                                                                          trained["version"], None)
    assert event.reason == decision["reason"]
    made_of = event.provenance
    assert made_of["dataset_digest"] == info["digest"] and made_of["feature_service"] == "temperature_model_v1"
    assert (made_of["window_start"], made_of["window_end"]) == (info["window_start"], info["window_end"])
    assert len(made_of["git_commit"]) in (40, len("unknown")) and len(made_of["config_digest"]) == 64
    assert made_of["config"]["model_name"] == training.model_name
    assert made_of["training_run"] == trained["run_id"]
    assert event.evidence["challenger"] == pytest.approx(decision["challenger_value"], abs=1e-4)
    assert event.evidence["baseline"] == pytest.approx(decision["baseline_value"], abs=1e-4)
    # The registered version points at its record; the record's HTML is there beside its JSON.
    assert tags(training.model_name, trained["version"])[records.RECORD_TAG] == event.record_run == decision["record"]
    artifacts = {a.path for a in tracking.client().list_artifacts(event.record_run, "record")}
    assert artifacts == {"record/record.json", "record/record.html"}

    # Judged again (a retried task): the same record, rewritten, not a second one.
    steps.evaluate_and_promote(training, info, trained)
    assert len(audit_events(training.model_name, since)) == 1


def test_a_gate_rejection_is_recorded(tmp_path):
    since = datetime.now(UTC) - timedelta(seconds=1)
    training = build(tmp_path, noise, {"baseline": "prior", "min_gain_over_baseline": 0.1})
    _, trained, decision = run(training)
    [event] = audit_events(training.model_name, since)
    assert (event.kind, event.decision, event.reason) == ("rejection", "rejected", decision["reason"])
    assert records.RECORD_TAG not in tags(training.model_name, trained["version"])


def test_an_approval_required_promotion_waits_with_the_evidence_and_an_approval_moves_the_alias(awaiting):
    training, info, trained, decision = awaiting
    name, version = training.model_name, trained["version"]
    assert decision["awaiting_approval"] and not decision["promoted"]
    assert tracking.champion(name) is None
    assert tags(name, version)["loopline.promotion"] == "awaiting_approval"
    assert decision["approval_subject"] == f"Promote {name} v{version} to champion?"
    body = decision["approval_body"]
    assert f"| challenger | v{version} | {decision['challenger_value']:.4f} |" in body
    assert info["digest"][:12] in body and "No answer within 2 h rejects" in body

    answered = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
    response = {"chosen_options": ["Approve"], "responded_by_user": {"id": "alice", "name": "alice"},
                "responded_at": answered.isoformat()}
    result = steps.finalize_promotion(training, info, trained, decision, response)
    assert result["promoted"] and result["champion"] == version
    assert str(tracking.champion(name).version) == version
    version_tags = tags(name, version)
    assert version_tags["loopline.approved_by"] == "alice" and version_tags["loopline.promotion"] == "promoted"
    assert "approved by alice at 2026-12-04 09:30 UTC" in version_tags["loopline.promotion_reason"]

    found = audit_events(name, answered - timedelta(seconds=1))
    assert [(e.kind, e.decision, e.approved_by) for e in found] == [("approval", "approved", "alice"),
                                                                   ("promotion", "promoted", "alice")]
    assert version_tags[records.RECORD_TAG] == found[1].record_run
    assert found[1].evidence == decision["evidence"] and found[1].evidence["baseline"] is not None
    # A retry of the finalizing task changes nothing and records nothing more.
    again = steps.finalize_promotion(training, info, trained, decision, response)
    assert again["promoted"] and len(audit_events(name, answered - timedelta(seconds=1))) == 2


@pytest.mark.parametrize("answer, outcome", [
    ({"chosen_options": ["Reject"], "responded_by_user": {"id": "bob", "name": "bob"}}, "rejected"),
    # What Airflow writes when the timeout passes: the default option (Reject) and nobody.
    ({"chosen_options": ["Reject"], "responded_by_user": None, "timedout": True}, "timed_out"),
])
def test_a_rejected_or_unanswered_promotion_leaves_the_champion_and_says_who(awaiting, answer, outcome):
    training, info, trained, decision = awaiting
    name, version = training.model_name, trained["version"]
    answered = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    result = steps.finalize_promotion(training, info, trained, decision, {**answer, "responded_at": answered})
    assert not result["promoted"] and tracking.champion(name) is None
    version_tags = tags(name, version)
    assert version_tags["loopline.promotion"] == "rejected" and version_tags["loopline.approval"] == outcome
    [event] = audit_events(name, answered - timedelta(seconds=1))
    assert (event.kind, event.decision) == ("approval", outcome)
    if outcome == "rejected":
        assert event.approved_by == "bob" and event.reason.startswith("rejected by bob; the gate had said: ")
    else:
        assert event.approved_by is None and event.reason.startswith("no answer within 2 h")


def test_an_approval_given_after_the_champion_moved_moves_nothing(awaiting):
    training, info, trained, decision = awaiting
    name, version = training.model_name, trained["version"]
    # Someone makes another version champion while the request waits (a second registration of these inputs).
    other = tracking.client().create_model_version(name, f"runs:/{trained['run_id']}/model", trained["run_id"])
    tracking.promote(name, other.version, "moved by hand for the test")
    response = {"chosen_options": ["Approve"], "responded_by_user": {"id": "alice", "name": "alice"},
                "responded_at": datetime.now(UTC).isoformat()}
    with pytest.raises(steps.ChampionMovedDuringApproval, match=rf"moved from no version to v{other.version}"):
        steps.finalize_promotion(training, info, trained, decision, response)
    assert str(tracking.champion(name).version) == str(other.version)
    assert tags(name, version)["loopline.promotion"] == "awaiting_approval"


def test_the_export_holds_every_event_of_the_period_in_html_and_json(awaiting, tmp_path):
    training, info, trained, decision = awaiting
    since = datetime.now(UTC) - timedelta(minutes=5)
    steps.finalize_promotion(training, info, trained, decision,
                             {"chosen_options": ["Approve"], "responded_by_user": {"id": "carol", "name": "carol"},
                              "responded_at": datetime.now(UTC).isoformat()})
    written = export(since, tmp_path / "audit")
    payload = json.loads(written.json.read_text())
    mine = [e for e in payload["events"] if e["subject"] == f"model {training.model_name}"]
    assert [(e["kind"], e["decision"], e["approved_by"]) for e in mine] == [("approval", "approved", "carol"),
                                                                          ("promotion", "promoted", "carol")]
    assert payload["counts"]["approval"] >= 1 and sum(payload["counts"].values()) == len(payload["events"])
    page = written.html.read_text()
    assert f"model {training.model_name}" in page and "carol" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained
    # A period that ends before these events holds none of them.
    earlier = export(since - timedelta(days=2), tmp_path / "earlier", until=since)
    assert not [e for e in json.loads(earlier.json.read_text())["events"]
                if e["subject"] == f"model {training.model_name}"]
