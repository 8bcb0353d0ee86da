"""The churn features a manual training run needs, built in code for the browser tests' own data home.

Raw days from the simulator up to yesterday; the features of each day the training window reads are the
simulator's own mart truth (as in the drift tests' world), published where ``churn_features`` publishes them,
then Feast's definitions are applied and each day is materialized, so ``churn_training``'s sensor finds them
online exactly as after real ``churn_features`` runs. dbt and Great Expectations are left out for time: the
features pipeline has its own tests.
"""

from __future__ import annotations

from datetime import date, timedelta

from pipelines import simulator
from pipelines.settings import REPO_ROOT, LooplineSettings

CUSTOMERS = 3000


def prepare(settings: LooplineSettings, today: date, window_days: int, customers: int = CUSTOMERS) -> list[date]:
    """Land 40 days up to ``today`` and publish and materialize the feature days that a training window of
    ``window_days`` ending ``today`` or ``today + 1`` reads; return those days."""
    from pipelines.config import load_config
    from pipelines.features import apply_if_changed, day_bounds, materialize_interval

    features = load_config(REPO_ROOT / "dags" / "configs" / "churn_features.yaml")
    from pipelines.feature_pipeline import paths

    where = paths(features, settings)
    landing = settings.resolve(features.landing.path)
    simulator.land_days(landing, today - timedelta(days=40), 41, n_customers=customers)
    # A window [end - n, end) reads the features of end-n-1 … end-2; end is the day the run starts (today, or
    # tomorrow when the run crosses midnight UTC).
    days = [today - timedelta(days=n) for n in range(window_days + 1, -1, -1)]
    where.offline.mkdir(parents=True, exist_ok=True)
    for day in days:
        simulator.expected_customer_daily_features(landing, day).to_parquet(where.offline / f"{day}.parquet",
                                                                            index=False)
    apply_if_changed(features.feast.project, where.feast_repo, settings)
    for day in days:
        start, end = day_bounds(day)
        materialize_interval(features.feast.project, features.feast.feature_views, start, end, rows_in_interval=customers,
                             settings=settings)
    return days
