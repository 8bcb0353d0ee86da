"""A small regression use case built in code for training tests: weather stations keyed by a string (``ST-001``)
predicting tomorrow's temperature, with a features YAML, a landing folder of labels, a Feast repo of its own (file
offline store) and its training config. :func:`run` trains, registers and judges it through the training steps.
"""

from __future__ import annotations

import textwrap
import uuid
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipelines.core.settings import get_settings
from pipelines.features import feast_store
from pipelines.training import steps
from pipelines.training.config import TrainingConfig
from pipelines.training.dataset import Window

STATIONS = [f"ST-{n:03d}" for n in range(1, 41)]
FIRST_DAY, DAYS = date(2024, 5, 1), 8
MART = "station_daily_weather"

FEATURE_REPO = {
    "station_entities.py": """
        from feast import Entity, ValueType

        station = Entity(name="station", join_keys=["station_id"], value_type=ValueType.STRING)
    """,
    "station_views.py": """
        from datetime import timedelta

        from feast import FeatureService, FeatureView, Field, FileSource
        from feast.types import Float64, Int64, String
        from station_entities import station

        source = FileSource(name="station_daily_weather_source", path="station_daily_weather",
                            timestamp_field="feature_timestamp")
        station_daily_weather = FeatureView(
            name="station_daily_weather", entities=[station], ttl=timedelta(days=2), source=source, online=True,
            schema=[Field(name="pressure_hpa", dtype=Float64), Field(name="humidity", dtype=Int64),
                    Field(name="temp_c", dtype=Float64), Field(name="climate", dtype=String)])
        temperature_model_v1 = FeatureService(name="temperature_model_v1", features=[station_daily_weather])
    """,
}


def weather(day: date, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "station_id": STATIONS, "ds": day,
        "feature_timestamp": pd.Timestamp(day, tz="UTC") + pd.Timedelta("23:59:59"),
        "pressure_hpa": rng.normal(1010, 8, len(STATIONS)), "humidity": rng.integers(20, 100, len(STATIONS)),
        "temp_c": rng.normal(15, 6, len(STATIONS)), "climate": rng.choice(["coastal", "alpine"], len(STATIONS)),
    }).astype({"feature_timestamp": "datetime64[us, UTC]"})


def warming(previous: pd.DataFrame, rng) -> np.ndarray:
    """Tomorrow is today's temperature moved by the pressure: persistence alone misses by about 6.4 °C."""
    return previous["temp_c"].to_numpy() + 0.8 * (previous["pressure_hpa"].to_numpy() - 1010) \
        + rng.normal(0, 0.3, len(previous))


def noise(previous: pd.DataFrame, rng) -> np.ndarray:
    """A target no feature says anything about."""
    return rng.normal(15, 4, len(previous))


def build(tmp_path: Path, target, promotion: dict) -> TrainingConfig:
    """Features YAML, landing (labels), Feast repo and offline days of a regression use case; its training config."""
    settings = get_settings()
    project = f"temps_{uuid.uuid4().hex[:8]}"
    repo = tmp_path / "station_repo"
    repo.mkdir()
    for name, source in FEATURE_REPO.items():
        (repo / name).write_text(textwrap.dedent(source))
    landing = tmp_path / "landing"
    features_yaml = tmp_path / "temperature_features.yaml"
    features_yaml.write_text(yaml.safe_dump({
        "template": "features", "instance": "temperatures", "start_date": "2024-01-01T00:00:00Z",
        "landing": {"path": str(landing), "format": "parquet", "partition": "day={ds}", "ready_marker": "READY",
                    "tables": {"readings": {"file": "readings", "columns": {
                        "station_id": "string", "observed_at": "timestamp", "temp_tomorrow": "float64"}}}},
        "dbt": {"project": "dags/dbt/temperatures", "mart": MART},
        "validation": {"suite": "dags/expectations/temperatures.json"},
        "feast": {"repo": str(repo), "project": project, "feature_views": ["station_daily_weather"],
                  "feature_service": "temperature_model_v1", "entity_key": "station_id"},
    }))
    offline = settings.path("offline", project, MART)
    rng = np.random.default_rng(99)
    previous = None
    for n in range(-1, DAYS):
        day = FIRST_DAY + timedelta(days=n)
        today = weather(day, seed=n + 20)
        feast_store.publish_offline_day(today, offline, day)
        if previous is not None:  # a label of day D reads day D-1's features
            partition = landing / f"day={day.isoformat()}"
            partition.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({
                "station_id": previous["station_id"],
                "observed_at": pd.Timestamp(day, tz="UTC") + pd.Timedelta("07:00:00"),
                "temp_tomorrow": target(previous, rng),
            }).astype({"observed_at": "datetime64[us, UTC]"}).to_parquet(partition / "readings.parquet", index=False)
            (partition / "READY").touch()
        previous = today
    feast_store.apply_if_changed(project, repo, settings)
    return TrainingConfig.model_validate({
        "template": "training", "instance": f"temp_{project}", "model_name": f"temp_{project}", "task": "regression",
        "features_config": str(features_yaml), "window_days": 60, "holdout_fraction": 0.25,
        "hyperparameters": {"learning_rate": 0.1, "max_iter": 200, "min_samples_leaf": 5},
        "label": {"table": "readings", "timestamp": "observed_at", "target": "temp_tomorrow"},
        "checks": {"min_rows": 50}, "promotion": promotion,
    })


def run(training: TrainingConfig) -> tuple[steps.TrainingSetInfo, steps.TrainedVersion, steps.PromotionResult]:
    window = Window(FIRST_DAY, FIRST_DAY + timedelta(days=DAYS))
    info = steps.build_training_set(training, window)
    steps.validate_training_set(training, info)
    trained = steps.train_and_register(training, info)
    return info, trained, steps.evaluate_and_promote(training, info, trained)
