"""Scores and plots of a model on a holdout: overall metrics, slices, ROC, calibration, importance."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import NotRetryable
from pipelines.training.config import SliceSpec
from pipelines.training.promotion import Evaluation, SliceScore

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def metrics(y_true, probabilities) -> dict[str, float]:
    """Threshold-free and thresholded metrics of the positive class's probabilities."""
    from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, log_loss, roc_auc_score

    return {
        "roc_auc": float(roc_auc_score(y_true, probabilities)),
        "pr_auc": float(average_precision_score(y_true, probabilities)),
        "log_loss": float(log_loss(y_true, probabilities, labels=[0, 1])),
        "brier": float(brier_score_loss(y_true, probabilities)),
        "accuracy": float(accuracy_score(y_true, probabilities >= 0.5)),
    }


class SliceColumnError(NotRetryable, ValueError):
    """``promotion.slices.column`` is not a numeric feature of the training set; nothing was trained."""


def check_slice_column(spec: SliceSpec | None, numeric: list[str], categorical: list[str], where: str) -> None:
    """The slice column is one of the training set's numeric features (checked before anything is fitted).

    Raises:
        SliceColumnError: naming the column, the features there are and the YAML key to fix.
    """
    if spec is None or spec.column in numeric:
        return
    kind = "a categorical feature (slices bucket numbers)" if spec.column in categorical else "not in the training set"
    raise SliceColumnError(
        f"promotion.slices.column {spec.column!r} of {where} is {kind}; the numeric features are "
        f"{', '.join(numeric) or 'none'}{' and the categorical ones ' + ', '.join(categorical) if categorical else ''}"
        ". Name one of the numeric features under promotion.slices.column, or remove promotion.slices to judge "
        "no slices; nothing was trained and the champion is unchanged")


def slice_labels(frame: pd.DataFrame, spec: SliceSpec) -> pd.Series:
    import pandas as pd

    return pd.cut(frame[spec.column], bins=spec.edges, labels=spec.labels, right=False).astype(str)


def evaluation(frame: pd.DataFrame, probabilities: np.ndarray, spec: SliceSpec | None) -> Evaluation:
    """ROC AUC overall and per slice of ``frame`` (which holds ``label`` and the slice column; no slices
    when ``spec`` is None)."""
    from sklearn.metrics import roc_auc_score

    y = frame["label"].to_numpy()
    slices: dict[str, SliceScore] = {}
    if spec is None:
        return Evaluation(metric=float(roc_auc_score(y, probabilities)), slices=slices)
    if spec.column not in frame.columns:  # a direct caller: say which column, not a bare KeyError
        raise SliceColumnError(f"promotion.slices.column {spec.column!r} is not a column of the holdout "
                               f"({', '.join(map(str, frame.columns))}): name one of its numeric features")
    labels = slice_labels(frame, spec).to_numpy()
    for name in spec.labels:
        mask = labels == name
        rows = int(mask.sum())
        value = float(roc_auc_score(y[mask], probabilities[mask])) if len(set(y[mask])) == 2 else None
        slices[name] = SliceScore(rows=rows, value=value)
    return Evaluation(metric=float(roc_auc_score(y, probabilities)), slices=slices)


def save_plots(model: Any, X: pd.DataFrame, y, probabilities, out_dir: Path, seed: int) -> list[Path]:
    """ROC curve, calibration curve and permutation feature importance as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import RocCurveDisplay

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(y, probabilities, ax=ax, name="challenger")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_title("ROC on the holdout")
    paths.append(_save(fig, out_dir / "roc_curve.png"))

    fraction, mean_predicted = calibration_curve(y, probabilities, n_bins=8, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(mean_predicted, fraction, marker="o", label="challenger")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    ax.set_xlabel("mean predicted churn probability")
    ax.set_ylabel("observed churn rate")
    ax.set_title("Calibration on the holdout")
    ax.legend()
    paths.append(_save(fig, out_dir / "calibration_curve.png"))

    importance = permutation_importance(model, X, y, scoring="roc_auc", n_repeats=5, random_state=seed)
    order = importance.importances_mean.argsort()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.barh([X.columns[i] for i in order], importance.importances_mean[order],
            xerr=importance.importances_std[order])
    ax.set_xlabel("drop in ROC AUC when shuffled")
    ax.set_title("Permutation feature importance (holdout)")
    paths.append(_save(fig, out_dir / "feature_importance.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
