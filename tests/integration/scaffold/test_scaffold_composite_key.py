"""A composite entity key (store_id string, item_id int64): scaffold → dbt → GE → Feast → online reads."""

from __future__ import annotations

from datetime import date

import pytest

from pipelines.features import steps
from pipelines.features.feast_store import read_online
from pipelines.scaffold.__main__ import main
from pipelines.templates import load_config

pytestmark = pytest.mark.integration

DAYS = [date(2025, 5, 1), date(2025, 5, 2)]


def test_a_composite_key_is_served_by_both_parts(tmp_path):
    for offset, day in enumerate(DAYS):
        partition = tmp_path / "landing" / f"ds={day}"
        partition.mkdir(parents=True)
        rows = ["store_id,item_id,sold_at,units"]
        rows += [f"{store},{item},{day}T{hour}:00:00Z,{item * hour // 10 + offset}"
                 for store in ("S1", "S2") for item in (1, 2) for hour in (10, 15)]
        (partition / "sales.csv").write_text("\n".join(rows) + "\n")
    assert main(["features", "shop", "--landing", str(tmp_path / "landing"), "--entity", "store_id:string",
                 "--entity", "item_id:int64", "--timestamp", "sold_at", "--dags-dir", str(tmp_path / "dags")]) == 0
    config = load_config(tmp_path / "dags" / "configs" / "shop_features.yaml")

    for day in DAYS:
        steps.check_landing(config, day)
        assert steps.build_mart(config, day)["mart_rows"] == 4
        steps.validate_mart(config, day)
        published = steps.publish_features(config, day)
        steps.apply_definitions(config)
        steps.materialize_day(config, day, published["rows"])

    online = read_online(config.feast.project, config.feast.feature_service, config.feast.entity_key,
                         [("S1", 1), ("S2", 2), ("S1", 3)])
    assert online[["store_id", "item_id"]].values.tolist() == [["S1", 1], ["S2", 2], ["S1", 3]]
    # Day 2: units 1+1 and 1+1 for item 1 at 10 and 15 h; item 2: 2+1 and 3+1.
    assert online["units_max"].tolist()[:2] == [2, 4]
    assert online["units_mean"].tolist()[:2] == pytest.approx([2.0, 3.5])
    assert online["sales_rows_7d"].tolist()[:2] == [4, 4]
    assert online.iloc[2].drop(["store_id", "item_id"]).isna().all()  # no such (store, item)
