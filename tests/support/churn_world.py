"""One small churn world built in code, shared by the drift, browser and benchmark tests.

Raw days from the simulator; the features of a day are the simulator's own mart truth
(``expected_customer_daily_features``), published where ``churn_features`` publishes them (dbt and Great
Expectations are left out for time: the features pipeline has its own tests). :func:`prepare` also applies
Feast's definitions and materializes each day, so ``churn_training``'s sensor finds them online exactly as
after real ``churn_features`` runs; :func:`train_champion` registers a champion the way
``build_training_set`` would have built its training set (labels of day D, features of D-1).
"""


from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

from pipelines.core.settings import REPO_ROOT, LooplineSettings, get_settings
from pipelines.demo import simulator

CUSTOMERS = 1500  # the drift tests' world; the browser tests ask for 3,000
NUMERIC = ["sessions_7d", "sessions_30d", "purchases_30d", "spend_30d", "support_tickets_30d",
           "days_since_last_session", "tenure_days", "monthly_charges"]
CATEGORICAL = ["plan", "region"]
DRIFT = simulator.CovariateDrift(session_rate_factor=0.4, charges_shift=30.0, purchase_amount_factor=2.5)


@contextmanager
def own_data_home(home: Path) -> Iterator[LooplineSettings]:
    """The settings of a data home of its own for the block (MLflow, drift history, reports); the session's after."""
    before = os.environ.get("LOOPLINE_HOME")
    os.environ["LOOPLINE_HOME"] = str(home)
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        if before is None:
            os.environ.pop("LOOPLINE_HOME", None)
        else:
            os.environ["LOOPLINE_HOME"] = before
        get_settings.cache_clear()


def configs():
    from pipelines.templates import load_config

    features = load_config(REPO_ROOT / "dags" / "configs" / "churn_features.yaml")
    training = load_config(REPO_ROOT / "dags" / "configs" / "churn_training.yaml")
    return features, training


def land(settings: LooplineSettings, first: date, days: int, *, drift_start: date | None = None,
         customers: int = CUSTOMERS) -> Path:
    landing = settings.path("landing", "churn")
    simulator.land_days(landing, first, days, n_customers=customers,
                        drift=DRIFT if drift_start else None, drift_start=drift_start)
    return landing


def publish(settings: LooplineSettings, days: list[date]) -> None:
    landing = settings.path("landing", "churn")
    offline = settings.path("offline", "churn", "customer_daily_features")
    offline.mkdir(parents=True, exist_ok=True)
    for day in days:
        simulator.expected_customer_daily_features(landing, day).to_parquet(offline / f"{day}.parquet", index=False)


def train_champion(settings: LooplineSettings, window_end: date, window_days: int = 14) -> dict:
    """Train, register and promote a champion on the labels of ``[window_end - window_days, window_end)``."""
    from pipelines.core import tracking
    from pipelines.training.dataset import dataset_digest, split_by_time
    from pipelines.training.steps import train_and_register

    _, training = configs()
    landing = settings.path("landing", "churn")
    frame = simulator.expected_training_set(landing, window_end, window_days)[
        ["customer_id", "event_timestamp", "label", "label_day", *NUMERIC, *CATEGORICAL]]
    frame = split_by_time(frame, 0.25)
    frame = frame[["customer_id", "event_timestamp", "label", "label_day", "split", *NUMERIC, *CATEGORICAL]]
    start = window_end - timedelta(days=window_days)
    path = settings.path("training", "churn", f"window={start}_{window_end}", "training_set.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    info = {"path": str(path), "window_start": str(start), "window_end": str(window_end), "rows": len(frame),
            "train_rows": int((frame["split"] == "train").sum()),
            "holdout_rows": int((frame["split"] == "holdout").sum()), "digest": dataset_digest(frame),
            "feature_service": "churn_model_v1", "feast_project": "churn", "numeric": NUMERIC,
            "categorical": CATEGORICAL}
    config = training.model_copy(
        update={"hyperparameters": training.hyperparameters.model_copy(update={"max_iter": 40})})
    trained = train_and_register(config, info, settings=settings)
    tracking.promote("churn", trained["version"], "drift test world", settings)
    return {**info, **trained}


def prepare(settings: LooplineSettings, today: date, window_days: int, customers: int = 3000) -> list[date]:
    """Land 40 days up to ``today`` and publish and materialize the feature days that a training window of
    ``window_days`` ending ``today`` or ``today + 1`` reads; return those days."""
    from pipelines.features.feast_store import apply_if_changed, day_bounds, materialize_interval
    from pipelines.features.steps import FeaturePaths

    features, _ = configs()
    land(settings, today - timedelta(days=40), 41, customers=customers)
    # A window [end - n, end) reads the features of end-n-1 … end-2; end is the day the run starts (today, or
    # tomorrow when the run crosses midnight UTC).
    days = [today - timedelta(days=n) for n in range(window_days + 1, -1, -1)]
    publish(settings, days)
    where = FeaturePaths(features, settings)
    apply_if_changed(features.feast.project, where.feast_repo, settings)
    for day in days:
        start, end = day_bounds(day)
        materialize_interval(features.feast.project, features.feast.feature_views, start, end,
                             rows_in_interval=customers, settings=settings)
    return days
