"""Entity keys that are not churn's: string and composite keys, their types, and the mart's grain."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from pipelines.features.config import FeaturesConfig
from pipelines.features.entity import (
    EntityKeyError,
    duplicate_entity_days,
    entity_frame,
    entity_rows,
    key_types,
)
from pipelines.features.landing import check_partition, read_landed_table
from pipelines.templates import load_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
DAY = date(2025, 3, 1)


def shop_config(entity_key, **table_overrides) -> FeaturesConfig:
    """A CSV use case keyed by store (string) and item (int64), partitions named by the bare day."""
    tables = {
        "sales": {"file": "sales", "columns": {"store_id": "string", "item_id": "int64", "sold_at": "timestamp",
                                                "units": "int64"}},
        **table_overrides,
    }
    return FeaturesConfig.model_validate({
        "template": "features", "instance": "shop",
        "landing": {"path": "/tmp/shop", "format": "csv", "partition": "{ds}", "ready_marker": None,
                    "tables": tables},
        "dbt": {"project": "dags/dbt/shop", "mart": "store_item_daily_features"},
        "validation": {"suite": "dags/expectations/shop_features.json"},
        "feast": {"project": "shop", "feature_views": ["store_item_daily_sales"], "feature_service": "shop_model_v1",
                  "entity_key": entity_key},
    })


def test_churn_keeps_one_integer_key():
    config = load_config(REPO / "dags" / "configs" / "churn_features.yaml")
    assert config.feast.join_keys == ["customer_id"]
    assert key_types(config) == {"customer_id": "int64"}


def test_a_composite_key_keeps_each_part_in_its_type():
    config = shop_config(["store_id", "item_id"])
    assert config.feast.join_keys == ["store_id", "item_id"]
    assert key_types(config) == {"store_id": "string", "item_id": "int64"}
    frame = pd.DataFrame({"store_id": [7, "012"], "item_id": ["3", 4], "units": [1, 2]})
    typed = entity_frame(frame, config)
    assert typed["store_id"].tolist() == ["7", "012"] and typed["item_id"].tolist() == [3, 4]
    assert typed["item_id"].dtype == "int64"


@pytest.mark.parametrize("entity_key", [[], ["store_id", "store_id"]])
def test_an_empty_or_repeated_key_list_is_a_config_error(entity_key):
    with pytest.raises(ValueError, match="must name one join key, or several distinct ones"):
        shop_config(entity_key)


def test_a_key_in_no_table_or_of_a_float_type_is_named():
    with pytest.raises(EntityKeyError, match=r"entity key 'shop_id' is a column of no landing table \(sales\)"):
        key_types(shop_config("shop_id"))
    prices = {"file": "prices", "columns": {"store_id": "float64", "price": "float64"}}
    with pytest.raises(EntityKeyError, match=r"'store_id' must be int64 or string, the same in every landing table "
                                             r"\(got prices: float64, sales: string\)"):
        key_types(shop_config("store_id", prices=prices))


def test_an_entity_frame_refuses_null_keys():
    with pytest.raises(EntityKeyError, match=r"entity key 'store_id' has 1 null\(s\)"):
        entity_frame(pd.DataFrame({"store_id": ["a", None], "item_id": [1, 2]}), shop_config("store_id"))


def test_entity_rows_for_one_and_for_several_join_keys():
    assert entity_rows(["station_id"], ["007", "S1"]) == [{"station_id": "007"}, {"station_id": "S1"}]
    assert entity_rows(["store_id", "item_id"], [("a", 1), {"store_id": "b", "item_id": 2}]) == [
        {"store_id": "a", "item_id": 1}, {"store_id": "b", "item_id": 2}]
    with pytest.raises(ValueError, match=r"key 'a' has 1 part\(s\); the entity's join keys are"):
        entity_rows(["store_id", "item_id"], ["a"])


def test_one_row_per_entity_per_day_names_the_key_the_count_and_examples():
    frame = pd.DataFrame({"store_id": ["a", "a", "a", "b", "b", "c"], "item_id": [1, 1, 1, 2, 2, 1],
                          "ds": [DAY] * 6})
    assert duplicate_entity_days(frame, ["store_id"]) == (
        "(store_id, ds) has 5 duplicate rows over 2 key(s), e.g. store_id='a' ds=2025-03-01 (×3); "
        "store_id='b' ds=2025-03-01 (×2)")
    assert duplicate_entity_days(frame, ["store_id", "item_id"]).startswith(
        "(store_id, item_id, ds) has 5 duplicate rows over 2 key(s), e.g. store_id='a' item_id=1")
    assert duplicate_entity_days(frame.drop_duplicates(), ["store_id", "item_id"]) is None
    with pytest.raises(EntityKeyError, match=r"the mart has no column 'shop_id'"):
        duplicate_entity_days(frame, ["shop_id"])


def test_a_csv_string_key_that_looks_like_a_number_stays_text(tmp_path):
    """CSV has no types: "007" passes a string contract and is read back as "007", not 7."""
    partition = tmp_path / DAY.isoformat()
    partition.mkdir()
    (partition / "sales.csv").write_text("store_id,item_id,sold_at,units\n007,1,2025-03-01T10:00:00Z,3\n"
                                         "012,2,2025-03-01T11:00:00Z,1\n")
    config = shop_config(["store_id", "item_id"])
    assert check_partition(config.landing, tmp_path, DAY).rows == {"sales": 2}
    table = read_landed_table(config.landing, tmp_path, DAY, "sales")
    assert table.column("store_id").to_pylist() == ["007", "012"]
    assert table.column("item_id").to_pylist() == [1, 2]
