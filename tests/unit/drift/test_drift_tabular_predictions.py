"""The drift check reads the batch predictions under the name the training config gives them (not churn's
``churn_probability``), keyed by whatever entity key the features use (a string ``ST-001`` here)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from pipelines.core.home import DataHome
from pipelines.core.settings import LooplineSettings
from pipelines.drift.tabular import SchemaMismatch, _batch_predictions
from pipelines.training.config import TrainingConfig

pytestmark = pytest.mark.unit

DAYS = [date(2024, 3, 1), date(2024, 3, 2)]


def training(**extra) -> TrainingConfig:
    return TrainingConfig.model_validate({
        "template": "training", "instance": "rain", "model_name": "rain", "features_config": "station_features",
        "label": {"table": "outcomes", "timestamp": "observed_at", "target": "rain_tomorrow"}, **extra})


def write_predictions(settings: LooplineSettings, column: str) -> None:
    for n, day in enumerate(DAYS):
        path = DataHome(settings).predictions("rain", day)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"station_id": ["ST-001", "ST-002"], "ds": day, column: [0.1 + n, 0.2 + n],
                      "model_name": "rain", "model_version": ["3", "2"], "model_run_id": "r"}).to_parquet(path)


def test_predictions_are_read_under_the_configured_name_with_string_keys(tmp_path):
    settings = LooplineSettings(home=tmp_path)
    write_predictions(settings, "rain_score")  # the default name: <model_name>_score
    frame = _batch_predictions(training(), ["station_id"], "3", DAYS, settings)
    assert frame.to_dict("records") == [
        {"station_id": "ST-001", "ds": "2024-03-01", "prediction": 0.1},
        {"station_id": "ST-001", "ds": "2024-03-02", "prediction": 1.1},
    ]


def test_predictions_under_another_name_are_a_schema_mismatch_that_names_the_key(tmp_path):
    settings = LooplineSettings(home=tmp_path)
    write_predictions(settings, "churn_probability")
    with pytest.raises(SchemaMismatch, match=r"has no column 'rain_score', the prediction column rain_training "
                                             r"names .*set prediction_column in dags/configs/rain_training.yaml"):
        _batch_predictions(training(), ["station_id"], "3", DAYS, settings)
    named = training(prediction_column="churn_probability")
    assert len(_batch_predictions(named, ["station_id"], "3", DAYS, settings)) == 2


def test_the_reference_is_scored_as_score_batch_writes_it_for_every_task():
    """Probability (binary), class id (multiclass) or value (regression): what the prediction column holds."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from pipelines.core.trusted_models import TrustedModel
    from pipelines.drift.tabular import _predict

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 300)})
    regressor = HistGradientBoostingRegressor(max_iter=20).fit(frame, 20 + 5 * frame["x"])
    values = _predict(TrustedModel("rain", "1", regressor, ["x"]), frame, ["x"], "regression")
    assert values.dtype == float and values.min() < 15 and values.max() > 25  # temperatures, not probabilities
    classes = np.digitize(frame["x"], [-0.5, 0.5]) + 3  # class ids 3, 4, 5
    classifier = HistGradientBoostingClassifier(max_iter=20).fit(frame, classes)
    predicted = _predict(TrustedModel("rain", "1", classifier, ["x"]), frame, ["x"], "multiclass")
    assert set(predicted) == {3.0, 4.0, 5.0} and (predicted == classes).mean() > 0.9
    binary = HistGradientBoostingClassifier(max_iter=20).fit(frame, (frame["x"] > 0).astype(int))
    probabilities = _predict(TrustedModel("rain", "1", binary, ["x"]), frame, ["x"])
    assert ((probabilities >= 0) & (probabilities <= 1)).all() and probabilities.std() > 0.3
