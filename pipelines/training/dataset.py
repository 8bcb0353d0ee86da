"""The training set: labels of a window joined point-in-time to Feast's historical features.

A label observed at ``label_ts`` only ever sees feature values stamped at or before ``label_ts``
(Feast's point-in-time join, bounded by the feature views' TTL), so a model never trains on the future.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import NotRetryable
from pipelines.core.home import DataHome
from pipelines.core.settings import LooplineSettings, get_settings
from pipelines.core.windows import DayWindow
from pipelines.features.config import FeaturesConfig
from pipelines.training.config import TrainingConfig, entity_keys

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ENTITY_TIMESTAMP = "event_timestamp"
SPLIT = "split"


class TrainingSetError(NotRetryable, ValueError):
    """The window cannot give a training set (no labels, a missing feature service…); nothing is trained."""


class Window(DayWindow):
    """Labels observed in ``[start, end)``; they read features of the days ``start-1 … end-2``."""

    @property
    def label_days(self) -> list[date]:
        return self.days

    @property
    def last_feature_day(self) -> date:
        """The newest feature day any label of the window can use: labels of end-1 see end-2's values."""
        return self.end - timedelta(days=2)


@dataclass(frozen=True)
class FeatureColumns:
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def feature_columns(project: str, feature_service: str, settings: LooplineSettings | None = None) -> FeatureColumns:
    """The features a feature service serves, split by type (strings are categorical).

    Raises:
        TrainingSetError: the feature service is not registered in the project.
    """
    from feast.types import String

    from pipelines.features.feast_store import feature_store

    store = feature_store(project, settings)
    try:
        service = store.get_feature_service(feature_service)
    except Exception as exc:  # Feast raises its own FeatureServiceNotFoundException
        known = sorted(s.name for s in store.list_feature_services())
        raise TrainingSetError(
            f"feature service {feature_service!r} is not registered in Feast project {project!r} "
            f"(registered: {', '.join(known) or 'none'}); run the features pipeline or fix the config"
        ) from exc
    numeric, categorical = [], []
    for projection in service.feature_view_projections:
        for field in projection.features:
            (categorical if field.dtype == String else numeric).append(field.name)
    return FeatureColumns(tuple(numeric), tuple(categorical))


def load_labels(features: FeaturesConfig, training: TrainingConfig, window: Window,
                settings: LooplineSettings | None = None) -> pd.DataFrame:
    """Labels observed in the window, read from the features instance's landing partitions.

    Entity keys keep the type the landing contract gives them (a string ``ST-001`` or an integer); a
    composite key gives one column per join key.

    Returns:
        Columns ``<entity key(s)>``, ``event_timestamp`` (UTC), ``label`` (int64; float64 for a regression task)
        and ``label_day`` (date).
    """
    import pandas as pd

    from pipelines.features.landing import LandingContractError, read_landed_table

    settings = settings or get_settings()
    landing_root = settings.resolve(features.landing.path)
    keys = entity_keys(features)
    if training.label.table not in features.landing.tables:
        raise TrainingSetError(
            f"label.table {training.label.table!r} of {training.dag_id} is not a table of {features.dag_id}'s landing "
            f"contract ({', '.join(sorted(features.landing.tables))}): labels land like every other table, so add "
            "it under landing.tables in the features YAML, or name one of those")
    frames = []
    for day in window.label_days:
        # Through the landing contract and the ready marker, as the features DAG reads its tables.
        try:
            table = read_landed_table(features.landing, landing_root, day, training.label.table)
        except LandingContractError as exc:
            raise TrainingSetError(f"labels of {day}: {exc}") from exc
        if table is None:
            continue  # not landed, still landing (no ready marker), or quarantined: no labels to give
        frame = table.to_pandas()
        missing = [c for c in [*keys, training.label.timestamp, training.label.target] if c not in frame.columns]
        if missing:
            raise TrainingSetError(
                f"labels of {day} ({training.label.table}) lack {', '.join(missing)} (columns: "
                f"{', '.join(frame.columns)}): fix label.* in the training YAML or feast.entity_key")
        frames.append(pd.DataFrame({
            # The key as landed: the landing contract typed it, and Feast joins on that type.
            **{key: frame[key].to_numpy() for key in keys},
            ENTITY_TIMESTAMP: pd.to_datetime(frame[training.label.timestamp], utc=True),
            "label": frame[training.label.target].astype("float64" if training.task == "regression" else "int64"),
            "label_day": day,
        }))
    if not frames:
        raise TrainingSetError(
            f"no labels landed for {training.dag_id} in the window {window} under {landing_root}; "
            "land labels for those days or move the window (param window_end)"
        )
    return pd.concat(frames, ignore_index=True)


class LabelLeakage(TrainingSetError):
    """Labels stamped late enough in their day to read that day's features; nothing was trained."""


class DuplicateLabels(TrainingSetError):
    """More than one label for an entity on one label day; nothing was trained."""


class NonFiniteLabels(TrainingSetError):
    """A regression target that is NaN or infinite; nothing was trained."""


def _entity(row, keys: list[str]) -> str:
    """``station_id 'ST-001'``: a row's key values as a person reads them (numpy scalars as plain values)."""
    values = [row[k].item() if hasattr(row[k], "item") else row[k] for k in keys]
    return ", ".join(f"{k} {v!r}" for k, v in zip(keys, values, strict=True))


def check_labels(labels: pd.DataFrame, training: TrainingConfig, keys: list[str]) -> None:
    """Hold labels to the feature timestamp rule and to one label per entity per label day.

    Day D's features are stamped D 23:59:59 UTC (:func:`day_end`) and the point-in-time join gives a label every
    value stamped at or before it, so a label of landing day D stamped at or after D 23:59:59 would learn from
    D's own features (leakage): the rule is that a label of day D reads day D-1's features.

    Raises:
        LabelLeakage: labels break the rule and ``label_leakage`` is ``refuse`` (with ``warn`` it is logged).
        DuplicateLabels: an entity has more than one label on a label day.
        NonFiniteLabels: a regression target is NaN or infinite (a model cannot learn from it, and one NaN
            makes RMSE NaN).
    """
    import numpy as np
    import pandas as pd

    where = f"dags/configs/{training.dag_id}.yaml"
    ends = pd.to_datetime([day_end(d) for d in labels["label_day"]], utc=True)
    late = labels[labels[ENTITY_TIMESTAMP].to_numpy() >= ends.to_numpy()]
    if len(late):
        first = late.iloc[0]
        example = _entity(first, keys)
        message = (
            f"{len(late)} of {len(labels)} labels are stamped at or after 23:59:59 UTC of their landing day (e.g. "
            f"{example} on {first['label_day']} at {first[ENTITY_TIMESTAMP]}): day D's features are stamped "
            "D 23:59:59 UTC and a label of day D must read day D-1's, so these labels would learn from features "
            f"of their own day (leakage). Stamp labels (label.timestamp {training.label.timestamp!r}) before "
            f"23:59:59 of the day they land in, or set label_leakage: warn in {where} to train on them anyway")
        if training.label_leakage == "refuse":
            raise LabelLeakage(message + "; nothing was trained and the champion is unchanged")
        log.warning("label_leakage: warn: %s", message)
    if training.task == "regression":
        bad = labels[~np.isfinite(labels["label"].to_numpy(dtype=float))]
        if len(bad):
            first = bad.iloc[0]
            raise NonFiniteLabels(
                f"{len(bad)} of {len(labels)} labels have a target that is not a finite number (e.g. "
                f"{_entity(first, keys)} on {first['label_day']}: {first['label']}); label.target "
                f"{training.label.target!r} of a regression task must be finite. Fix or drop those rows of the "
                f"{training.label.table!r} table at the source; nothing was trained and the champion is unchanged")
    duplicated = labels[labels.duplicated(subset=[*keys, "label_day"], keep=False)]
    if len(duplicated):
        first = duplicated.iloc[0]
        example = _entity(first, keys)
        groups = len(duplicated.drop_duplicates(subset=[*keys, "label_day"]))
        raise DuplicateLabels(
            f"{len(duplicated)} labels share an entity and a label day ({groups} entity-days, e.g. {example} on "
            f"{first['label_day']}); the training set needs one label per entity per day. Deduplicate the "
            f"{training.label.table!r} table of those days at the source; nothing was trained and the champion "
            "is unchanged")


def join_features(labels: pd.DataFrame, project: str, feature_service: str,
                  settings: LooplineSettings | None = None) -> pd.DataFrame:
    """Point-in-time join of labels to the feature service's historical features.

    Returns:
        The label columns plus one column per feature; rows whose entity had no feature value at the
        label's time (before its first feature day, or past the views' TTL) are dropped and logged.
    """
    from pipelines.features.feast_store import feature_store

    store = feature_store(project, settings)
    service = store.get_feature_service(feature_service)
    joined = store.get_historical_features(entity_df=labels, features=service).to_df()
    columns = feature_columns(project, feature_service, settings).all
    complete = joined.dropna(subset=columns)
    dropped = len(joined) - len(complete)
    if dropped:
        log.info("%d of %d labels had no features at their label time (days without features) and are left out",
                 dropped, len(joined))
    return complete


def split_by_time(frame: pd.DataFrame, holdout_fraction: float) -> pd.DataFrame:
    """Hold out the latest label days: a model is judged on days after those it learnt from.

    Returns:
        The frame with a ``split`` column, ``train`` or ``holdout``.
    """
    days = sorted(frame["label_day"].unique())
    if len(days) < 2:
        raise TrainingSetError(
            f"the window has labels on {len(days)} day(s) only; a time-based holdout needs at least 2: "
            "widen the window (param window_days)"
        )
    n_holdout = min(len(days) - 1, max(1, math.ceil(len(days) * holdout_fraction)))
    holdout_days = set(days[-n_holdout:])
    out = frame.copy()
    out[SPLIT] = ["holdout" if d in holdout_days else "train" for d in out["label_day"]]
    return out


def dataset_digest(frame: pd.DataFrame) -> str:
    """A digest of the training set's content, independent of row order."""
    import pandas as pd

    # Every column, so that any row order (a composite key too) gives one canonical order; for a training set
    # whose first two columns (key, timestamp) are unique this is the order sorting by those two gave.
    canonical = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    canonical = canonical[sorted(canonical.columns)]
    hashes = pd.util.hash_pandas_object(canonical, index=False).to_numpy()
    digest = hashlib.sha256(",".join(canonical.columns).encode())
    digest.update(hashes.tobytes())
    return digest.hexdigest()


def validation_suite(training: TrainingConfig, columns: FeatureColumns, keys: list[str]) -> dict[str, Any]:
    """The Great Expectations suite of a training set, from the config's bounds (``keys``: the entity's)."""
    checks = training.checks
    expected = [*keys, ENTITY_TIMESTAMP, "label", "label_day", SPLIT, *columns.all]
    expectations: list[dict[str, Any]] = [
        {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": expected, "exact_match": True}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": checks.min_rows}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": SPLIT, "value_set": ["train", "holdout"]}},
    ]
    # The label's own checks follow the task: a rate only means something for a 0/1 label.
    if training.task == "binary":
        expectations += [
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": [0, 1]}},
            {"type": "expect_column_mean_to_be_between",
             "kwargs": {"column": "label", "min_value": checks.label_rate_min, "max_value": checks.label_rate_max}},
        ]
    else:
        expectations.append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "label"}})
    if training.task == "multiclass":
        expectations.append({"type": "expect_column_unique_value_count_to_be_between",
                             "kwargs": {"column": "label", "min_value": 2, "max_value": checks.max_classes}})
    elif training.task == "regression":  # a target that varies; finiteness is check_labels' (before the join)
        expectations.append({"type": "expect_column_stdev_to_be_between",
                             "kwargs": {"column": "label", "min_value": 1e-12}})
    expectations += [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c}} for c in columns.all]
    return {"name": f"{training.dag_id}_training_set", "expectations": expectations,
            "meta": {"notes": "Built from the training config's checks (pipelines/training/dataset.py)."}}


def day_end(day: date) -> datetime:
    """The instant a day's features are stamped: 23:59:59 UTC."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)


def training_set_path(training: TrainingConfig, window: Window, settings: LooplineSettings | None = None) -> Path:
    """Where the window's training set is written (``training/<instance>/window=<start>_<end>/``)."""
    return DataHome(settings).training_set(training.instance, window.start, window.end)
