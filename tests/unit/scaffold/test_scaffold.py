"""The scaffold on tiny landing folders built in code: what it reads, what it writes, what it refuses."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.scaffold.__main__ import main
from pipelines.scaffold.features import features_files, parse_entity, plan_features
from pipelines.scaffold.files import ScaffoldError
from pipelines.scaffold.landing import read_landing_sample
from pipelines.templates import load_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def land_csv(root: Path, day: str = "2025-03-01", folder: str = "day_{ds}") -> Path:
    partition = root / folder.format(ds=day)
    partition.mkdir(parents=True)
    (partition / "readings.csv").write_text("station_id,read_ts,temperature\n007,2025-03-01T06:00:00Z,10.5\n"
                                            "012,2025-03-01T18:00:00Z,11.0\n")
    (partition / "_SUCCESS").write_text("")
    return partition


def test_the_first_partition_gives_layout_format_marker_and_types(tmp_path):
    land_csv(tmp_path, "2025-03-02")
    land_csv(tmp_path, "2025-03-01")
    sample = read_landing_sample(tmp_path, {"station_id"})
    assert (sample.first_day, sample.partition, sample.file_format, sample.ready_marker) == (
        date(2025, 3, 1), "day_{ds}", "csv", "_SUCCESS")
    assert sample.tables == {"readings": {"station_id": "string", "read_ts": "timestamp", "temperature": "float64"}}
    # Without :string, "007" reads as a number: the key's type must then be given.
    assert read_landing_sample(tmp_path).tables["readings"]["station_id"] == "int64"


def test_parquet_and_a_bare_day_folder(tmp_path):
    partition = tmp_path / "2025-03-01"
    partition.mkdir()
    pq.write_table(pa.table({"shop": pa.array(["a"]), "n": pa.array([1], pa.int32()),
                             "flag": pa.array([True])}), partition / "sales.parquet")
    with pytest.raises(ScaffoldError, match=r"column 'flag' is bool, which the landing contract has no type for"):
        read_landing_sample(tmp_path)
    pq.write_table(pa.table({"shop": pa.array(["a"]), "n": pa.array([1], pa.int32())}), partition / "sales.parquet")
    sample = read_landing_sample(tmp_path)
    assert (sample.partition, sample.file_format, sample.ready_marker) == ("{ds}", "parquet", None)
    assert sample.tables == {"sales": {"shop": "string", "n": "int64"}}


@pytest.mark.parametrize("arguments, message", [
    ({"timestamp": "when"}, r"--timestamp when: no landing table has that column \(readings: station_id, read_ts"),
    ({"timestamp": "temperature"}, r"readings.temperature is float64, expected a timestamp or a date"),
    ({"entity": ["shop_id"]}, r"--entity shop_id: readings.csv .* has no column 'shop_id'"),
    ({"entity": ["read_ts:int64"]}, r"--entity read_ts: the key is timestamp in readings, expected int64"),
    ({"entity": ["temperature"]}, r"the key is float64 in readings, expected int64 or string"),
    ({"name": "Weather"}, r"use case name 'Weather' must be lower-case"),
])
def test_what_cannot_be_scaffolded_is_named(tmp_path, arguments, message):
    land_csv(tmp_path)
    values = {"name": "weather", "entity": ["station_id:string"], "timestamp": "read_ts", **arguments}
    with pytest.raises(ScaffoldError, match=message):
        plan_features(values["name"], tmp_path, [parse_entity(e) for e in values["entity"]], values["timestamp"])


def test_no_partition_is_named(tmp_path):
    (tmp_path / "misc").mkdir()
    with pytest.raises(ScaffoldError, match=r"has no partition folder named with a day \(YYYY-MM-DD\)"):
        read_landing_sample(tmp_path)
    with pytest.raises(ScaffoldError, match=r"landing folder .*nowhere does not exist"):
        read_landing_sample(tmp_path / "nowhere")


def test_a_composite_key_gives_one_feast_entity_per_key_and_a_list_in_the_yaml(tmp_path):
    partition = tmp_path / "landing" / "ds=2025-03-01"
    partition.mkdir(parents=True)
    (partition / "sales.csv").write_text("store_id,item_id,sold_at,units\nS1,3,2025-03-01T10:00:00Z,2\n")
    plan = plan_features("shop", tmp_path / "landing", [parse_entity("store_id:string"), parse_entity("item_id")],
                         "sold_at")
    files = features_files(plan, tmp_path / "dags")
    files.write()
    config = load_config(tmp_path / "dags" / "configs" / "shop_features.yaml")
    assert config.feast.join_keys == ["store_id", "item_id"]
    assert config.dbt.mart == "store_item_daily_features"
    definitions = (tmp_path / "dags" / "feature_repos" / "shop" / "definitions.py").read_text()
    assert 'join_keys=["store_id"],\n    value_type=ValueType.STRING' in definitions
    assert 'join_keys=["item_id"],\n    value_type=ValueType.INT64' in definitions
    assert "entities=[store, item]" in definitions
    # Never taken for a pipeline file by the scheduler's filter (it looks for both words).
    assert not ("dag" in definitions.lower() and "airflow" in definitions.lower())
    suite = json.loads((tmp_path / "dags" / "expectations" / "shop_features.json").read_text())
    unique = next(e for e in suite["expectations"] if e["type"] == "expect_compound_columns_to_be_unique")
    assert unique["kwargs"]["column_list"] == ["store_id", "item_id", "ds"]
    mart = (tmp_path / "dags" / "dbt" / "shop" / "models" / "marts" / "store_item_daily_features.sql").read_text()
    assert "today.store_id = recent.store_id and today.item_id = recent.item_id" in mart


def test_the_command_prints_what_it_wrote_and_refuses_to_overwrite(tmp_path, capsys):
    land_csv(tmp_path / "landing")
    args = ["features", "weather", "--landing", str(tmp_path / "landing"), "--entity", "station_id:string",
            "--timestamp", "read_ts", "--dags-dir", str(tmp_path / "dags")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Wrote 11 files:" in out and "configs/weather_features.yaml" in out
    assert "airflow dags test weather_features 2025-03-02" in out
    # One landing macro: the copy written is the churn project's, which every features test exercises.
    written = tmp_path / "dags" / "dbt" / "weather" / "macros" / "read_landing.sql"
    assert written.read_text() == (REPO / "dags" / "dbt" / "churn" / "macros" / "read_landing.sql").read_text()

    (tmp_path / "dags" / "weather_features.py").unlink()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "scaffold features weather: these files exist already, nothing was written:" in err
    assert not (tmp_path / "dags" / "weather_features.py").exists(), "a refused scaffold wrote a file"


def test_training_names_features_label_and_slices_explicitly(tmp_path, capsys):
    partition = land_csv(tmp_path / "landing")
    (partition / "outcomes.csv").write_text("station_id,observed_at,flooded\n007,2025-03-01T12:00:00Z,1\n")
    assert main(["features", "weather", "--landing", str(tmp_path / "landing"), "--entity", "station_id:string",
                 "--timestamp", "read_ts", "--dags-dir", str(tmp_path / "dags")]) == 0
    assert main(["training", "floods", "--features", "weather", "--label", "outcomes.flooded",
                 "--dags-dir", str(tmp_path / "dags")]) == 0
    config = load_config(tmp_path / "dags" / "configs" / "floods_training.yaml")
    assert config.features_config == str(tmp_path / "dags" / "configs" / "weather_features.yaml")
    assert (config.label.table, config.label.timestamp, config.label.target) == ("outcomes", "observed_at", "flooded")
    assert config.promotion.slices is None
    from pipelines.training.config import check_against_features, load_features_config

    check_against_features(config, load_features_config(config))  # the label fits the landing contract
    text = (tmp_path / "dags" / "configs" / "floods_training.yaml").read_text()
    assert "features_config:" in text and "slices: null" in text and "label:" in text
    assert (tmp_path / "dags" / "floods_training.py").read_text().endswith(
        'dag = build_dag(config_for(__file__, "training"))\n')

    assert config.task == "binary" and config.promotion.metric == "roc_auc"

    # A float64 outcome is a regression, judged on RMSE with no floor; asked for as binary it is refused.
    assert main(["training", "temps", "--features", "weather", "--label", "readings.temperature",
                 "--dags-dir", str(tmp_path / "dags")]) == 0
    temps = load_config(tmp_path / "dags" / "configs" / "temps_training.yaml")
    assert temps.task == "regression" and temps.promotion.metric == "rmse"
    assert "floor:" not in (tmp_path / "dags" / "configs" / "temps_training.yaml").read_text()
    capsys.readouterr()
    assert main(["training", "temps2", "--features", "weather", "--label", "readings.temperature",
                 "--task", "binary", "--dags-dir", str(tmp_path / "dags")]) == 2
    refused = capsys.readouterr().err
    assert "readings.temperature is float64; a binary outcome must be int64 (0/1 or class ids)" in refused
