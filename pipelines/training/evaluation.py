"""Scores and plots of a model on a holdout: metrics per task, slices, baselines, ROC, calibration, importance."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import NotRetryable
from pipelines.training.config import PromotionPolicy, SliceSpec
from pipelines.training.promotion import Evaluation, SliceScore

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def model_output(task: str, raw) -> np.ndarray:
    """A model's output as the metrics read it: the positive class's probability (binary, 1-D), the class
    probabilities (multiclass, one column per class) or the predicted value (regression, 1-D)."""
    import numpy as np

    values = np.asarray(raw, dtype=float)
    if task == "multiclass":
        return values
    return values[:, 1] if task == "binary" and values.ndim == 2 else values.reshape(-1)


def scorers(task: str = "binary", classes=None) -> dict[str, Callable[[Any, Any], float]]:
    """Each metric of ``task`` (:data:`~pipelines.training.config.TASK_METRICS`) as ``(y_true, output) -> float``.

    ``classes``: the class ids of a multiclass output's columns, in order (the model's ``classes_``).
    """
    import numpy as np
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        brier_score_loss,
        f1_score,
        log_loss,
        mean_absolute_error,
        mean_squared_error,
        r2_score,
        roc_auc_score,
    )

    if task == "regression":
        return {"rmse": lambda y, out: float(np.sqrt(mean_squared_error(y, out))),
                "mae": lambda y, out: float(mean_absolute_error(y, out)),
                "r2": lambda y, out: float(r2_score(y, out))}
    if task == "multiclass":
        ids = np.asarray(classes)
        return {"macro_f1": lambda y, out: float(f1_score(y, ids[np.argmax(out, axis=1)], average="macro",
                                                          labels=ids, zero_division=0)),
                "accuracy": lambda y, out: float(accuracy_score(y, ids[np.argmax(out, axis=1)])),
                "log_loss": lambda y, out: float(log_loss(y, out, labels=ids))}
    return {
        "roc_auc": lambda y, out: float(roc_auc_score(y, out)),
        "pr_auc": lambda y, out: float(average_precision_score(y, out)),
        "log_loss": lambda y, out: float(log_loss(y, out, labels=[0, 1])),
        "brier": lambda y, out: float(brier_score_loss(y, out)),
        "accuracy": lambda y, out: float(accuracy_score(y, out >= 0.5)),
    }


def metrics(y_true, output, task: str = "binary", classes=None) -> dict[str, float]:
    """Every metric of ``task`` of ``output`` (:func:`model_output`) against ``y_true``."""
    return {name: score(y_true, output) for name, score in scorers(task, classes).items()}


def metric_value(metric: str, y_true, output, task: str = "binary", classes=None) -> float | None:
    """One metric, or None where it is undefined on these rows (one class for a ranking metric, under 2 rows)."""
    import numpy as np

    y = np.asarray(y_true)
    if len(y) == 0 or (task == "binary" and metric in ("roc_auc", "pr_auc") and len(set(y)) < 2) \
            or (task == "regression" and metric == "r2" and len(y) < 2):
        return None
    return scorers(task, classes)[metric](y, output)


class SliceColumnError(NotRetryable, ValueError):
    """A column the promotion policy reads (slices, baseline) is not a fitting feature; nothing was trained."""


def check_slice_column(spec: SliceSpec | None, numeric: list[str], categorical: list[str], where: str) -> None:
    """The slice column is a numeric feature (``edges``) or any feature (``values``) of the training set.

    Raises:
        SliceColumnError: naming the column, the features there are and the YAML key to fix.
    """
    if spec is None or spec.column in numeric or (spec.values is not None and spec.column in categorical):
        return
    kind = ("a categorical feature (edges bucket numbers: slice it by values instead)" if spec.column in categorical
            else "not in the training set")
    raise SliceColumnError(
        f"promotion.slices.column {spec.column!r} of {where} is {kind}; the numeric features are "
        f"{_features_listing(numeric, categorical)}"
        ". Name one of the features under promotion.slices.column, or remove promotion.slices to judge "
        "no slices; nothing was trained and the champion is unchanged")


def _features_listing(numeric: list[str], categorical: list[str]) -> str:
    """``a, b and the categorical ones c, d`` for an error message (``none`` without numeric features)."""
    return f"{', '.join(numeric) or 'none'}" + (f" and the categorical ones {', '.join(categorical)}" if categorical
                                                else "")


def check_baseline_column(policy: PromotionPolicy, numeric: list[str], categorical: list[str], where: str) -> None:
    """A ``previous_value:`` baseline reads a numeric feature, a ``rule:`` one any feature of the training set.

    Raises:
        SliceColumnError: naming the baseline, the features there are and the YAML key to fix.
    """
    column = policy.baseline_column
    if column is None or column in numeric or (policy.baseline_kind == "rule" and column in categorical):
        return
    kind = "a categorical feature, not a number" if column in categorical else "not in the training set"
    raise SliceColumnError(
        f"promotion.baseline {policy.baseline!r} of {where}: {column!r} is {kind}; the numeric features are "
        f"{_features_listing(numeric, categorical)}"
        ". Name one of them in promotion.baseline, or use prior; nothing was trained and the champion is unchanged")


def slice_labels(frame: pd.DataFrame, spec: SliceSpec) -> pd.Series:
    import pandas as pd

    if spec.values is not None:
        return frame[spec.column].astype(str)
    return pd.cut(frame[spec.column], bins=spec.edges, labels=spec.labels, right=False).astype(str)


def evaluation(frame: pd.DataFrame, output, spec: SliceSpec | None, task: str = "binary",
               metric: str = "roc_auc", classes=None) -> Evaluation:
    """``metric`` overall and per slice of ``frame`` (which holds ``label`` and the slice column; no slices
    when ``spec`` is None); ``output`` as :func:`model_output` gives it."""
    import numpy as np

    y = frame["label"].to_numpy()
    output = np.asarray(output)
    overall = metric_value(metric, y, output, task, classes)
    if overall is None:
        raise ValueError(f"{metric} is undefined on this holdout of {len(y)} rows (a single class?): widen the "
                         "window or the holdout share")
    slices: dict[str, SliceScore] = {}
    if spec is None:
        return Evaluation(metric=overall, slices=slices)
    if spec.column not in frame.columns:  # a direct caller: say which column, not a bare KeyError
        raise SliceColumnError(f"promotion.slices.column {spec.column!r} is not a column of the holdout "
                               f"({', '.join(map(str, frame.columns))}): name one of its features")
    labels = slice_labels(frame, spec).to_numpy()
    for name in spec.names:
        mask = labels == name
        value = metric_value(metric, y[mask], output[mask], task, classes)
        slices[name] = SliceScore(rows=int(mask.sum()), value=value)
    return Evaluation(metric=overall, slices=slices)


def baseline_output(baseline: str, task: str, train: pd.DataFrame, holdout: pd.DataFrame, classes=None,
                    seed: int = 42):
    """What the baseline predicts for the holdout, in :func:`model_output`'s form, learnt from ``train`` only.

    - ``prior``: the train split's label rate (binary), class shares (multiclass) or mean (regression), for
      every row.
    - ``previous_value:<feature>``: the feature itself, which a label of day D reads as of D-1 (regression).
    - ``rule:<feature>``: the best single split of a numeric feature (a depth-1 tree), or the train split's
      rate, shares or mean per value of a categorical one (the prior for values not seen in training).
    """
    import numpy as np
    import pandas as pd

    kind, _, column = baseline.partition(":")
    y = train["label"].to_numpy()
    classes = np.asarray(classes if classes is not None else np.unique(y))

    def prior_of(values) -> np.ndarray:
        if task != "multiclass":  # the label rate (binary) or the mean (regression)
            return np.array([float(np.mean(values))])
        return np.array([float(np.mean(values == c)) for c in classes])

    if kind == "previous_value":
        return holdout[column].astype(float).to_numpy()
    prior = prior_of(y)
    if kind == "prior":
        return model_output(task, np.tile(prior, (len(holdout), 1)) if task == "multiclass" else
                            np.full(len(holdout), prior[0]))
    if pd.api.types.is_numeric_dtype(train[column]):
        from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

        if task == "regression":
            stump = DecisionTreeRegressor(max_depth=1, random_state=seed).fit(train[[column]], y)
            return stump.predict(holdout[[column]])
        stump = DecisionTreeClassifier(max_depth=1, random_state=seed).fit(train[[column]], y)
        probabilities = stump.predict_proba(holdout[[column]])
        # Align the stump's classes (those in train) with the model's columns.
        aligned = np.zeros((len(holdout), len(classes)))
        for i, c in enumerate(stump.classes_):
            aligned[:, int(np.flatnonzero(classes == c)[0])] = probabilities[:, i]
        return model_output(task, aligned)
    per_value = {value: prior_of(group["label"].to_numpy()) for value, group in train.groupby(column)}
    rows = np.array([per_value.get(value, prior) for value in holdout[column]])
    return model_output(task, rows if task == "multiclass" else rows[:, 0])


# Permutation importance is scored with the task's usual sklearn scorer.
IMPORTANCE_SCORING = {"binary": ("roc_auc", "drop in ROC AUC when shuffled"),
                      "multiclass": ("f1_macro", "drop in macro-F1 when shuffled"),
                      "regression": ("neg_root_mean_squared_error", "rise in RMSE when shuffled")}


def save_plots(model: Any, X: pd.DataFrame, y, output, out_dir: Path, seed: int, task: str = "binary") -> list[Path]:
    """PNG files: ROC and calibration curves (binary), predicted against observed (regression), and permutation
    feature importance (every task)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.inspection import permutation_importance

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    if task == "binary":
        from sklearn.calibration import calibration_curve
        from sklearn.metrics import RocCurveDisplay

        fig, ax = plt.subplots(figsize=(5, 5))
        RocCurveDisplay.from_predictions(y, output, ax=ax, name="challenger")
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
        ax.set_title("ROC on the holdout")
        paths.append(_save(fig, out_dir / "roc_curve.png"))

        fraction, mean_predicted = calibration_curve(y, output, n_bins=8, strategy="quantile")
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(mean_predicted, fraction, marker="o", label="challenger")
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed rate")
        ax.set_title("Calibration on the holdout")
        ax.legend()
        paths.append(_save(fig, out_dir / "calibration_curve.png"))
    elif task == "regression":
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(y, output, s=8, alpha=0.6)
        low, high = float(min(y.min(), output.min())), float(max(y.max(), output.max()))
        ax.plot([low, high], [low, high], linestyle=":", color="grey")
        ax.set_xlabel("observed")
        ax.set_ylabel("predicted")
        ax.set_title("Predicted against observed (holdout)")
        paths.append(_save(fig, out_dir / "predicted_vs_observed.png"))

    scoring, label = IMPORTANCE_SCORING[task]
    importance = permutation_importance(model, X, y, scoring=scoring, n_repeats=5, random_state=seed)
    order = importance.importances_mean.argsort()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.barh([X.columns[i] for i in order], importance.importances_mean[order],
            xerr=importance.importances_std[order])
    ax.set_xlabel(label)
    ax.set_title("Permutation feature importance (holdout)")
    paths.append(_save(fig, out_dir / "feature_importance.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
