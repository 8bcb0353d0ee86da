"""The training template on a use case that is not churn: weather stations keyed by a string (``ST-001``),
labels in a table named ``outcomes`` under another partition pattern, no ``tenure_days``, no ``promotion:``.

Runs the real landing reader, Feast (a feature repo of its own with a STRING entity, file offline store) and
Great Expectations on fixtures built here; nothing of churn's configs is read.
"""

from __future__ import annotations

import logging
import textwrap
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from pipelines.core.settings import get_settings
from pipelines.features import feast_store
from pipelines.training import steps
from pipelines.training.config import (
    LabelSource,
    TrainingConfig,
    TrainingConfigError,
    check_against_features,
    entity_keys,
    load_features_config,
)
from pipelines.training.dataset import (
    DuplicateLabels,
    FeatureColumns,
    LabelLeakage,
    TrainingSetError,
    Window,
    check_labels,
    load_labels,
    validation_suite,
)
from pipelines.training.evaluation import SliceColumnError

pytestmark = pytest.mark.unit

STATIONS = [f"ST-{n:03d}" for n in range(1, 31)]
FIRST_DAY, DAYS = date(2024, 3, 1), 8
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
                    Field(name="climate", dtype=String)])
        rain_model_v1 = FeatureService(name="rain_model_v1", features=[station_daily_weather])
    """,
}


def weather(day: date, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "station_id": STATIONS, "ds": day,
        "feature_timestamp": pd.Timestamp(day, tz="UTC") + pd.Timedelta("23:59:59"),
        "pressure_hpa": rng.normal(1010, 8, len(STATIONS)), "humidity": rng.integers(20, 100, len(STATIONS)),
        "climate": rng.choice(["coastal", "alpine"], len(STATIONS)),
    }).astype({"feature_timestamp": "datetime64[us, UTC]"})


def land_outcomes(landing: Path, day: date, frame: pd.DataFrame) -> None:
    partition = landing / f"day={day.isoformat()}"  # not churn's ds=
    partition.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(partition / "outcomes.parquet", index=False)
    (partition / "READY").touch()


def outcomes(day: date, previous: pd.DataFrame, *, at: str = "06:00:00") -> pd.DataFrame:
    # Rain follows low pressure the day before: a label of day D reads day D-1's features.
    return pd.DataFrame({
        "station_id": previous["station_id"],
        "observed_at": pd.Timestamp(day, tz="UTC") + pd.Timedelta(at),
        "rain_tomorrow": (previous["pressure_hpa"] < 1010).astype("int64"),
    }).astype({"observed_at": "datetime64[us, UTC]"})


@pytest.fixture
def stations(tmp_path):
    """A features YAML, its landing (labels only), its Feast repo applied and its offline days published."""
    settings = get_settings()
    project = f"stations_{uuid.uuid4().hex[:8]}"
    repo = tmp_path / "station_repo"
    repo.mkdir()
    for name, source in FEATURE_REPO.items():
        (repo / name).write_text(textwrap.dedent(source))
    landing = tmp_path / "landing"
    features_yaml = tmp_path / "station_features.yaml"
    features_yaml.write_text(yaml.safe_dump({
        "template": "features", "instance": "stations", "start_date": "2024-01-01T00:00:00Z",
        "landing": {"path": str(landing), "format": "parquet", "partition": "day={ds}", "ready_marker": "READY",
                    "tables": {"outcomes": {"file": "outcomes", "columns": {
                        "station_id": "string", "observed_at": "timestamp", "rain_tomorrow": "int64"}}}},
        "dbt": {"project": "dags/dbt/stations", "mart": MART},
        "validation": {"suite": "dags/expectations/stations.json"},
        "feast": {"repo": str(repo), "project": project, "feature_views": ["station_daily_weather"],
                  "feature_service": "rain_model_v1", "entity_key": "station_id"},
    }))
    offline = settings.path("offline", project, MART)
    previous = None
    for n in range(-1, DAYS):
        day = FIRST_DAY + timedelta(days=n)
        today = weather(day, seed=n + 10)
        feast_store.publish_offline_day(today, offline, day)
        if previous is not None:
            land_outcomes(landing, day, outcomes(day, previous))
        previous = today
    feast_store.apply_if_changed(project, repo, settings)
    training = TrainingConfig.model_validate({
        "template": "training", "instance": f"rain_{project}", "model_name": "rain",
        "features_config": str(features_yaml), "window_days": 3 * 365, "holdout_fraction": 0.25,
        "label": {"table": "outcomes", "timestamp": "observed_at", "target": "rain_tomorrow"},
        "checks": {"min_rows": 50, "label_rate_min": 0.05, "label_rate_max": 0.95},
    })
    return training, landing


def window() -> Window:
    return Window(FIRST_DAY, FIRST_DAY + timedelta(days=DAYS))


def test_string_keys_go_end_to_end_through_labels_join_and_checks(stations):
    training, _ = stations
    features = load_features_config(training)
    assert entity_keys(features) == ["station_id"]
    check_against_features(training, features)  # what the DAG file checks at parse time

    labels = load_labels(features, training, window())
    assert labels["station_id"].map(type).eq(str).all() and set(labels["station_id"]) == set(STATIONS)

    info = steps.build_training_set(training, window())
    frame = pd.read_parquet(info["path"])
    assert info["entity_keys"] == ["station_id"] and info["numeric"] == ["pressure_hpa", "humidity"]
    assert info["rows"] == len(STATIONS) * DAYS  # every label day has the day before it published
    assert frame["station_id"].str.startswith("ST-").all()
    # each label read the day before its own: rain_tomorrow is exactly "pressure of D-1 below 1010"
    assert (frame["label"] == (frame["pressure_hpa"] < 1010).astype(int)).all()
    assert steps.validate_training_set(training, info)["rows"] == info["rows"]


def test_a_multi_year_window_is_allowed_and_ten_years_is_the_limit(stations):
    training, _ = stations
    assert training.window_days == 3 * 365
    data = training.model_dump(exclude_unset=True)
    assert TrainingConfig.model_validate({**data, "window_days": 3660}).window_days == 3660
    with pytest.raises(ValidationError, match="window_days"):
        TrainingConfig.model_validate({**data, "window_days": 3661})
    assert steps.resolve_run(training, {"window_days": 2000}).window_days == 2000


def test_labels_stamped_at_the_end_of_their_day_are_refused_or_warned(stations, caplog):
    training, landing = stations
    day = FIRST_DAY + timedelta(days=3)
    frame = pd.read_parquet(landing / f"day={day}" / "outcomes.parquet")
    frame.loc[:4, "observed_at"] = pd.Timestamp(day, tz="UTC") + pd.Timedelta("23:59:59")
    land_outcomes(landing, day, frame)

    with pytest.raises(LabelLeakage, match=r"5 of \d+ labels are stamped at or after 23:59:59 UTC of their landing "
                                           r"day \(e.g. station_id 'ST-001' on 2024-03-04.*label_leakage: warn"):
        steps.build_training_set(training, window())
    warned = training.model_copy(update={"label_leakage": "warn"})
    with caplog.at_level(logging.WARNING, logger="pipelines.training.dataset"):
        info = steps.build_training_set(warned, window())
    assert info["rows"] == len(STATIONS) * DAYS
    assert "label_leakage: warn: 5 of" in caplog.text


def test_a_second_label_for_a_station_on_one_day_is_refused(stations):
    training, landing = stations
    day = FIRST_DAY + timedelta(days=2)
    frame = pd.read_parquet(landing / f"day={day}" / "outcomes.parquet")
    land_outcomes(landing, day, pd.concat([frame, frame.iloc[[7]]], ignore_index=True))
    with pytest.raises(DuplicateLabels, match=r"2 labels share an entity and a label day \(1 entity-days, e.g. "
                                              r"station_id 'ST-008' on 2024-03-03\)"):
        steps.build_training_set(training, window())


def test_a_slice_column_that_is_not_a_feature_is_named_before_anything_is_fitted(stations):
    training, _ = stations
    data = training.model_dump(exclude_unset=True)
    sliced = TrainingConfig.model_validate({**data, "promotion": {"slices": {
        "column": "tenure_days", "edges": [0, 365, 1e9], "labels": ["young", "old"]}}})
    with pytest.raises(SliceColumnError, match=r"promotion.slices.column 'tenure_days' of .* is not in the training "
                                               r"set; the numeric features are pressure_hpa, humidity and the "
                                               r"categorical ones climate"):
        steps.build_training_set(sliced, window())
    by_category = TrainingConfig.model_validate({**data, "promotion": {"slices": {
        "column": "climate", "edges": [0, 1, 2], "labels": ["a", "b"]}}})
    with pytest.raises(SliceColumnError, match="'climate' .* is a categorical feature"):
        steps.build_training_set(by_category, window())


def test_without_promotion_the_model_trains_and_is_judged_overall_only(stations, tmp_path):
    training, _ = stations
    assert training.promotion.slices is None
    info = steps.build_training_set(training, window())
    frame = pd.read_parquet(info["path"])
    trained = steps.train_and_evaluate(training, frame, info["numeric"], info["categorical"], tmp_path / "plots")
    assert trained.evaluation.slices == {} and trained.metrics["roc_auc"] > 0.8


def test_the_label_block_is_checked_against_the_features_landing_contract(stations):
    training, _ = stations
    features = load_features_config(training)
    for label, message in [
        ({"table": "labels", "timestamp": "observed_at", "target": "rain_tomorrow"},
         r"label.table 'labels' is not a table of stations_features's landing contract \(outcomes\)"),
        ({"table": "outcomes", "timestamp": "observed_at", "target": "rained"},
         r"has columns observed_at \(timestamp\), rain_tomorrow \(int64\), station_id \(string\); "
         r"label.target 'rained' is not an int64 column of it"),
        ({"table": "outcomes", "timestamp": "station_id", "target": "rain_tomorrow"},
         r"label.timestamp 'station_id' is not a timestamp or date column"),
    ]:
        with pytest.raises(TrainingConfigError, match=message):
            check_against_features(training.model_copy(update={"label": LabelSource(**label)}), features)
    keyed = TrainingConfig.model_validate({**training.model_dump(exclude_unset=True), "promotion": {"slices": {
        "column": "station_id", "edges": [0, 1, 2], "labels": ["a", "b"]}}})
    with pytest.raises(TrainingConfigError, match="promotion.slices.column 'station_id' is the entity key"):
        check_against_features(keyed, features)


def test_a_training_config_names_its_features_and_labels_and_gets_no_churn_defaults(stations):
    training, _ = stations
    data = training.model_dump(exclude_unset=True)
    for key in ("features_config", "label"):
        with pytest.raises(ValidationError, match=rf"{key}\n\s+Field required"):
            TrainingConfig.model_validate({k: v for k, v in data.items() if k != key})
    with pytest.raises(ValidationError, match="label.target\n\\s+Field required"):
        TrainingConfig.model_validate({**data, "label": {"table": "outcomes", "timestamp": "observed_at"}})
    with pytest.raises(ValidationError, match="is a label or bookkeeping column"):
        TrainingConfig.model_validate({**data, "promotion": {"slices": {
            "column": "rain_tomorrow", "edges": [0, 1, 2], "labels": ["a", "b"]}}})
    assert training.prediction_name == "rain_score"
    assert training.model_copy(update={"prediction_column": "rain_probability"}).prediction_name == "rain_probability"


def test_features_config_must_name_a_features_instance(stations):
    training, _ = stations
    other = training.model_copy(update={"features_config": "churn_training"})
    with pytest.raises(TrainingConfigError, match="features_config 'churn_training' is a training config, not "
                                                  "features"):
        load_features_config(other)


def test_composite_keys_are_checked_per_key():
    """Two join keys (a station's sensor): duplicates and the training set's schema use both."""
    training = TrainingConfig.model_validate({
        "template": "training", "instance": "rain", "model_name": "rain", "features_config": "x",
        "label": {"table": "outcomes", "timestamp": "observed_at", "target": "rain_tomorrow"}})
    stamp = datetime(2024, 3, 2, 6, tzinfo=UTC)
    labels = pd.DataFrame({"station_id": ["ST-001", "ST-001", "ST-002"], "sensor": [1, 2, 1],
                           "event_timestamp": [stamp] * 3, "label": [0, 1, 0], "label_day": [stamp.date()] * 3})
    check_labels(labels, training, ["station_id", "sensor"])  # one label per (station, sensor) and day
    with pytest.raises(DuplicateLabels, match="station_id 'ST-001', sensor 1"):
        check_labels(pd.concat([labels, labels.iloc[[0]]]), training, ["station_id", "sensor"])
    suite = validation_suite(training, FeatureColumns(("pressure_hpa",), ()), ["station_id", "sensor"])
    assert suite["expectations"][0]["kwargs"]["column_set"][:3] == ["station_id", "sensor", "event_timestamp"]


def test_an_empty_window_names_the_training_config(stations):
    training, _ = stations
    features = load_features_config(training)
    with pytest.raises(TrainingSetError, match=f"no labels landed for {training.dag_id}"):
        load_labels(features, training, Window(date(2020, 1, 1), date(2020, 1, 5)))
