"""A second use case, unlike churn in every assumption, through the templates: features → training → scoring →
drift check, each DAG through ``dag.test()``.

The fixture (``tests/fixtures/usecases/airquality/``, data from ``support.airquality_world``): six monitoring
stations with string keys (``"007"``, ``"0042"``), CSV partitions named by the bare day with file names other
than the table names, a regression target (the next day's mean PM2.5), a 400-day training window and no
``tenure_days``. Its dbt project, Great Expectations suite and Feast repo were written by
``python -m pipelines.scaffold features``, its tables then renamed apart from their files (docs/adding-a-use-case.md).

Over a year of features through the DAG would take an hour: the days before the last two are published from the
fixture's mart computed in pandas (what ``publish_features`` writes), and the last two run through the features
DAG with the real dbt, Great Expectations and Feast, which must give exactly the same rows.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.templates import load_config
from support.airflow_helpers import build_and_register, xcom
from support.airquality_world import CONFIGS, STATIONS, expected_features, land_days, publish_history
from support.churn_world import own_data_home

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRST = date(2024, 1, 1)
LAST = FIRST + timedelta(days=406)  # the newest feature day training reads
DAG_DAYS = [LAST - timedelta(days=1), LAST]  # the days the features DAG runs (the rest: published history)
WINDOW_DAYS = 400  # label days [LAST - 398, LAST + 2): a window over a year
WINDOW_END = LAST + timedelta(days=2)
EPISODE = LAST + timedelta(days=2)  # a haze episode starts after the training window's last label day
DRIFT_DAYS = [EPISODE + timedelta(days=n) for n in range(7)]
LANDED_DAYS = (DRIFT_DAYS[-1] - FIRST).days + 2  # through the late labels of the last drift day


def midnight(day: date, hour: int = 0) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


def states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


@pytest.fixture(scope="module")
def world(airflow_db, tmp_path_factory):
    """A data home of its own, the landing of every day, the history published, the three DAGs registered."""
    home = tmp_path_factory.mktemp("airquality-home")
    with own_data_home(home) as settings:
        configs = {kind: load_config(CONFIGS / f"airquality_{kind}.yaml")
                   for kind in ("features", "training", "drift_check")}
        landing = settings.resolve(configs["features"].landing.path)
        land_days(landing, FIRST, LANDED_DAYS, episode_start=EPISODE)
        history = [FIRST + timedelta(days=n) for n in range(6, (DAG_DAYS[0] - FIRST).days)]
        publish_history(settings, configs["features"], history)
        dags = {kind: build_and_register(config) for kind, config in configs.items()}
        yield {"settings": settings, "configs": configs, "dags": dags, "landing": landing}


@pytest.fixture(scope="module")
def feature_runs(world):
    """The features DAG for the last two days (a run at D+1 covers the day D): real dbt, GE and Feast."""
    return [world["dags"]["features"].test(logical_date=midnight(day + timedelta(days=1))) for day in DAG_DAYS]


@pytest.fixture(scope="module")
def training_run(world, feature_runs):
    return world["dags"]["training"].test(run_conf={"window_end": str(WINDOW_END), "window_days": WINDOW_DAYS})


def test_the_features_dag_builds_the_days_as_the_history_was_published(world, feature_runs):
    from pipelines.features.feast_store import read_online
    from pipelines.features.steps import FeaturePaths

    for day, run in zip(DAG_DAYS, feature_runs, strict=True):
        assert run.state == "success", (day, states(run))
        assert set(states(run).values()) == {"success"}, (day, states(run))
        assert xcom(run, "check_landing") == {"readings": 24, "outcomes": 6}
    config = world["configs"]["features"]
    offline = FeaturePaths(config, world["settings"]).offline
    for day in DAG_DAYS:
        built = pd.read_parquet(offline / f"{day}.parquet")
        expected = expected_features(world["landing"], day)
        pd.testing.assert_frame_equal(built.sort_values("station_id").reset_index(drop=True), expected,
                                      check_dtype=False, check_exact=False, rtol=1e-9)
        assert built["station_id"].tolist() == sorted(STATIONS)  # the keys as landed, text
    # One schema over the offline folder, history and DAG days alike: Feast reads them as one source.
    history = offline / f"{DAG_DAYS[0] - timedelta(days=1)}.parquet"
    assert pq.read_schema(history).types == pq.read_schema(offline / f"{DAG_DAYS[0]}.parquet").types
    online = read_online(config.feast.project, config.feast.feature_service, config.feast.entity_key,
                         ["007", "7", "0042"]).set_index("station_id")
    assert online.loc["7"].isna().all(), "'7' is not station '007': a string key is never read as a number"
    assert online.loc["007", "readings_rows"] == 4 and online.loc["0042", "readings_rows_7d"] == 28


def test_training_learns_the_regression_over_more_than_a_year_and_beats_the_baseline(world, training_run):
    from pipelines.core import tracking

    run = training_run
    assert run.state == "success", states(run)
    info = xcom(run, "build_training_set")
    assert info["window_start"] == str(WINDOW_END - timedelta(days=WINDOW_DAYS))
    assert info["window_end"] == str(WINDOW_END)
    assert info["entity_keys"] == ["station_id"] and info["categorical"] == []
    assert info["rows"] == WINDOW_DAYS * len(STATIONS)  # every label day of the window found its features
    assert "tenure_days" not in info["numeric"] and "pm25_mean" in info["numeric"]
    training_set = pd.read_parquet(info["path"])
    assert set(training_set["station_id"]) == set(STATIONS)  # "007" and "0042" stayed text end to end
    assert training_set["label"].dtype == "float64"

    versions = tracking.client().search_model_versions("name = 'airquality'")
    assert len(versions) == 1
    version = versions[0]
    assert str(tracking.champion("airquality").version) == str(version.version)
    metrics = tracking.client().get_run(version.run_id).data.metrics
    assert {"holdout_rmse", "holdout_mae", "holdout_r2", "baseline_rmse"} <= set(metrics)
    assert "holdout_roc_auc" not in metrics
    assert metrics["holdout_rmse"] < 6.0 and metrics["holdout_r2"] > 0.6, metrics
    # The signal is learnable beyond "tomorrow is as bad as today": the model beats it by the configured gain.
    assert metrics["holdout_rmse"] < metrics["baseline_rmse"] - 1.0, metrics
    assert {f"holdout_rmse_{s}" for s in ("calm", "breeze", "windy")} <= set(metrics)
    decision = xcom(run, "evaluate_and_promote")
    assert decision["promoted"] is True and decision["metric"] == "rmse"
    assert decision["baseline_value"] == round(metrics["baseline_rmse"], 4)
    assert decision["reason"].startswith("first model: rmse "), decision["reason"]
    assert "baseline previous_value:pm25_mean" in decision["reason"], decision["reason"]
    assert version.tags["loopline.promotion"] == "promoted"


def test_batch_predictions_carry_the_configured_column_and_the_model_version(world, training_run):
    from pipelines.core import tracking

    scored = xcom(training_run, "score_batch")
    champion = tracking.champion("airquality")
    assert scored["prediction_column"] == "pm25_forecast" and scored["ds"] == str(LAST)
    assert scored["model_version"] == str(champion.version) and scored["rows"] == len(STATIONS)
    predictions = pd.read_parquet(scored["path"])
    assert list(predictions.columns) == ["station_id", "ds", "pm25_forecast", "model_name", "model_version",
                                         "model_run_id"]
    assert sorted(predictions["station_id"]) == sorted(STATIONS)
    assert set(predictions["model_version"]) == {str(champion.version)}
    assert predictions["pm25_forecast"].between(0, 150).all()
    assert scored["mean_prediction"] == pytest.approx(predictions["pm25_forecast"].mean(), abs=1e-3)


@pytest.fixture(scope="module")
def drift_run(world, training_run):
    """The haze week: its features published and scored by the champion day by day, then the drift check."""
    from pipelines.training import steps

    for day in DRIFT_DAYS:
        publish_history(world["settings"], world["configs"]["features"], [day])
        assert steps.score_latest(world["configs"]["training"])["ds"] == str(day)
    window_end = DRIFT_DAYS[-1] + timedelta(days=1)
    return world["dags"]["drift_check"].test(logical_date=midnight(window_end, 3),
                                             run_conf={"window_end": str(window_end)})


def test_the_drift_check_sees_the_episode_in_the_predictions_and_the_late_label_rmse(world, drift_run):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    run = drift_run
    assert run.state == "success", states(run)
    assert states(run) == {"check_drift": "success", "judge_drift": "success", "emit_retrain": "success"}
    evidence = xcom(run, "check_drift")
    assert evidence["window"] == [str(DRIFT_DAYS[0]), str(DRIFT_DAYS[-1] + timedelta(days=1))]
    # The predicted values came from the batch files, under the configured column name.
    assert evidence["current"]["rows"] == len(DRIFT_DAYS) * len(STATIONS)
    assert evidence["current"]["predictions_from_batch"] == evidence["current"]["rows"]
    assert evidence["prediction_drifted"] is True and evidence["prediction_drift"] > 0.1
    # Performance on late labels, with the regression's own metric.
    assert evidence["performance_metric"] == "rmse" and evidence["roc_auc"] is None
    assert evidence["labelled_rows"] == len(DRIFT_DAYS) * len(STATIONS)
    assert evidence["performance"] > 1.5 * evidence["champion_performance"], evidence
    verdict = xcom(run, "judge_drift")
    assert {"prediction_drift", "performance"} <= set(verdict["signals"]), verdict
    assert any(r.startswith("performance: rmse ") and "above the champion's" in r for r in verdict["reasons"])
    with create_session() as session:
        events = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                                 .where(AssetModel.name == "airquality_retrain")).all()
        extras = [e.extra for e in events if e.source_run_id == run.run_id]
    assert len(extras) == 1 and extras[0]["performance_metric"] == "rmse"
    assert extras[0]["target_dag_id"] == "airquality_training"
