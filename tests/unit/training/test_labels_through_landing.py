"""Labels reach training only through the landing contract and the ready marker, as the features DAG reads
its tables: a day still landing or quarantined gives no labels, a label file that breaks its contract is refused
with the day named, a label table outside the contract is a config error."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from pipelines.core.settings import LooplineSettings
from pipelines.demo.simulator import land_day
from pipelines.features.config import FeaturesConfig
from pipelines.training.config import TrainingConfig
from pipelines.training.dataset import TrainingSetError, Window, load_labels

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
DAYS = [date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)]


@pytest.fixture
def world(tmp_path):
    landing = tmp_path / "landing"
    for day in DAYS:
        land_day(landing, day, n_customers=40)
    raw = yaml.safe_load((REPO / "dags/configs/churn_features.yaml").read_text())
    features = FeaturesConfig.model_validate({**raw, "landing": {**raw["landing"], "path": str(landing)}})
    training = TrainingConfig.model_validate(yaml.safe_load((REPO / "dags/configs/churn_training.yaml").read_text()))
    return features, training, landing, LooplineSettings(home=tmp_path / "home")


def window() -> Window:
    return Window(start=DAYS[0], end=DAYS[-1] + timedelta(days=1))


def test_only_ready_days_give_labels(world):
    features, training, landing, settings = world
    assert set(load_labels(features, training, window(), settings)["label_day"]) == set(DAYS)
    (landing / f"ds={DAYS[1].isoformat()}" / "_SUCCESS").unlink()  # still being written
    assert set(load_labels(features, training, window(), settings)["label_day"]) == {DAYS[0], DAYS[2]}


def test_a_label_file_that_breaks_its_contract_is_refused_with_its_day(world):
    import pyarrow as pa
    import pyarrow.parquet as pq

    features, training, landing, settings = world
    path = landing / f"ds={DAYS[2].isoformat()}" / "labels.parquet"
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.schema.get_field_index("churned"), "churned",
                                    pa.array([str(v) for v in table["churned"].to_pylist()])), path)
    with pytest.raises(TrainingSetError, match=rf"labels of {DAYS[2]}: .*churned"):
        load_labels(features, training, window(), settings)


def test_a_label_table_outside_the_contract_is_a_config_error(world):
    features, training, _, settings = world
    other = training.model_copy(update={"label": training.label.model_copy(update={"table": "outcomes"})})
    with pytest.raises(TrainingSetError, match=r"label.table 'outcomes' .* is not a table of churn_features's "
                                               r"landing contract \(customers, events, labels\)"):
        load_labels(features, other, window(), settings)
