"""The steps of the ``drift_check`` template, one function per task.

1. :func:`check_drift` measures (tabular: Evidently data and prediction drift, performance on late labels,
   :func:`pipelines.drift.tabular.check_tabular`; rag: hit rate, corpus and query embeddings,
   :func:`pipelines.drift.rag.check_rag`), saves the HTML report under ``reports/<instance>/drift/<day>.html``,
   logs it to MLflow (experiment ``<instance>_drift``) and records the check in the drift history. No
   reference yet (no champion, no live index) or no current data:
   :class:`~pipelines.drift.checks.NothingToCheck`, the run is skipped with that reason. A schema mismatch:
   :class:`~pipelines.drift.tabular.SchemaMismatch`, the run fails and triggers nothing.
2. :func:`judge_drift` applies the thresholds (:mod:`pipelines.drift.policy`).
3. :func:`emit_trigger` applies the guard rails (dedupe by DAG run, daily cap, cooldown) on the drift
   history and, when they allow, claims the emission and returns the Asset event's extra; otherwise
   :class:`NotEmitted` says why. A claim whose task died before Airflow recorded the event is completed by
   the retry: exactly one event per DAG run.

Each step returns a plain dict (its XCom): :class:`~pipelines.drift.checks.TabularEvidence` or
:class:`~pipelines.drift.checks.RagEvidence`, :class:`DriftVerdict`, :class:`EventExtra`. Every step is keyed
by the DAG run: re-running it replaces its history row and lands in the same MLflow run, and a second
emission by the same run is impossible.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict, cast

from pipelines.core.params import apply_form
from pipelines.core.settings import LooplineSettings, get_settings
from pipelines.drift.checks import DriftEvidence, RagEvidence, TabularEvidence, window_for
from pipelines.drift.config import DRIFT_FORM, DriftCheckConfig

if TYPE_CHECKING:
    from pipelines.drift.targets import TargetAsset

log = logging.getLogger(__name__)


class NotEmitted(Exception):
    """The policy or a guard rail says no: the emit task is skipped, and the message says why."""


class DriftVerdict(TypedDict):
    """:func:`judge_drift`'s result: whether drift passed the policy, which signals fired, and why."""

    drifted: bool
    signals: list[str]
    reasons: list[str]


class EventExtra(TypedDict, total=False):
    """:func:`emit_trigger`'s result, the Asset event's extra: the evidence's headline, the target, the verdict.

    Which evidence keys are present depends on the check's kind (see :func:`event_extra`).
    """

    kind: str
    instance: str
    dag_id: str
    run_id: str
    check_day: str
    window: list[str]
    drift_share: float
    drifted_columns: list[str]
    prediction_drift: float | None
    roc_auc: float | None
    champion_roc_auc: float | None
    labelled_rows: int
    hit_rate: dict[str, float]
    baseline_hit_rate: dict[str, float] | None
    corpus_change_share: float
    corpus_drift: float | None
    query_drift: float | None
    report_uri: str
    mlflow_run_id: str
    reference: dict[str, Any]
    action: str
    target_dag_id: str
    signals: list[str]
    reasons: list[str]


def resolve_run(config: DriftCheckConfig, params: Mapping[str, Any] | None) -> DriftCheckConfig:
    """The config with a manual run's trigger-form values (:data:`~pipelines.drift.config.DRIFT_FORM`) applied."""
    return cast(DriftCheckConfig, apply_form(config, DRIFT_FORM, params))


def check_drift(config: DriftCheckConfig, run_id: str, run_after: datetime, window_end: str | None = None,
                settings: LooplineSettings | None = None) -> TabularEvidence | RagEvidence:
    """Measure drift for the run's window; save and log the report; record the check.

    Raises:
        NothingToCheck: no reference yet (no champion / no live index) or no current data.
        SchemaMismatch: reference and current disagree on columns or types.
        ReferenceUnavailable: the champion's lineage points at a missing or changed training set.
    """
    settings = settings or get_settings()
    window = window_for(config, run_after.date(), window_end)
    if config.kind == "tabular":
        from pipelines.drift.tabular import check_tabular

        return check_tabular(config, run_id, run_after, window, settings)
    from pipelines.drift.rag import check_rag

    return check_rag(config, run_id, run_after, window, settings)


def judge_drift(config: DriftCheckConfig, evidence: DriftEvidence,
                settings: LooplineSettings | None = None) -> DriftVerdict:
    """Apply the thresholds to the evidence; record the verdict in the drift history."""
    from pipelines.drift import policy
    from pipelines.drift.history import open_history

    settings = settings or get_settings()
    if config.kind == "tabular":
        verdict = policy.judge_tabular(evidence, config.tabular)
    else:
        verdict = policy.judge_rag(evidence, config.rag)
    status = "drift" if verdict.drifted else "no_drift"
    history = open_history(settings)
    row = history.check(config.instance, evidence["run_id"])
    if row is not None:
        row.update(status=status, verdict=verdict.summary())
        history.record_check(**row)
    log.info("%s: %s", "DRIFT" if verdict.drifted else "no drift past the policy", verdict.summary())
    return {"drifted": verdict.drifted, "signals": verdict.signals, "reasons": verdict.reasons}


def event_extra(evidence: DriftEvidence, verdict: DriftVerdict, target: TargetAsset) -> EventExtra:
    """The Asset event's extra: the evidence a person (or the triggered run) needs, JSON only."""
    keep = ("kind", "instance", "dag_id", "run_id", "check_day", "window", "drift_share", "drifted_columns",
            "prediction_drift", "roc_auc", "champion_roc_auc", "performance_metric", "performance",
            "champion_performance", "labelled_rows", "hit_rate", "baseline_hit_rate",
            "corpus_change_share", "corpus_drift", "query_drift", "report_uri", "mlflow_run_id")
    found: Mapping[str, Any] = evidence
    extra: dict[str, Any] = {k: found[k] for k in keep if k in found}
    if "reference" in found:
        ref = found["reference"]
        extra["reference"] = {k: ref[k] for k in ("model", "version", "run_id", "dataset_digest", "live_version",
                                                   "corpus_digest") if k in ref}
    extra.update(action=target.action, target_dag_id=target.dag_id, signals=verdict["signals"],
                 reasons=verdict["reasons"])
    return cast(EventExtra, extra)


def emit_trigger(config: DriftCheckConfig, target: TargetAsset, evidence: DriftEvidence, verdict: DriftVerdict,
                 run_id: str, run_after: datetime, try_number: int | None = None,
                 settings: LooplineSettings | None = None,
                 already_emitted: Callable[[], bool] | None = None) -> EventExtra:
    """The extra of the Asset event to emit, after the guard rails; the emission is claimed in the drift history.

    Exactly once per DAG run, across a killed worker and its retry: the claim (a row keyed by Asset and DAG
    run) is committed before Airflow records the event, which it does only when the task succeeds. So when a
    retry finds this run's claim, it asks ``already_emitted`` whether Airflow holds an event of this run:
    yes, the emission is done (dedupe, skipped); no, the earlier try died between the claim and the event,
    and this one emits the claimed extra again, without judging the guard rails a second time (the claim
    already counts in them). ``already_emitted=None`` (a caller that cannot ask Airflow) takes a claim as
    emitted: at most once. The ``drift:<instance>`` instance lock is held from reading the claims to the
    return.

    Raises:
        NotEmitted: no drift past the policy, or a guard rail (dedupe, cap, cooldown) says no.
    """
    from functools import partial

    from pipelines.core.faults import crash_point
    from pipelines.core.locks import instance_lock
    from pipelines.drift import policy
    from pipelines.drift.history import open_history

    settings = settings or get_settings()
    history = open_history(settings)
    if not verdict["drifted"]:
        history.set_action(config.instance, run_id, "none: no drift past the policy")
        raise NotEmitted(f"no drift past the policy, {target.name} not emitted: " + "; ".join(verdict["reasons"]))
    with instance_lock(f"drift:{config.instance}", settings=settings):
        claimed = history.emission(target.name, run_id)
        if claimed is not None:
            if already_emitted is None or already_emitted():
                raise NotEmitted(f"drift found, but {target.name} is not emitted: dedupe: this run ({run_id}) already "
                                 f"emitted {target.name}; a retry or a clear does not emit twice")
            log.warning("This run claimed %s in try %s, but Airflow holds no event of it (that try died before "
                        "it finished): emitting the claimed event now", target.name, claimed["try_number"])
            history.set_action(config.instance, run_id, f"emitted {target.name} → {target.dag_id}")
            _record_trigger(config, target, cast(EventExtra, claimed["extra"]), run_id, settings)
            return cast(EventExtra, claimed["extra"])
        extra = event_extra(evidence, verdict, target)
        rails = config.guard_rails
        decision = history.claim_emission(
            target.name, config.instance, run_id, run_after, try_number, extra,
            partial(policy.guard, target.name, run_id, run_after, cooldown_hours=rails.cooldown_hours,
                    max_triggers_per_day=rails.max_triggers_per_day))
        if not decision.emit:
            if not decision.reason.startswith("dedupe"):
                history.set_action(config.instance, run_id, f"not emitted: {decision.reason}")
            raise NotEmitted(f"drift found, but {target.name} is not emitted: {decision.reason}")
        crash_point("drift:after_claim")
        history.set_action(config.instance, run_id, f"emitted {target.name} → {target.dag_id}")
    _record_trigger(config, target, extra, run_id, settings)
    log.info("Emitting %s (starts %s): %s", target.name, target.dag_id, decision.reason)
    return extra


def _record_trigger(config: DriftCheckConfig, target: TargetAsset, extra: EventExtra, run_id: str,
                    settings: LooplineSettings) -> str:
    """The audit record of an emission (pipelines/audit): written before Airflow records the event, so a try that
    dies after it is retried and rewrites the same record."""
    from pipelines.audit.records import AuditEvent, git_commit, record

    return record(AuditEvent(
        kind="drift_trigger", subject=f"asset {target.name}", version=None, decision="emitted",
        reason="; ".join(extra.get("reasons") or []) or "drift past the policy", at=datetime.now(UTC),
        key=f"drift:{target.name}:{run_id}", evidence=dict(extra),
        provenance={"git_commit": git_commit(), "drift_check": config.dag_id},
        source={"dag_id": config.dag_id, "run_id": run_id, "target_dag_id": target.dag_id}), settings)
