"""Tabular drift with Evidently: per-column data drift, prediction drift, and performance on late labels.

Pure functions on DataFrames (pandas and Evidently are imported inside them). :func:`drift_report` runs one
Evidently ``Report``: ``DataDriftPreset`` over the model's feature columns (per-column drift tests and the
share of drifted columns) and a ``ValueDrift`` of the prediction column, and reads Evidently's own test
outcomes, so the per-column verdict follows whichever method the config names (distances or p-values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from pipelines.core.errors import NotRetryable

PREDICTION = "prediction"


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
