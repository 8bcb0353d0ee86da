"""Tabular drift with Evidently: per-column data drift, prediction drift, and performance on late labels.

The measures are pure functions on DataFrames (pandas and Evidently are imported inside them):
:func:`drift_report` runs one Evidently ``Report``: ``DataDriftPreset`` over the model's feature columns
(per-column drift tests and the share of drifted columns) and a ``ValueDrift`` of the prediction column, and
reads Evidently's own test outcomes, so the per-column verdict follows whichever method the config names
(distances or p-values).

:func:`check_tabular` is the check the ``drift_check`` DAG runs for ``kind: tabular``: the reference is the
champion's training set, found through its MLflow lineage and scored by the champion
(:func:`champion_reference`); the current data are the window's published features with the champion's
batch predictions (:func:`current_window`); performance is ROC AUC (binary) or the promotion metric
(regression: RMSE, MAE or R²) on the labels that arrived since (:func:`late_label_performance`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pipelines.core.errors import NotRetryable
from pipelines.core.files import write_atomic
from pipelines.core.home import DataHome
from pipelines.drift.checks import (
    CheckWindow,
    NothingToCheck,
    ReferenceUnavailable,
    TabularEvidence,
    evidence_head,
    history_row,
    log_check,
    report_path,
)

if TYPE_CHECKING:
    from pipelines.core.settings import LooplineSettings
    from pipelines.drift.config import DriftCheckConfig, TabularDrift
    from pipelines.drift.history import DriftHistory

log = logging.getLogger(__name__)

PREDICTION = "prediction"
REFERENCE_SEED = 0
META_COLUMNS = ("event_timestamp", "label", "label_day", "split")


class SchemaMismatch(NotRetryable, ValueError):
    """The current window does not have the reference's columns or types: nothing is judged or triggered."""


def _kind(dtype) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "categorical"


def check_schema(reference, current, numeric: Sequence[str], categorical: Sequence[str], *,
                 reference_name: str = "the reference", current_name: str = "the current window") -> None:
    """Both frames carry every feature column, numeric ones as numbers and categorical ones as text.

    Raises:
        SchemaMismatch: naming each missing column and each column whose type differs.
    """
    problems = []
    for name, frame in ((reference_name, reference), (current_name, current)):
        missing = [c for c in [*numeric, *categorical] if c not in frame.columns]
        if missing:
            problems.append(f"{name} lacks {', '.join(missing)}")
    if not problems:
        for column in numeric:
            for name, frame in ((reference_name, reference), (current_name, current)):
                if _kind(frame[column].dtype) != "numeric":
                    problems.append(f"{column} is numeric in the model but {frame[column].dtype} in {name}")
        for column in categorical:
            kinds = {_kind(reference[column].dtype), _kind(current[column].dtype)}
            if kinds != {"categorical"}:
                problems.append(f"{column} is categorical in the model but {reference[column].dtype} in "
                                f"{reference_name} and {current[column].dtype} in {current_name}")
    if problems:
        raise SchemaMismatch(f"schema mismatch between {reference_name} and {current_name}: "
                             + "; ".join(problems) + ". Nothing was judged and nothing was triggered: fix the "
                             "features, or retrain so that the champion matches them")


@dataclass(frozen=True)
class DriftResult:
    """What one Evidently report found."""

    columns: int
    drifted_columns: list[str]
    drift_share: float
    column_scores: dict[str, float]
    prediction_drift: float | None
    prediction_drifted: bool
    snapshot: Any = field(repr=False, default=None)

    def evidence(self) -> dict[str, Any]:
        return {"columns": self.columns, "drifted_columns": self.drifted_columns,
                "drift_share": round(self.drift_share, 4),
                "column_scores": {k: round(v, 5) for k, v in self.column_scores.items()},
                "prediction_drift": None if self.prediction_drift is None else round(self.prediction_drift, 5),
                "prediction_drifted": self.prediction_drifted}


def build_report(numeric: Sequence[str], categorical: Sequence[str], thresholds, *, with_prediction: bool):
    """The Evidently ``Report`` a check runs (also what the benchmark calls directly)."""
    from evidently import Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    metrics = [DataDriftPreset(columns=[*numeric, *categorical], num_method=thresholds.num_method,
                               cat_method=thresholds.cat_method, threshold=thresholds.column_threshold,
                               drift_share=thresholds.drift_share)]
    if with_prediction:
        metrics.append(ValueDrift(column=PREDICTION, method=thresholds.num_method,
                                  threshold=thresholds.prediction_threshold))
    return Report(metrics, include_tests=True)


def datasets(reference, current, numeric: Sequence[str], categorical: Sequence[str], with_prediction: bool):
    """Evidently ``Dataset``s of both frames with an explicit data definition (no type guessing)."""
    from evidently import DataDefinition, Dataset

    columns = [*numeric, *categorical, *([PREDICTION] if with_prediction else [])]
    definition = DataDefinition(numerical_columns=[*numeric, *([PREDICTION] if with_prediction else [])],
                                categorical_columns=list(categorical))
    return (Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition))


def drift_report(reference, current, numeric: Sequence[str], categorical: Sequence[str], thresholds) -> DriftResult:
    """Evidently data drift of the feature columns and drift of the prediction column, current vs reference.

    Args:
        reference, current: frames with the feature columns and, when both have it, ``prediction``.
        thresholds: a TabularDrift config (methods, per-column and prediction thresholds, drift share).

    Raises:
        SchemaMismatch: see :func:`check_schema`.
    """
    check_schema(reference, current, numeric, categorical)
    with_prediction = PREDICTION in reference.columns and PREDICTION in current.columns
    report = build_report(numeric, categorical, thresholds, with_prediction=with_prediction)
    current_ds, reference_ds = datasets(reference, current, numeric, categorical, with_prediction)
    snapshot = report.run(current_ds, reference_ds)
    return summarize(snapshot, [*numeric, *categorical])


def summarize(snapshot, features: Sequence[str]) -> DriftResult:
    """Per-column scores from the ``ValueDrift`` metrics, drifted columns from Evidently's failed tests."""
    result = snapshot.dict()
    scores: dict[str, float] = {}
    for metric in result["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            scores[config["column"]] = float(metric["value"])
    failed = set()
    for test in result.get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        if params.get("type", "").endswith("ValueDrift") and test.get("status") == "FAIL":
            failed.add(params["column"])
    drifted = [c for c in features if c in failed]
    return DriftResult(
        columns=len(features), drifted_columns=drifted, drift_share=len(drifted) / len(features) if features else 0.0,
        column_scores={c: scores[c] for c in features if c in scores},
        prediction_drift=scores.get(PREDICTION), prediction_drifted=PREDICTION in failed, snapshot=snapshot,
    )


def roc_auc(labels, scores) -> float | None:
    """ROC AUC of ``scores`` against 0/1 ``labels``; None when only one class is present."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, np.asarray(scores)))


# --- the reference: the champion's training set, scored by the champion --------------------------------------

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
    # The champion's holdout metrics by name (``rmse``, ``roc_auc``…), from its MLflow run's ``holdout_<metric>``.
    champion_metrics: dict[str, float] = field(default_factory=dict)

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
    """The champion through Loopline's trusted-types allowlist (never pickle, never the artifact's own list).

    Raises:
        UntrustedModel: the version is pickle-only or holds untrusted types; nothing from it ran.
    """
    from pipelines.core.trusted_models import load_registered_model

    return load_registered_model(model_name, version, settings)


def _predict(model, frame, features: list[str], task: str = "binary"):
    """What score_batch writes in the prediction column (probability, class id or value, by task), as floats."""
    from pipelines.training.steps import served_columns

    return served_columns(task, model, frame[features], PREDICTION)[PREDICTION].astype(float)


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
    # The training set's columns are the entity key(s) and event_timestamp, then bookkeeping and the features.
    columns = list(frame.columns)
    after_keys = columns[columns.index("event_timestamp") + 1:] if "event_timestamp" in columns else columns[2:]
    return [c for c in after_keys if c not in META_COLUMNS]


def _champion_training_set(training, champion, run,
                           settings: LooplineSettings | None = None) -> tuple[str, str, Any]:
    """The training set the champion's lineage names, checked against its digest: (path, digest, frame).

    Raises:
        ReferenceUnavailable: the run names no training set or digest, or the file is gone or changed.
        PathOutsideDataHome: the path it names lies outside the data home; nothing was read.
    """
    import pandas as pd

    from pipelines.training.dataset import dataset_digest

    path = _training_set_source(run)
    digest = run.data.params.get("dataset_digest") or champion.tags.get("dataset_digest")
    where = f"{training.model_name} v{champion.version} (run {champion.run_id})"
    if not path or not digest:
        raise ReferenceUnavailable(f"{where} logged no training-set input or dataset_digest: retrain it with "
                                   f"{training.dag_id} so that its lineage names its data")
    # The registry is writable by more than Loopline: read only a training set under the data home.
    DataHome(settings).require_inside(path, f"the training-set input of {where}")
    if not Path(path).exists():
        raise ReferenceUnavailable(f"the training set of {where}, {path}, is gone: restore it, or retrain with "
                                   f"{training.dag_id} to make a champion whose data exists")
    frame = pd.read_parquet(path)
    if dataset_digest(frame) != digest:
        raise ReferenceUnavailable(f"the training set of {where} at {path} changed since it was trained "
                                   f"(digest {dataset_digest(frame)[:12]}… ≠ {digest[:12]}…): restore it or retrain")
    return path, digest, frame


def champion_reference(training, thresholds: TabularDrift, settings: LooplineSettings) -> Reference:
    """The champion's training set (found through its MLflow lineage) with the champion's scores on it.

    The scored reference is kept under ``drift/<instance>/reference/`` per model version and dataset digest,
    so the model is loaded for it once.

    Raises:
        NothingToCheck: the model has no champion yet.
        ReferenceUnavailable: the champion's run names no training set, or the file is gone or changed.
        PathOutsideDataHome: the champion's run names a training set outside the data home.
        UntrustedModel: the champion is pickle-only or holds untrusted types (loaded through the allowlist).
    """
    import pandas as pd

    from pipelines.core import tracking

    champion = tracking.champion(training.model_name, settings)
    if champion is None:
        raise NothingToCheck(f"{training.model_name} has no champion yet, so there is no reference to compare "
                             f"with: run {training.dag_id} first; this check runs again on its schedule")
    run = tracking.client(settings).get_run(champion.run_id)
    path, digest, frame = _champion_training_set(training, champion, run, settings)
    features = _model_features(training.model_name, champion.version, frame, settings)
    numeric = [c for c in features if _is_numeric(frame[c])]
    categorical = [c for c in features if c not in numeric]
    cache = DataHome(settings).drift(training.instance, "reference",
                                     f"{training.model_name}_v{champion.version}_{digest[:16]}.parquet")
    if cache.exists():
        scored = pd.read_parquet(cache)
    else:
        if len(frame) > thresholds.reference_rows:
            frame = frame.sample(thresholds.reference_rows, random_state=REFERENCE_SEED)
        scored = frame[features].reset_index(drop=True)
        scored["prediction"] = _predict(_load_model(training.model_name, champion.version, settings), scored, features,
                                      training.task)
        write_atomic(cache, lambda partial: scored.to_parquet(partial, index=False))
        log.info("Scored the reference of %s v%s (run %s) with its champion: %d rows → %s", training.model_name,
                 champion.version, champion.run_id, len(scored), cache)
    auc = run.data.metrics.get("holdout_roc_auc")
    holdout = {k.removeprefix("holdout_"): float(v) for k, v in run.data.metrics.items() if k.startswith("holdout_")}
    return Reference(training.model_name, str(champion.version), champion.run_id, path, digest, numeric,
                     categorical, auc, scored, holdout)


# --- the current window ----------------------------------------------------------------------------------------

def _batch_predictions(training, keys: list[str], version: str, days, settings: LooplineSettings):
    """The champion version's batch predictions of ``days`` (``keys``, ``ds``, ``prediction``), or None.

    The score column is the one the training config names (``TrainingConfig.prediction_name``).

    Raises:
        SchemaMismatch: a predictions file lacks that column (written under another name): nothing is judged.
    """
    import pandas as pd

    home = DataHome(settings)
    score = training.prediction_name
    predictions = []
    for day in days:
        path = home.predictions(training.instance, day)
        if path.exists():
            scored = pd.read_parquet(path)
            if score not in scored.columns:
                raise SchemaMismatch(
                    f"{path} has no column {score!r}, the prediction column {training.dag_id} names "
                    f"(prediction_column; columns there: {', '.join(scored.columns)}): set prediction_column in "
                    f"dags/configs/{training.dag_id}.yaml to the name these files use, or re-run its score_batch")
            scored = scored[scored["model_version"].astype(str) == version]
            predictions.append(pd.DataFrame({**{key: scored[key] for key in keys}, "ds": scored["ds"].astype(str),
                                             "prediction": scored[score].astype(float)}))
    return pd.concat(predictions, ignore_index=True) if predictions else None


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

    from pipelines.training.config import entity_keys

    keys = entity_keys(features_config)
    offline = DataHome(settings).offline(features_config.feast.project, features_config.dbt.mart)
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
    predictions = _batch_predictions(training, keys, reference.version, days, settings)
    if predictions is not None:
        frame = frame.merge(predictions, on=[*keys, "ds"], how="left")
    else:
        frame["prediction"] = float("nan")
    missing = frame["prediction"].isna()
    if missing.any():
        present = [c for c in reference.features if c in frame.columns]
        if len(present) == len(reference.features):
            model = _load_model(reference.model_name, reference.version, settings)
            rows = frame.loc[missing].dropna(subset=present)
            frame.loc[rows.index, "prediction"] = _predict(model, rows, reference.features, training.task)
    info = {"days": [str(d) for d in days], "rows": len(frame),
            "predictions_from_batch": int((~missing).sum()), "predictions_scored_here": int(missing.sum())}
    log.info("Current window %s: %d rows over %d day(s); predictions: %d from batch scoring, %d scored here",
             window, info["rows"], len(days), info["predictions_from_batch"], info["predictions_scored_here"])
    return frame, info


def performance_metric(training) -> str | None:
    """The metric judged on late labels: ROC AUC for ``binary``, the promotion metric for ``regression``
    (``rmse``, ``mae`` or ``r2``), none for ``multiclass``."""
    return {"binary": "roc_auc", "regression": training.policy.metric}.get(training.task)


def regression_metric(metric: str, labels, predictions) -> float:
    """``rmse``, ``mae`` or ``r2`` of ``predictions`` against ``labels``: the training holdout's own scorers, so
    the late labels are measured exactly as the champion was."""
    import numpy as np

    from pipelines.training.evaluation import scorers

    known = scorers("regression")
    if metric not in known:
        raise ValueError(f"no late-label measure for metric {metric!r}; known: {', '.join(known)}")
    return known[metric](np.asarray(labels, dtype=float), np.asarray(predictions, dtype=float))


def late_label_performance(training, features_config, current, window: CheckWindow, min_labels: int,
                           settings: LooplineSettings) -> dict[str, Any]:
    """The champion's performance on labels that arrived for the window (day D reads features of D-1).

    ROC AUC of its scores for a ``binary`` task; for ``regression`` the training config's promotion metric
    (``rmse``, ``mae`` or ``r2``) of its predicted values; not judged for ``multiclass``.

    Returns:
        ``labelled_rows``, ``metric`` (its name, or None), ``value`` (None when fewer than ``min_labels`` rows,
        or one class), ``roc_auc`` (``value`` for a binary task, else None) and ``note``.
    """
    from pipelines.training.config import entity_keys
    from pipelines.training.dataset import TrainingSetError, Window, load_labels

    keys = entity_keys(features_config)
    metric = performance_metric(training)

    def result(rows: int, value: float | None, note: str | None) -> dict[str, Any]:
        value = None if value is None else round(value, 4)
        return {"labelled_rows": rows, "metric": metric, "value": value,
                "roc_auc": value if metric == "roc_auc" else None, "note": note}

    if metric is None:  # macro-F1 of a few hundred late labels says little; the prediction column's drift does
        return result(0, None, f"performance on late labels is judged for binary and regression tasks only "
                               f"(task {training.task})")
    try:
        labels = load_labels(features_config, training, Window(window.start + timedelta(days=1),
                                                               window.end + timedelta(days=1)), settings)
    except TrainingSetError:
        return result(0, None, "no labels landed for the window yet")
    labels["ds"] = [str(d - timedelta(days=1)) for d in labels["label_day"]]
    joined = labels.merge(current[[*keys, "ds", "prediction"]].dropna(), on=[*keys, "ds"], how="inner")
    if len(joined) < min_labels:
        return result(len(joined), None,
                      f"{len(joined)} labelled rows, fewer than min_labels {min_labels}: performance not judged")
    if metric == "roc_auc":
        auc = roc_auc(joined["label"], joined["prediction"])
        return result(len(joined), auc, None if auc is not None else "one class only among the late labels")
    return result(len(joined), regression_metric(metric, joined["label"], joined["prediction"]), None)


# --- the check ---------------------------------------------------------------------------------------------------

def _drift_against(config: DriftCheckConfig, reference: Reference, current, window: CheckWindow,
                   history: DriftHistory, row: dict[str, Any]) -> DriftResult:
    """:func:`drift_report` of the window against the reference; a schema mismatch is recorded as failed."""
    try:
        return drift_report(reference.frame, current, reference.numeric, reference.categorical, config.tabular)
    except SchemaMismatch as exc:
        message = (f"{config.dag_id} {window}: {exc} (reference: {reference.model_name} v{reference.version}'s "
                   f"training set {reference.path})")
        history.record_check(**row, status="failed", reference=reference.describe(), verdict=message,
                             action="none: schema mismatch")
        raise SchemaMismatch(message) from None


def _mlflow_params(config: DriftCheckConfig, window: CheckWindow, reference: Reference) -> dict[str, Any]:
    t = config.tabular
    return {"window_start": window.start, "window_end": window.end, "model_name": reference.model_name,
            "champion_version": reference.version, "champion_run_id": reference.run_id,
            "reference_training_set": reference.path, "reference_dataset_digest": reference.digest,
            "num_method": t.num_method, "cat_method": t.cat_method, "column_threshold": t.column_threshold,
            "drift_share_threshold": t.drift_share, "prediction_threshold": t.prediction_threshold,
            "performance_drop": t.performance_drop}


def _mlflow_metrics(result: DriftResult, performance: dict[str, Any], reference: Reference,
                    current_info: dict[str, Any]) -> dict[str, float | None]:
    metric = performance.get("metric")
    other = ({f"late_{metric}": performance["value"], f"champion_{metric}": reference.champion_metrics.get(metric)}
             if metric not in (None, "roc_auc") else {})
    return {"drift_share": result.drift_share, "drifted_columns": len(result.drifted_columns),
            "prediction_drift": result.prediction_drift, "roc_auc": performance["roc_auc"],
            "champion_roc_auc": reference.champion_roc_auc, "labelled_rows": performance["labelled_rows"],
            "current_rows": current_info["rows"], "reference_rows": len(reference.frame), **other,
            **{f"drift_score_{c}": s for c, s in result.column_scores.items()}}


def check_tabular(config: DriftCheckConfig, run_id: str, run_after: datetime, window: CheckWindow,
                  settings: LooplineSettings) -> TabularEvidence:
    """Tabular check: reference from the champion's lineage, current window, Evidently, late labels.

    Raises:
        NothingToCheck: the model has no champion yet, or no features were published in the window.
        ReferenceUnavailable: the champion's lineage points at a missing or changed training set.
        SchemaMismatch: reference and current disagree on columns or types (recorded as a failed check).
    """
    from pipelines.drift.history import open_history
    from pipelines.drift.targets import target_config
    from pipelines.training.steps import features_config as features_of

    training = target_config(config.tabular.training_config, "training")
    features_config = features_of(training)
    history = open_history(settings)
    row = history_row(config, run_id, run_after, window)
    try:
        reference = champion_reference(training, config.tabular, settings)
        current, current_info = current_window(training, features_config, reference, window, settings)
    except NothingToCheck as exc:
        history.record_check(**row, status="skipped", verdict=str(exc), action="none: nothing to check")
        raise
    log.info("Reference: %s v%s's training set %s (%d rows, digest %s…); %d features", reference.model_name,
             reference.version, reference.path, len(reference.frame), reference.digest[:12], len(reference.features))
    result = _drift_against(config, reference, current, window, history, row)
    performance = late_label_performance(training, features_config, current, window, config.tabular.min_labels,
                                         settings)
    html = write_atomic(report_path(config, window.check_day, settings),
                        lambda partial: result.snapshot.save_html(str(partial)))
    mlflow_run_id = log_check(config, run_id, f"drift {window.check_day}",
                              params=_mlflow_params(config, window, reference),
                              metrics=_mlflow_metrics(result, performance, reference, current_info),
                              tags={"loopline.drifted_columns": ",".join(result.drifted_columns) or "-"},
                              report=html, settings=settings)
    champion_auc = None if reference.champion_roc_auc is None else round(reference.champion_roc_auc, 4)
    metric = performance["metric"]
    champion_value = reference.champion_metrics.get(metric) if metric else None
    evidence = cast(TabularEvidence, {
        **evidence_head(config, run_id, run_after, window), **result.evidence(),
        "roc_auc": performance["roc_auc"], "labelled_rows": performance["labelled_rows"],
        "performance_note": performance.get("note"), "champion_roc_auc": champion_auc,
        "performance_metric": metric, "performance": performance["value"],
        "champion_performance": None if champion_value is None else round(champion_value, 4),
        "reference": reference.describe(), "current": current_info, "report_path": str(html),
        "report_uri": html.as_uri(), "mlflow_run_id": mlflow_run_id,
    })
    history.record_check(**row, status="checked", drift_share=result.drift_share,
                         drifted_columns=result.drifted_columns, prediction_drift=result.prediction_drift,
                         roc_auc=performance["roc_auc"], champion_roc_auc=champion_auc,
                         report_uri=evidence["report_uri"], mlflow_run_id=mlflow_run_id,
                         reference=reference.describe())
    log.info("Drift of %s %s: %d of %d columns drifted (share %.2f)%s; prediction drift %s; %s %s on %d "
             "late labels (champion %s); report %s", config.dag_id, window, len(result.drifted_columns),
             result.columns, result.drift_share,
             f" ({', '.join(result.drifted_columns)})" if result.drifted_columns else "",
             evidence["prediction_drift"], metric or "performance", performance["value"],
             performance["labelled_rows"], evidence["champion_performance"], html)
    return evidence
