"""A regression use case trained, registered and judged for real: weather stations keyed by a string
(``ST-001``) predicting tomorrow's temperature (a float target), against a baseline named in the config.

Runs the real landing reader, Feast (a feature repo of its own, file offline store), Great Expectations,
scikit-learn and MLflow's registry on fixtures built here. A first model that beats the persistence baseline
("tomorrow is as warm as today") is promoted; one trained on a target that is pure noise does not beat the
label's mean and is not.
"""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.core import tracking
from pipelines.training import steps
from support.weather_world import DAYS, STATIONS, build, noise, run, warming

pytestmark = pytest.mark.unit


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
