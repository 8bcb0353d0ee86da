"""The steps of the ``drift_check`` template, one function per task.

1. :func:`check_drift` measures (tabular: Evidently data and prediction drift, ROC AUC on late labels;
   rag: hit rate, corpus and query embeddings), saves the HTML report under
   ``reports/<instance>/drift/<day>.html``, logs it to MLflow (experiment ``<instance>_drift``) and
   records the check in the drift history. No reference yet (no champion, no live index) or no current
   data: :class:`NothingToCheck`, the run is skipped with that reason. A schema mismatch:
   :class:`~pipelines.drift.tabular.SchemaMismatch`, the run fails and triggers nothing.
2. :func:`judge_drift` applies the thresholds (:mod:`pipelines.drift.policy`).
3. :func:`emit_trigger` applies the guard rails (dedupe by DAG run, daily cap, cooldown) on the drift
   history and, when they allow, records the emission and returns the Asset event's extra; otherwise
   :class:`NotEmitted` says why.

Every step is keyed by the DAG run: re-running it replaces its history row and lands in the same MLflow
run, and a second emission by the same run is impossible.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.core.settings import LooplineSettings, get_settings
from pipelines.core.windows import DayWindow
from pipelines.core.errors import NotRetryable

log = logging.getLogger(__name__)

REFERENCE_SEED = 0
META_COLUMNS = ("event_timestamp", "label", "label_day", "split")


class NothingToCheck(Exception):
    """No reference yet, or no current data: the check is skipped, and the message says why."""


class ReferenceUnavailable(NotRetryable, ValueError):
    """The champion's lineage points at a training set that is gone or changed: fix the lineage or retrain."""


class NotEmitted(Exception):
    """The policy or a guard rail says no: the emit task is skipped, and the message says why."""


class CheckWindow(DayWindow):
    """Current data of the days ``[start, end)``; the report is named after ``end - 1``."""

    @property
    def check_day(self) -> date:
        return self.end - timedelta(days=1)


def window_for(config, run_after: date, window_end: str | None = None) -> CheckWindow:
    """``window_days`` days ending the day the run starts (or at ``window_end``, exclusive)."""
    return CheckWindow.ending(date.fromisoformat(window_end) if window_end else run_after, config.window_days)


def _history(settings: LooplineSettings):
    from pipelines.drift.history import DriftHistory, history_path

    return DriftHistory(history_path(settings))


def report_path(config, day: date, settings: LooplineSettings | None = None) -> Path:
    return (settings or get_settings()).reports_dir / config.instance / "drift" / f"{day.isoformat()}.html"


def _save_html(write, target: Path) -> Path:
    """Write an HTML report atomically (a reader never sees half a report)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    write(str(partial))
    os.replace(partial, target)
    return target


def log_to_mlflow(config, run_key: str, run_name: str, params: dict, metrics: dict, tags: dict,
                  artifact: Path | None, settings: LooplineSettings) -> str:
    """Log into the MLflow run of ``run_key`` (one per DAG run) in experiment ``<instance>_drift``.

    A re-run of the task lands in the same MLflow run; params already logged are not logged again.
    """
    import time

    from mlflow.entities import Metric, Param, RunTag

    from pipelines.core import tracking
    run_key = run_key.replace("'", "_")
    mlflow_client = tracking.client(settings)
    experiment = tracking.experiment_id(config.experiment_name, settings)
    found = mlflow_client.search_runs([experiment], filter_string=f"tags.`loopline.run_key` = '{run_key}'",
                                      max_results=1)
    if found:
        run_id, logged = found[0].info.run_id, found[0].data.params
    else:
        run = mlflow_client.create_run(experiment, run_name=run_name,
                                       tags={"loopline.run_key": run_key, "loopline.dag_id": config.dag_id})
        run_id, logged = run.info.run_id, {}
    stamp = int(time.time() * 1000)  # MLflow's bookkeeping, not business logic
    mlflow_client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), stamp, 0) for k, v in sorted(metrics.items()) if v is not None],
        params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items()) if k not in logged],
        tags=[RunTag(k, str(v)[:5000]) for k, v in sorted(tags.items())],
    )
    if artifact is not None:
        mlflow_client.log_artifact(run_id, str(artifact), artifact_path="drift_report")
    mlflow_client.set_terminated(run_id)
    return run_id


# --- tabular: reference ---------------------------------------------------------------------------------------

@dataclass
class Reference:
    """The champion and the training data it learned from, with the champion's scores on it."""

    model_name: str
    version: str
    run_id: str
    path: str
    digest: str
    numeric: list[str]
    categorical: list[str]
    champion_roc_auc: float | None
    frame: Any = field(repr=False, default=None)

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_name, "version": self.version, "run_id": self.run_id,
                "training_set": self.path, "dataset_digest": self.digest, "rows": len(self.frame)}


def _training_set_source(run) -> str | None:
    """The training-set path the champion's MLflow run logged as its dataset input."""
    for dataset_input in run.inputs.dataset_inputs or []:
        contexts = {t.value for t in dataset_input.tags if t.key == "mlflow.data.context"}
        if contexts and "training" not in contexts:
            continue
        try:
            source = json.loads(dataset_input.dataset.source)
        except (TypeError, ValueError):
            source = {"uri": dataset_input.dataset.source}
        uri = source.get("uri") or source.get("path")
        if uri:
            return uri.removeprefix("file://")
    return None


def _load_model(model_name: str, version: str, settings: LooplineSettings):
    import mlflow

    from pipelines.core import tracking
    tracking.configure_mlflow(settings)
    return mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")


def _predict(model, frame, features: list[str]):
    from pipelines.training.steps import _positive

    return _positive(model.predict(frame[features]))


def champion_reference(training, thresholds, settings: LooplineSettings) -> Reference:
    """The champion's training set (found through its MLflow lineage) with the champion's scores on it.

    The scored reference is kept under ``drift/<instance>/reference/`` per model version and dataset digest,
    so the model is loaded for it once.

    Raises:
        NothingToCheck: the model has no champion yet.
        ReferenceUnavailable: the champion's run names no training set, or the file is gone or changed.
    """
    import pandas as pd

    from pipelines.core import tracking
    from pipelines.training.dataset import dataset_digest

    champion = tracking.champion(training.model_name, settings)
    if champion is None:
        raise NothingToCheck(f"{training.model_name} has no champion yet, so there is no reference to compare "
                             f"with: run {training.dag_id} first; this check runs again on its schedule")
    run = tracking.client(settings).get_run(champion.run_id)
    path = _training_set_source(run)
    digest = run.data.params.get("dataset_digest") or champion.tags.get("dataset_digest")
    where = f"{training.model_name} v{champion.version} (run {champion.run_id})"
    if not path or not digest:
        raise ReferenceUnavailable(f"{where} logged no training-set input or dataset_digest: retrain it with "
                                   f"{training.dag_id} so that its lineage names its data")
    if not Path(path).exists():
        raise ReferenceUnavailable(f"the training set of {where}, {path}, is gone: restore it, or retrain with "
                                   f"{training.dag_id} to make a champion whose data exists")
    cache = settings.path("drift", training.instance, "reference",
                          f"{training.model_name}_v{champion.version}_{digest[:16]}.parquet")
    frame = pd.read_parquet(path)
    if dataset_digest(frame) != digest:
        raise ReferenceUnavailable(f"the training set of {where} at {path} changed since it was trained "
                                   f"(digest {dataset_digest(frame)[:12]}… ≠ {digest[:12]}…): restore it or retrain")
    features = _model_features(training.model_name, champion.version, frame, settings)
    numeric = [c for c in features if _is_numeric(frame[c])]
    categorical = [c for c in features if c not in numeric]
    if cache.exists():
        scored = pd.read_parquet(cache)
    else:
        if len(frame) > thresholds.reference_rows:
            frame = frame.sample(thresholds.reference_rows, random_state=REFERENCE_SEED)
        scored = frame[features].reset_index(drop=True)
        scored["prediction"] = _predict(_load_model(training.model_name, champion.version, settings), scored, features)
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f".{cache.name}.partial")
        scored.to_parquet(partial, index=False)
        os.replace(partial, cache)
        log.info("Scored the reference of %s with its champion: %d rows → %s", where, len(scored), cache)
    auc = run.data.metrics.get("holdout_roc_auc")
    return Reference(training.model_name, str(champion.version), champion.run_id, path, digest, numeric,
                     categorical, auc, scored)


def _is_numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


def _model_features(model_name: str, version: str, frame, settings: LooplineSettings) -> list[str]:
    """The champion's input columns, from its signature (else the training set minus its bookkeeping)."""
    try:
        import mlflow

        from pipelines.core import tracking
        tracking.configure_mlflow(settings)
        signature = mlflow.models.get_model_info(f"models:/{model_name}/{version}").signature
        names = list(signature.inputs.input_names()) if signature is not None else []
        if names:
            return names
    except Exception as exc:  # an old model without a signature still has its training set
        log.warning("No signature for %s v%s (%s): using the training set's columns", model_name, version, exc)
    return [c for c in frame.columns[2:] if c not in META_COLUMNS]


# --- tabular: current window ----------------------------------------------------------------------------------

def current_window(training, features_config, reference: Reference, window: CheckWindow,
                   settings: LooplineSettings):
    """Published features of the window's days, with the champion's batch predictions where they exist.

    Returns:
        (frame, info): the frame has the entity key, ``ds``, the features and ``prediction``; rows of days
        with no batch predictions of the champion version are scored here (``info`` counts both).

    Raises:
        NothingToCheck: no published features in the window.
    """
    import pandas as pd

    key = features_config.feast.entity_key
    offline = settings.path("offline", features_config.feast.project, features_config.dbt.mart)
    frames, days = [], []
    for day in window.days:
        path = offline / f"{day.isoformat()}.parquet"
        if path.exists():
            frames.append(pd.read_parquet(path))
            days.append(day)
    if not frames:
        raise NothingToCheck(f"no published features of {features_config.dag_id} for {window} under {offline}: "
                             "nothing to check yet")
    frame = pd.concat(frames, ignore_index=True)
    frame["ds"] = frame["ds"].astype(str)
    predictions = []
    for day in days:
        path = settings.path("predictions", training.instance, f"ds={day.isoformat()}", "predictions.parquet")
        if path.exists():
            scored = pd.read_parquet(path)
            scored = scored[scored["model_version"].astype(str) == reference.version]
            predictions.append(pd.DataFrame({key: scored[key], "ds": scored["ds"].astype(str),
                                             "prediction": scored["churn_probability"].astype(float)}))
    if predictions:
        frame = frame.merge(pd.concat(predictions, ignore_index=True), on=[key, "ds"], how="left")
    else:
        frame["prediction"] = float("nan")
    missing = frame["prediction"].isna()
    if missing.any():
        present = [c for c in reference.features if c in frame.columns]
        if len(present) == len(reference.features):
            model = _load_model(reference.model_name, reference.version, settings)
            rows = frame.loc[missing].dropna(subset=present)
            frame.loc[rows.index, "prediction"] = _predict(model, rows, reference.features)
    info = {"days": [str(d) for d in days], "rows": len(frame),
            "predictions_from_batch": int((~missing).sum()), "predictions_scored_here": int(missing.sum())}
    log.info("Current window %s: %d rows over %d day(s); predictions: %d from batch scoring, %d scored here",
             window, info["rows"], len(days), info["predictions_from_batch"], info["predictions_scored_here"])
    return frame, info


def late_label_performance(training, features_config, current, window: CheckWindow, min_labels: int,
                           settings: LooplineSettings) -> dict[str, Any]:
    """ROC AUC of the champion's scores on labels that arrived for the window (day D reads features of D-1).

    Returns:
        ``labelled_rows`` and ``roc_auc`` (None when fewer than ``min_labels`` rows or one class).
    """
    from pipelines.training.dataset import TrainingSetError, Window, load_labels

    key = features_config.feast.entity_key
    try:
        labels = load_labels(features_config, training, Window(window.start + timedelta(days=1),
                                                               window.end + timedelta(days=1)), settings)
    except TrainingSetError:
        return {"labelled_rows": 0, "roc_auc": None, "note": "no labels landed for the window yet"}
    labels["ds"] = [str(d - timedelta(days=1)) for d in labels["label_day"]]
    joined = labels.merge(current[[key, "ds", "prediction"]].dropna(), on=[key, "ds"], how="inner")
    if len(joined) < min_labels:
        return {"labelled_rows": len(joined), "roc_auc": None,
                "note": f"{len(joined)} labelled rows, fewer than min_labels {min_labels}: performance not judged"}
    from pipelines.drift.tabular import roc_auc

    auc = roc_auc(joined["label"], joined["prediction"])
    return {"labelled_rows": len(joined), "roc_auc": None if auc is None else round(auc, 4),
            "note": None if auc is not None else "one class only among the late labels"}


def check_tabular(config, run_id: str, run_after: datetime, window: CheckWindow,
                  settings: LooplineSettings) -> dict[str, Any]:
    """Tabular check: reference from the champion's lineage, current window, Evidently, late labels."""
    from pipelines.drift import tabular
    from pipelines.training.steps import features_config as features_of
    from pipelines.drift.targets import target_config

    training = target_config(config.tabular.training_config, "training")
    features_config = features_of(training)
    history = _history(settings)
    base = {"instance": config.instance, "kind": "tabular", "dag_run_id": run_id,
            "run_after": run_after.isoformat(), "check_day": str(window.check_day)}
    try:
        reference = champion_reference(training, config.tabular, settings)
        current, current_info = current_window(training, features_config, reference, window, settings)
    except NothingToCheck as exc:
        history.record_check(**base, status="skipped", verdict=str(exc), action="none: nothing to check")
        raise
    log.info("Reference: %s v%s's training set %s (%d rows, digest %s…); %d features",
             reference.model_name, reference.version, reference.path, len(reference.frame), reference.digest[:12],
             len(reference.features))
    try:
        result = tabular.drift_report(reference.frame, current, reference.numeric, reference.categorical, config.tabular)
    except tabular.SchemaMismatch as exc:
        message = (f"{config.dag_id} {window}: {exc} (reference: {reference.model_name} v{reference.version}'s "
                   f"training set {reference.path})")
        history.record_check(**base, status="failed", reference=reference.describe(), verdict=message,
                             action="none: schema mismatch")
        raise tabular.SchemaMismatch(message) from None
    performance = late_label_performance(training, features_config, current, window, config.tabular.min_labels,
                                         settings)
    html = _save_html(result.snapshot.save_html, report_path(config, window.check_day, settings))
    evidence = {
        "kind": "tabular", "instance": config.instance, "dag_id": config.dag_id, "run_id": run_id,
        "run_after": run_after.isoformat(), "window": [str(window.start), str(window.end)],
        "check_day": str(window.check_day), **result.evidence(),
        "roc_auc": performance["roc_auc"], "labelled_rows": performance["labelled_rows"],
        "performance_note": performance.get("note"),
        "champion_roc_auc": None if reference.champion_roc_auc is None else round(reference.champion_roc_auc, 4),
        "reference": reference.describe(), "current": current_info, "report_path": str(html),
        "report_uri": html.as_uri(),
    }
    metrics = {"drift_share": result.drift_share, "drifted_columns": len(result.drifted_columns),
               "prediction_drift": result.prediction_drift, "roc_auc": performance["roc_auc"],
               "champion_roc_auc": reference.champion_roc_auc, "labelled_rows": performance["labelled_rows"],
               "current_rows": current_info["rows"], "reference_rows": len(reference.frame),
               **{f"drift_score_{c}": s for c, s in result.column_scores.items()}}
    params = {"window_start": window.start, "window_end": window.end, "model_name": reference.model_name,
              "champion_version": reference.version, "champion_run_id": reference.run_id,
              "reference_training_set": reference.path, "reference_dataset_digest": reference.digest,
              "num_method": config.tabular.num_method, "cat_method": config.tabular.cat_method,
              "column_threshold": config.tabular.column_threshold, "drift_share_threshold": config.tabular.drift_share,
              "prediction_threshold": config.tabular.prediction_threshold,
              "performance_drop": config.tabular.performance_drop}
    evidence["mlflow_run_id"] = log_to_mlflow(
        config, run_id, f"drift {window.check_day}", params, metrics,
        {"loopline.drifted_columns": ",".join(result.drifted_columns) or "-"}, html, settings)
    history.record_check(**base, status="checked", drift_share=result.drift_share,
                         drifted_columns=result.drifted_columns, prediction_drift=result.prediction_drift,
                         roc_auc=performance["roc_auc"], champion_roc_auc=evidence["champion_roc_auc"],
                         report_uri=evidence["report_uri"], mlflow_run_id=evidence["mlflow_run_id"],
                         reference=reference.describe())
    log.info("Drift of %s %s: %d of %d columns drifted (share %.2f)%s; prediction drift %s; ROC AUC %s on %d "
             "late labels (champion %s); report %s", config.dag_id, window, len(result.drifted_columns),
             result.columns, result.drift_share,
             f" ({', '.join(result.drifted_columns)})" if result.drifted_columns else "",
             evidence["prediction_drift"], performance["roc_auc"], performance["labelled_rows"],
             evidence["champion_roc_auc"], html)
    return evidence


# --- the three steps --------------------------------------------------------------------------------------------

def check_drift(config, run_id: str, run_after: datetime, window_end: str | None = None,
                settings: LooplineSettings | None = None) -> dict[str, Any]:
    """Measure drift for the run's window; save and log the report; record the check.

    Raises:
        NothingToCheck: no reference yet (no champion / no live index) or no current data.
        SchemaMismatch: reference and current disagree on columns or types.
        ReferenceUnavailable: the champion's lineage points at a missing or changed training set.
    """
    settings = settings or get_settings()
    window = window_for(config, run_after.date(), window_end)
    if config.kind == "tabular":
        return check_tabular(config, run_id, run_after, window, settings)
    from pipelines.drift import rag

    return rag.check_rag(config, run_id, run_after, window, settings)


def judge_drift(config, evidence: dict[str, Any], settings: LooplineSettings | None = None) -> dict[str, Any]:
    """Apply the thresholds to the evidence; record the verdict in the drift history."""
    from pipelines.drift import policy

    settings = settings or get_settings()
    if config.kind == "tabular":
        verdict = policy.judge_tabular(evidence, config.tabular)
    else:
        verdict = policy.judge_rag(evidence, config.rag)
    status = "drift" if verdict.drifted else "no_drift"
    history = _history(settings)
    row = history.check(config.instance, evidence["run_id"])
    if row is not None:
        row.update(status=status, verdict=verdict.summary())
        history.record_check(**row)
    log.info("%s: %s", "DRIFT" if verdict.drifted else "no drift past the policy", verdict.summary())
    return {"drifted": verdict.drifted, "signals": verdict.signals, "reasons": verdict.reasons}


def event_extra(evidence: dict[str, Any], verdict: dict[str, Any], target) -> dict[str, Any]:
    """The Asset event's extra: the evidence a person (or the triggered run) needs, JSON only."""
    keep = ("kind", "instance", "dag_id", "run_id", "check_day", "window", "drift_share", "drifted_columns",
            "prediction_drift", "roc_auc", "champion_roc_auc", "labelled_rows", "hit_rate", "baseline_hit_rate",
            "corpus_change_share", "corpus_drift", "query_drift", "report_uri", "mlflow_run_id")
    extra = {k: evidence[k] for k in keep if k in evidence}
    if "reference" in evidence:
        ref = evidence["reference"]
        extra["reference"] = {k: ref[k] for k in ("model", "version", "run_id", "dataset_digest", "live_version",
                                                   "corpus_digest") if k in ref}
    extra.update(action=target.action, target_dag_id=target.dag_id, signals=verdict["signals"],
                 reasons=verdict["reasons"])
    return extra


def emit_trigger(config, target, evidence: dict[str, Any], verdict: dict[str, Any], run_id: str,
                 run_after: datetime, try_number: int | None = None,
                 settings: LooplineSettings | None = None) -> dict[str, Any]:
    """The extra of the Asset event to emit, after the guard rails; the emission is recorded.

    Raises:
        NotEmitted: no drift past the policy, or a guard rail (dedupe, cap, cooldown) says no.
    """
    from functools import partial

    from pipelines.drift import policy

    settings = settings or get_settings()
    history = _history(settings)
    if not verdict["drifted"]:
        history.set_action(config.instance, run_id, "none: no drift past the policy")
        raise NotEmitted(f"no drift past the policy, {target.name} not emitted: " + "; ".join(verdict["reasons"]))
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
    history.set_action(config.instance, run_id, f"emitted {target.name} → {target.dag_id}")
    log.info("Emitting %s (starts %s): %s", target.name, target.dag_id, decision.reason)
    return extra
