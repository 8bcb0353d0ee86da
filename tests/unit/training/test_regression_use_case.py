"""A regression use case trained, registered and judged for real: weather stations keyed by a string
(``ST-001``) predicting tomorrow's temperature (a float target), against a baseline named in the config.

Runs the real landing reader, Feast (a feature repo of its own, file offline store), Great Expectations,
scikit-learn and MLflow's registry on fixtures built here. A first model that beats the persistence baseline
("tomorrow is as warm as today") is promoted; one trained on a target that is pure noise does not beat the
label's mean and is not.
"""

from __future__ import annotations

import textwrap
import uuid
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.core import tracking
from pipelines.core.settings import get_settings
from pipelines.features import feast_store
from pipelines.training import steps
from pipelines.training.config import TrainingConfig
from pipelines.training.dataset import Window

pytestmark = pytest.mark.unit

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


def test_a_regression_model_that_beats_the_persistence_baseline_is_promoted_and_scores_values(tmp_path):
    training = build(tmp_path, warming, {"baseline": "previous_value:temp_c", "min_gain_over_baseline": 1.0,
                                         "slices": {"column": "climate", "values": ["coastal", "alpine"]}})
    info, trained, decision = run(training)
    frame = pd.read_parquet(info["path"])
    assert frame["label"].dtype == "float64" and info["rows"] == len(STATIONS) * DAYS

    run_data = tracking.client().get_run(trained["run_id"]).data
    assert {"holdout_rmse", "holdout_mae", "holdout_r2", "baseline_rmse", "baseline_mae", "baseline_r2",
            "holdout_rmse_coastal", "holdout_rmse_alpine"} <= set(run_data.metrics)
    assert run_data.params["task"] == "regression" and run_data.params["baseline"] == "previous_value:temp_c"
    model, baseline = run_data.metrics["holdout_rmse"], run_data.metrics["baseline_rmse"]
    assert baseline > 5 and model < baseline - 1.0, (model, baseline)

    assert decision["promoted"], decision
    assert decision["metric"] == "rmse" and "challenger_roc_auc" not in decision
    assert decision["baseline_value"] == pytest.approx(baseline, abs=1e-4)
    assert decision["reason"] == (
        f"first model: rmse {decision['challenger_value']:.4f} (no floor set) and beats the baseline "
        f"previous_value:temp_c's {decision['baseline_value']:.4f} by min_gain_over_baseline 1.0000 "
        f"(gain {decision['baseline_value'] - decision['challenger_value']:+.4f})")
    champion = tracking.champion(training.model_name)
    assert champion is not None and str(champion.version) == trained["version"]
    assert tracking.client().get_model_version(training.model_name, trained["version"]).tags[
        "loopline.promotion"] == "promoted"

    scored = steps.score_latest(training)
    predictions = pd.read_parquet(scored["path"])
    assert scored["prediction_column"] == f"{training.model_name}_score"
    values = predictions[scored["prediction_column"]]
    assert values.dtype == "float64" and len(values) == len(STATIONS)
    assert values.between(-30, 60).all() and values.std() > 1  # temperatures, not probabilities


def test_a_model_of_a_target_that_is_pure_noise_does_not_beat_the_prior_and_is_not_promoted(tmp_path):
    training = build(tmp_path, noise, {"baseline": "prior", "min_gain_over_baseline": 0.1})
    _, trained, decision = run(training)
    assert not decision["promoted"], decision
    assert decision["champion"] is None and tracking.champion(training.model_name) is None
    baseline, challenger = decision["baseline_value"], decision["challenger_value"]
    assert decision["reason"] == (
        f"first model: rmse {challenger:.4f} does not beat the baseline prior's {baseline:.4f} by "
        f"min_gain_over_baseline 0.1000 (gain {baseline - challenger:+.4f}); a model no better than the baseline "
        "is not promoted")
    version = tracking.client().get_model_version(training.model_name, trained["version"])
    assert version.tags["loopline.promotion"] == "rejected"
    assert version.tags["loopline.promotion_reason"] == decision["reason"]
    metrics = tracking.client().get_run(trained["run_id"]).data.metrics
    assert metrics["baseline_rmse"] == pytest.approx(baseline, abs=1e-4)
