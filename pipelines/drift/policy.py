"""When a drift check asks for retraining or re-indexing: pure functions, no I/O.

Two questions, answered separately:

1. :func:`judge_tabular` / :func:`judge_rag`: does the evidence pass the configured thresholds? Each
   signal that fires adds a reason in words.
2. :func:`guard`: may this run emit the target's Asset now? Dedupe (this DAG run emitted already: a retry
   or a clear never emits twice), the cap (``max_triggers_per_day`` per target and UTC day) and the
   cooldown (no second trigger of the same target within ``cooldown_hours``), judged on the emissions
   recorded in the drift history and the run's own logical time, never the wall clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipelines.training.config import higher_is_better

EPSILON = 1e-9


@dataclass(frozen=True)
class Verdict:
    """Whether drift passed the thresholds, and why (one reason per signal that fired or was judged)."""

    drifted: bool
    reasons: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "; ".join(self.reasons)


def judge_tabular(evidence: Mapping[str, Any], thresholds) -> Verdict:
    """Judge a tabular check's evidence against ``thresholds`` (a TabularDrift config).

    Args:
        evidence: ``drift_share``, ``drifted_columns``, ``columns``, ``prediction_drift`` (score or
            None) and ``prediction_drifted`` (Evidently's test outcome), ``roc_auc`` and
            ``champion_roc_auc`` (None until enough labels arrived), ``labelled_rows``; for a regression,
            ``performance_metric`` (rmse, mae or r2), ``performance`` and ``champion_performance``.
    """
    reasons, signals = [], []
    share = evidence["drift_share"]
    drifted = evidence.get("drifted_columns") or []
    if share + EPSILON >= thresholds.drift_share:
        signals.append("data_drift")
        reasons.append(f"data drift: {len(drifted)} of {evidence['columns']} feature columns drifted "
                       f"(share {share:.2f} >= {thresholds.drift_share:.2f}): {', '.join(drifted)}")
    else:
        reasons.append(f"data drift below the bar: share {share:.2f} < {thresholds.drift_share:.2f}"
                       + (f" ({', '.join(drifted)})" if drifted else ""))
    score = evidence.get("prediction_drift")
    if evidence.get("prediction_drifted"):  # Evidently's own test: right for distances and p-values alike
        signals.append("prediction_drift")
        reasons.append(f"prediction drift: {thresholds.num_method} score {score:.3f}, threshold "
                       f"{thresholds.prediction_threshold:.3f}")
    auc, champion_auc = evidence.get("roc_auc"), evidence.get("champion_roc_auc")
    metric = evidence.get("performance_metric")
    if auc is not None and champion_auc is not None:
        drop = champion_auc - auc
        if drop > thresholds.performance_drop + EPSILON:
            signals.append("performance")
            reasons.append(f"performance: ROC AUC {auc:.4f} on {evidence.get('labelled_rows')} late labels is "
                           f"{drop:.4f} below the champion's {champion_auc:.4f} "
                           f"(allowed {thresholds.performance_drop:.4f})")
    elif metric not in (None, "roc_auc"):
        reason = _regression_performance(metric, evidence.get("performance"), evidence.get("champion_performance"),
                                         evidence.get("labelled_rows"), thresholds.performance_drop)
        if reason is not None:
            signals.append("performance")
            reasons.append(reason)
    return Verdict(bool(signals), reasons, signals)


def _regression_performance(metric: str, value: float | None, champion: float | None, rows: int | None,
                            allowed: float) -> str | None:
    """Why a regression's late-label ``metric`` fires, or None.

    RMSE and MAE are in the target's units, so their bar is relative: more than ``allowed`` (0.08: 8 %) above
    the champion's holdout value. R² has no unit: more than ``allowed`` below it.
    """
    if value is None or champion is None:
        return None
    if not higher_is_better(metric):  # RMSE, MAE
        if champion <= 0:
            return None
        worse = (value - champion) / champion
        if worse <= allowed + EPSILON:
            return None
        return (f"performance: {metric} {value:.4f} on {rows} late labels is {worse:.0%} above the champion's "
                f"{champion:.4f} (lower is better; allowed +{allowed:.0%})")
    drop = champion - value
    if drop <= allowed + EPSILON:
        return None
    return (f"performance: {metric} {value:.4f} on {rows} late labels is {drop:.4f} below the champion's "
            f"{champion:.4f} (allowed {allowed:.4f})")


def judge_rag(evidence: Mapping[str, Any], thresholds) -> Verdict:
    """Judge a retrieval check's evidence against ``thresholds`` (a RagDrift config).

    Args:
        evidence: ``hit_rate`` and ``baseline_hit_rate`` (``{mode: value}``), ``corpus_change_share``,
            ``corpus_drift`` and ``query_drift`` (cosine distances, or None when not measured).
    """
    reasons, signals = [], []
    baseline = evidence.get("baseline_hit_rate") or {}
    for mode, now in sorted((evidence.get("hit_rate") or {}).items()):
        if mode in baseline:
            drop = baseline[mode] - now
            if drop > thresholds.hit_rate_drop + EPSILON:
                signals.append("hit_rate")
                reasons.append(f"retrieval: {mode} hit@{evidence.get('k')} fell {baseline[mode]:.3f} → {now:.3f} "
                               f"(-{drop:.3f}, allowed -{thresholds.hit_rate_drop:.3f})")
    change = evidence.get("corpus_change_share")
    if change is not None and change + EPSILON >= thresholds.corpus_change_share:
        signals.append("corpus_change")
        reasons.append(f"corpus: {change:.0%} of chunks differ from the live index "
                       f"(>= {thresholds.corpus_change_share:.0%})")
    for name, key, bound in (("corpus embeddings", "corpus_drift", thresholds.corpus_drift_threshold),
                             ("query embeddings", "query_drift", thresholds.query_drift_threshold)):
        score = evidence.get(key)
        if score is not None and score + EPSILON >= bound:
            signals.append(key)
            reasons.append(f"{name}: drift score {score:.3f} >= {bound:.3f}")
    if not signals:
        reasons.append("no retrieval signal past its threshold")
    return Verdict(bool(signals), reasons, signals)


@dataclass(frozen=True)
class Emission:
    """One recorded Asset event of a drift check."""

    asset: str
    dag_run_id: str
    run_after: datetime


@dataclass(frozen=True)
class GuardDecision:
    emit: bool
    reason: str


def guard(asset: str, dag_run_id: str, run_after: datetime, emissions: Sequence[Emission], *,
          cooldown_hours: float, max_triggers_per_day: int) -> GuardDecision:
    """May the run ``dag_run_id`` (logical time ``run_after``) emit ``asset``, given earlier emissions?

    Checked in this order: dedupe, cap, cooldown. Emissions of other assets are ignored.
    """
    mine = [e for e in emissions if e.asset == asset]
    for e in mine:
        if e.dag_run_id == dag_run_id:
            return GuardDecision(False, f"dedupe: this run ({dag_run_id}) already emitted {asset}; a retry or "
                                        "a clear does not emit twice")
    if max_triggers_per_day <= 0:
        return GuardDecision(False, f"cap: guard_rails.max_triggers_per_day is 0, so {asset} is never emitted "
                                    "(report only)")
    same_day = [e for e in mine if e.run_after.date() == run_after.date()]
    if len(same_day) >= max_triggers_per_day:
        return GuardDecision(False, f"cap: {asset} was emitted {len(same_day)} time(s) on {run_after.date()} "
                                    f"(max {max_triggers_per_day} per day), last by {same_day[-1].dag_run_id}")
    # Either side: a re-run of an old day must not retrain right next to a newer trigger either.
    near = [e for e in mine if abs(run_after - e.run_after) < timedelta(hours=cooldown_hours)]
    if near:
        last = min(near, key=lambda e: abs(run_after - e.run_after))
        hours = (run_after - last.run_after).total_seconds() / 3600
        when = f"{hours:.1f} h earlier" if hours >= 0 else f"{-hours:.1f} h later"
        return GuardDecision(False, f"cooldown: {asset} was emitted {when} by {last.dag_run_id} "
                                    f"(cooldown {cooldown_hours:g} h)")
    return GuardDecision(True, f"emit {asset}: no emission by this run, {len(same_day)} of "
                               f"{max_triggers_per_day} today, outside the {cooldown_hours:g} h cooldown")
