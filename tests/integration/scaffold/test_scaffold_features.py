"""``python -m pipelines.scaffold features`` on a landing folder unlike churn's, then the features steps on its output.

The fixture: weather stations with a string key (``"007"`` must stay text), CSV files, partitions named
``day_YYYY-MM-DD`` and two tables. The scaffold's YAML loads, its DAG file imports through Airflow's DagBag,
and two days run through check_landing → build_mart → validate_mart → publish → apply → materialize with the
real dbt, Great Expectations and Feast; the online values equal a pandas computation of the same features.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from pipelines.core.home import DataHome
from pipelines.core.settings import get_settings
from pipelines.features import steps
from pipelines.scaffold.__main__ import main
from pipelines.templates import load_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DAY1 = date(2025, 3, 1)
DAYS = [DAY1, DAY1 + timedelta(days=1)]
BAD_DAY = DAY1 + timedelta(days=2)
STATIONS = ["007", "S12", "A3"]


def land_weather(root: Path, day: date) -> Path:
    """One day of readings (two per station, 06:00 and 18:00 UTC) and the station list, as CSV."""
    partition = root / f"day_{day.isoformat()}"
    partition.mkdir(parents=True)
    offset = (day - DAY1).days
    rows = ["station_id,read_ts,temperature,rain_mm,sensor"]
    for n, station in enumerate(STATIONS):
        for hour in (6, 18):
            rows.append(f"{station},{day}T{hour:02d}:00:00Z,{10 + n + offset + hour / 10:.1f},{n * hour},s{n}")
    (partition / "readings.csv").write_text("\n".join(rows) + "\n")
    (partition / "stations.csv").write_text("station_id,elevation_m\n007,120\nS12,340\nA3,15\n")
    (partition / "_SUCCESS").write_text("")
    return partition


def expected_features(root: Path, day: date) -> pd.DataFrame:
    """The scaffold's mart computed in pandas: one row per station seen on ``day``."""
    frames = []
    for offset in range(7):
        path = root / f"day_{(day - timedelta(days=offset)).isoformat()}" / "readings.csv"
        if path.exists():
            frames.append(pd.read_csv(path, dtype={"station_id": str}).assign(ds=day - timedelta(days=offset)))
    window = pd.concat(frames)
    today = window[window["ds"] == day]
    out = today.groupby("station_id").agg(
        readings_rows=("temperature", "size"), temperature_mean=("temperature", "mean"),
        temperature_max=("temperature", "max"), rain_mm_mean=("rain_mm", "mean"), rain_mm_max=("rain_mm", "max"))
    out["readings_rows_7d"] = window.groupby("station_id").size()
    return out.reset_index()


@pytest.fixture(scope="module")
def weather(tmp_path_factory):
    """The scaffolded use case in a dags folder of its own, its landing folder holding three days."""
    base = tmp_path_factory.mktemp("weather")
    landing, dags = base / "landing", base / "dags"
    for day in [*DAYS, BAD_DAY]:
        land_weather(landing, day)
    assert main(["features", "weather", "--landing", str(landing), "--entity", "station_id:string",
                 "--timestamp", "read_ts", "--dags-dir", str(dags)]) == 0
    return landing, dags


def test_the_scaffold_writes_a_valid_config_of_the_landing_folder(weather):
    landing, dags = weather
    config = load_config(dags / "configs" / "weather_features.yaml")
    assert config.dag_id == "weather_features"
    assert config.landing.partition == "day_{ds}" and config.landing.format == "csv"
    assert config.landing.tables["readings"].columns["station_id"] == "string"
    assert config.start_date.date() == DAY1
    assert config.feast.entity_key == "station_id" and config.dbt.mart == "station_daily_features"
    assert (dags / "weather_features.py").read_text() == (
        REPO / "dags" / "churn_features.py").read_text().replace(
        "dags/configs/churn_features.yaml", "configs/weather_features.yaml")


def test_the_dag_file_imports_clean_through_the_dagbag(weather, monkeypatch):
    from airflow.dag_processing.dagbag import BundleDagBag

    _, dags = weather
    # Airflow puts its own dags folder on the path; this one is a copy's, so the templates come from the repo's.
    monkeypatch.syspath_prepend(str(REPO / "dags"))
    bag = BundleDagBag(dag_folder=str(dags), bundle_path=dags)
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["weather_features"]  # the Feast definitions are not taken for a DAG
    assert {t.task_id for t in bag.dags["weather_features"].tasks} == {
        "wait_for_partition", "check_landing", "build_mart", "validate_mart", "publish_features",
        "apply_definitions", "materialize_interval", "check_start_date"}


@pytest.fixture(scope="module")
def two_days(weather):
    """The features steps run for two days on the scaffold's output, in a data home of their own."""
    landing, dags = weather
    config = load_config(dags / "configs" / "weather_features.yaml")
    results = []
    for ds in DAYS:
        assert steps.partition_ready(config, ds)
        results.append({
            "landing": steps.check_landing(config, ds),
            "mart": steps.build_mart(config, ds),
            "validation": steps.validate_mart(config, ds),
            "published": (published := steps.publish_features(config, ds)),
            "applied": steps.apply_definitions(config),
            "online": steps.materialize_day(config, ds, published["rows"]),
        })
    return config, landing, results


def test_two_days_run_with_real_dbt_ge_and_feast_and_serve_string_keys(two_days):
    from pipelines.features.feast_store import read_online

    config, landing, results = two_days
    assert [r["landing"] for r in results] == [{"readings": 6, "stations": 3}] * 2
    assert [r["mart"]["mart_rows"] for r in results] == [3, 3]
    assert all(r["validation"]["success"] and r["validation"]["expectations"] > 10 for r in results)
    assert results[0]["applied"]["applied"] is True and results[1]["applied"]["applied"] is False

    online = read_online(config.feast.project, config.feast.feature_service, config.feast.entity_key,
                         [*STATIONS, "7"])
    online = online.set_index("station_id")
    expected = expected_features(landing, DAYS[1]).set_index("station_id")
    assert online.loc["7"].isna().all(), "'7' is not station '007': a string key is never read as a number"
    for column in expected.columns:
        assert online.loc[STATIONS, column].tolist() == pytest.approx(expected.loc[STATIONS, column].tolist()), column
    assert expected.loc["007", "readings_rows_7d"] == 4  # the window spans the two days


def test_a_mart_with_two_rows_for_one_entity_and_day_is_quarantined_and_nothing_published(two_days):
    """The grain is the template's check: a mart model that breaks it fails validate_mart, whatever the suite."""
    config, landing, _ = two_days
    mart_sql = get_settings().resolve(config.dbt.project) / "models" / "marts" / f"{config.dbt.mart}.sql"
    original = mart_sql.read_text()
    # A user's join gone wrong: station 007 comes out twice.
    mart_sql.write_text(original.replace("select * from features",
                                         "select * from features\nunion all\n"
                                         "select * from features where station_id = '007'"))
    paths = steps.FeaturePaths(config)
    try:
        steps.check_landing(config, BAD_DAY)
        steps.build_mart(config, BAD_DAY)
        with pytest.raises(steps.BatchQuarantined) as failure:
            steps.validate_mart(config, BAD_DAY)
    finally:
        mart_sql.write_text(original)
    message = str(failure.value)
    quarantined = DataHome().quarantine(config.instance) / f"day_{BAD_DAY}"
    assert (f"mart station_daily_features for {BAD_DAY} is not one row per entity per day: "
            f"(station_id, ds) has 2 duplicate rows over 1 key(s), e.g. station_id='007' ds={BAD_DAY} (×2)") in message
    assert message.endswith(f"quarantined to {quarantined}")
    assert (quarantined / "readings.csv").exists() and not (landing / f"day_{BAD_DAY}").exists()
    assert paths.warehouse.count_day(BAD_DAY, config.dbt.mart) == 0
    assert not (paths.offline / f"{BAD_DAY}.parquet").exists()
    shutil.move(quarantined, landing / f"day_{BAD_DAY}")  # leave the landing as the other tests found it


def test_scaffolding_again_refuses_to_overwrite_and_force_rewrites(weather, capsys):
    landing, dags = weather
    config_file = dags / "configs" / "weather_features.yaml"
    config_file.write_text(config_file.read_text() + "# my edit\n")
    args = ["features", "weather", "--landing", str(landing), "--entity", "station_id:string",
            "--timestamp", "read_ts", "--dags-dir", str(dags)]

    assert main(args) == 2
    assert "these files exist already, nothing was written" in capsys.readouterr().err
    assert config_file.read_text().endswith("# my edit\n")

    assert main([*args, "--force"]) == 0
    assert not config_file.read_text().endswith("# my edit\n")


def test_a_model_reading_past_the_staging_window_fails_the_build_as_a_project_fault(weather, tmp_path):
    """read_landing refuses a window above loopline_lookback_days: on Postgres those days would not be staged."""
    from pipelines.features.dbt import DbtBuildError, run_dbt_build

    landing, dags = weather
    project = tmp_path / "dbt"
    shutil.copytree(dags / "dbt" / "weather", project)
    staging = project / "models" / "staging" / "stg_readings.sql"
    staging.write_text(staging.read_text().replace("window_days=var('loopline_lookback_days') | int",
                                                   "window_days=10"))
    with pytest.raises(DbtBuildError, match=r"read_landing\('readings', window_days=10\) reads further back than "
                                            r"var loopline_lookback_days \(7 days\)") as failure:
        run_dbt_build(project, ds=DAYS[1], landing_path=landing, file_format="csv", partition="day_{ds}",
                      warehouse_path=tmp_path / "w.duckdb", work_dir=tmp_path / "work", mart="station_daily_features")
    assert failure.value.data_fault is False  # the project's fault, not the day's: nothing would be quarantined
