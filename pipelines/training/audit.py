"""The training template's audit records: what a promotion of the model rests on, and the approval request's text.

A record names the version's provenance (git commit, config digest and config, data window, dataset digest,
feature service, training key, MLflow run) and the evidence the gate judged (the metric of challenger, champion
and baseline on one holdout, per slice too), so that an auditor can rebuild the version and check its figures.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipelines.audit.records import AuditEvent, config_digest, config_snapshot, git_commit

if TYPE_CHECKING:
    from pipelines.training.config import TrainingConfig
    from pipelines.training.promotion import Evaluation
    from pipelines.training.steps import TrainedVersion, TrainingSetInfo


def provenance(training: TrainingConfig, info: TrainingSetInfo, trained: TrainedVersion) -> dict[str, Any]:
    """What made the version: code, config, data."""
    return {
        "git_commit": git_commit(), "config_digest": config_digest(training), "config": config_snapshot(training),
        "dag_id": training.dag_id, "window_start": info["window_start"], "window_end": info["window_end"],
        "dataset_digest": info["digest"], "training_set": info["path"], "rows": info["rows"],
        "train_rows": info["train_rows"], "holdout_rows": info["holdout_rows"],
        "feature_service": info["feature_service"], "feast_project": info["feast_project"],
        "numeric": info["numeric"], "categorical": info["categorical"], "training_key": trained["training_key"],
        "training_run": trained["run_id"], "family": training.family,
    }


def evidence(training: TrainingConfig, challenger: Evaluation, champion: Evaluation | None,
             champion_version: str | None, baseline: float | None) -> dict[str, Any]:
    """The gate's figures: the policy's metric for challenger, champion and baseline, overall and per slice."""
    policy = training.policy
    out: dict[str, Any] = {"metric": policy.metric_name, "higher_is_better": policy.higher_is_better,
                           "challenger": round(challenger.metric, 6),
                           "champion": round(champion.metric, 6) if champion is not None else None,
                           "champion_version": champion_version,
                           "baseline": None if baseline is None else round(baseline, 6),
                           "policy": {"floor": policy.floor, "min_improvement": policy.min_improvement,
                                      "max_slice_regression": policy.max_slice_regression,
                                      "min_gain_over_baseline": policy.min_gain_over_baseline,
                                      "approval": policy.approval}}
    slices = {name: {"rows": s.rows, "challenger": s.value} for name, s in challenger.slices.items()}
    for name, s in (champion.slices if champion is not None else {}).items():
        slices.setdefault(name, {})["champion"] = s.value
    if slices:
        out["slices"] = slices
    return out


def gate_event(training: TrainingConfig, version: str, promoted: bool, reason: str, at: datetime,
               previous: str | None, evidence_: dict[str, Any], provenance_: dict[str, Any],
               source: dict[str, Any]) -> AuditEvent:
    """The record of the gate's verdict when no person is asked: a promotion or a rejection."""
    return AuditEvent(kind="promotion" if promoted else "rejection", subject=f"model {training.model_name}",
                      version=version, decision="promoted" if promoted else "rejected", reason=reason, at=at,
                      key=f"model:{training.model_name}:v{version}:gate:{previous or 'none'}", previous=previous,
                      evidence=evidence_, provenance=provenance_, source=source)


def approval_request(training: TrainingConfig, version: str, reason: str, evidence_: dict[str, Any],
                     provenance_: dict[str, Any]) -> tuple[str, str]:
    """The approval request's subject and body (Markdown, shown on the task's Required Actions page)."""
    metric = evidence_["metric"]
    champion = evidence_.get("champion_version")
    rows = [("challenger", f"v{version}", evidence_["challenger"])]
    if champion:
        rows.append(("champion", f"v{champion}", evidence_["champion"]))
    if evidence_.get("baseline") is not None:
        rows.append(("baseline", training.promotion.baseline or "", evidence_["baseline"]))
    table = "\n".join(f"| {who} | {which} | {value:.4f} |" for who, which, value in rows)
    slices = evidence_.get("slices") or {}
    slice_rows = "\n".join(
        f"| {name} | {s.get('rows', '')} | {_fmt(s.get('challenger'))} | {_fmt(s.get('champion'))} |"
        for name, s in slices.items())
    slice_table = (f"\n\n| slice | rows | challenger | champion |\n|---|---|---|---|\n{slice_rows}"
                   if slice_rows else "")
    subject = f"Promote {training.model_name} v{version} to champion?"
    body = (f"The gate says **promote**: {reason}.\n\n"
            f"| | version | {metric} |\n|---|---|---|\n{table}{slice_table}\n\n"
            f"Data window {provenance_['window_start']} … {provenance_['window_end']} "
            f"({provenance_['rows']} labels, dataset digest `{provenance_['dataset_digest'][:12]}`), "
            f"feature service `{provenance_['feature_service']}`, git commit `{provenance_['git_commit'][:12]}`, "
            f"MLflow run `{provenance_['training_run']}`.\n\n"
            f"**Approve** moves `{training.model_name}@champion` to v{version}; **Reject** leaves "
            f"{'v' + champion if champion else 'no champion'} in place. No answer within "
            f"{training.policy.approval_timeout_hours:g} h rejects.")
    return subject, body


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
