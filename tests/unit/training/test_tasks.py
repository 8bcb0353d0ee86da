"""Training beyond binary churn: metrics per task and their directions, the promotion metric checked at parse
time, the baselines a first model must beat, slices by value, and a multiclass model fitted and judged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from pipelines.training import steps
from pipelines.training.config import (
    TASK_METRICS,
    PromotionPolicy,
    SliceSpec,
    TrainingConfig,
    higher_is_better,
)
from pipelines.training.dataset import FeatureColumns, NonFiniteLabels, check_labels, validation_suite
from pipelines.training.evaluation import (
    SliceColumnError,
    baseline_output,
    check_baseline_column,
    check_slice_column,
    evaluation,
    metric_value,
    metrics,
    model_output,
)
from pipelines.training.promotion import Evaluation, SliceScore, decide

pytestmark = pytest.mark.unit

LABEL = {"table": "outcomes", "timestamp": "observed_at", "target": "temp_tomorrow"}


def config(**extra) -> TrainingConfig:
    return TrainingConfig.model_validate({"template": "training", "instance": "weather", "model_name": "weather",
                                          "features_config": "x", "label": LABEL, **extra})


# --- metrics and directions ------------------------------------------------------------------------------------

def test_each_task_has_its_metrics_with_a_direction():
    assert {t: set(m) for t, m in TASK_METRICS.items()} == {
        "binary": {"roc_auc", "pr_auc", "log_loss", "brier", "accuracy"},
        "multiclass": {"macro_f1", "accuracy", "log_loss"},
        "regression": {"rmse", "mae", "r2"},
    }
    assert [m for m in ("roc_auc", "macro_f1", "r2", "accuracy") if not higher_is_better(m)] == []
    assert [m for m in ("log_loss", "brier", "rmse", "mae") if higher_is_better(m)] == []
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        higher_is_better("auc")


def test_regression_metrics_on_known_values():
    got = metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]), "regression")
    assert got["rmse"] == pytest.approx(1.0)  # sqrt(4 / 4)
    assert got["mae"] == pytest.approx(0.5)
    assert got["r2"] == pytest.approx(1 - 4 / 5)


def test_multiclass_metrics_on_known_values():
    classes = np.array([0, 1, 2])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    got = metrics(np.array([0, 1, 2, 2]), probabilities, "multiclass", classes)
    assert got["accuracy"] == pytest.approx(0.75)
    # per class F1: 1, 2/3, 2/3
    assert got["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert got["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.8, 0.1, 0.8])))


def test_binary_metrics_are_what_they_were():
    y, p = np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9])
    got = metrics(y, p)
    assert set(got) == {"roc_auc", "pr_auc", "log_loss", "brier", "accuracy"}
    assert got["roc_auc"] == pytest.approx(0.75) and got["accuracy"] == pytest.approx(0.5)
    assert metric_value("roc_auc", np.array([1, 1]), np.array([0.2, 0.9])) is None  # one class: undefined
    assert model_output("binary", np.array([[0.9, 0.1], [0.3, 0.7]])).tolist() == [0.1, 0.7]


# --- the promotion metric and its direction --------------------------------------------------------------------

def test_the_promotion_metric_defaults_per_task_and_is_checked_at_parse_time():
    assert config().policy.metric == "roc_auc" and config().policy.floor == 0.65  # churn's defaults, unchanged
    assert config(task="multiclass").policy.metric == "macro_f1"
    regression = config(task="regression")
    assert regression.policy.metric == "rmse" and regression.policy.floor is None
    assert not regression.policy.higher_is_better
    assert config(task="regression", promotion={"metric": "r2"}).policy.higher_is_better
    with pytest.raises(ValidationError, match=r"promotion.metric 'roc_auc' is not a metric of task regression; its "
                                              r"metrics are rmse \(lower is better\), mae \(lower is better\), r2 "
                                              r"\(higher is better\)"):
        config(task="regression", promotion={"metric": "roc_auc"})
    with pytest.raises(ValidationError, match=r"promotion.metric 'rmse' is not a metric of task binary; its metrics "
                                              r"are roc_auc \(higher is better\), pr_auc"):
        config(promotion={"metric": "rmse"})
    with pytest.raises(ValidationError, match=r"promotion.floor 1.5 is outside \[0, 1\], where macro_f1 lies"):
        config(task="multiclass", promotion={"floor": 1.5})
    assert config(task="regression", promotion={"floor": 12.5}).policy.floor == 12.5  # an RMSE ceiling


def test_task_and_family_and_baseline_must_fit_together():
    with pytest.raises(ValidationError, match="family torch_mlp trains binary tasks only .* use family "
                                              "gradient_boosting for task regression"):
        config(task="regression", family="torch_mlp")
    # The trigger form re-validates: torch_mlp cannot be picked for a regression run either.
    with pytest.raises(ValidationError, match="torch_mlp trains binary tasks only"):
        steps.resolve_run(config(task="regression"), {"family": "torch_mlp"})
    with pytest.raises(ValidationError, match=r"promotion.baseline 'previous_value:temp_c' predicts a number, which "
                                              r"only a regression task can score; for task binary use prior"):
        config(promotion={"baseline": "previous_value:temp_c"})
    with pytest.raises(ValidationError, match="String should match pattern"):
        config(promotion={"baseline": "yesterday"})
    with pytest.raises(ValidationError, match="reads a label or bookkeeping column"):
        config(task="regression", promotion={"baseline": "previous_value:temp_tomorrow"})


def test_lower_is_better_metrics_promote_the_lower_value():
    policy = config(task="regression", promotion={"min_improvement": 0.1, "floor": 5.0}).policy
    assert decide(Evaluation(2.0), Evaluation(2.5), policy, champion_version="1").promote
    worse = decide(Evaluation(2.45), Evaluation(2.5), policy, champion_version="1")
    assert not worse.promote
    assert worse.reason == "rmse 2.4500 does not beat champion v1's 2.5000 by the margin 0.1000 (difference +0.0500)"
    ceiling = decide(Evaluation(6.0), None, policy)
    assert not ceiling.promote and ceiling.reason == "rmse 6.0000 is above the ceiling (lower is better) 5.0000"


def test_a_slice_that_worsens_a_lower_is_better_metric_blocks_promotion():
    policy = config(task="regression", promotion={"max_slice_regression": 0.2, "slices": {
        "column": "climate", "values": ["coastal", "alpine"], "min_rows": 5}}).policy
    champion = Evaluation(2.0, {"coastal": SliceScore(30, 1.0), "alpine": SliceScore(30, 3.0)})
    challenger = Evaluation(1.5, {"coastal": SliceScore(30, 1.5), "alpine": SliceScore(30, 1.5)})
    decision = decide(challenger, champion, policy)
    assert not decision.promote
    assert decision.reason == "slice coastal: rmse worsens 0.5000 (1.0000 → 1.5000), more than the bound 0.2000"


def test_a_first_model_must_beat_the_baseline_by_the_margin():
    policy = config(task="regression", promotion={"baseline": "prior", "min_gain_over_baseline": 0.5}).policy
    beaten = decide(Evaluation(2.0), None, policy, baseline=3.0)
    assert beaten.promote
    assert beaten.reason == ("first model: rmse 2.0000 (no floor set) and beats the baseline prior's 3.0000 by "
                             "min_gain_over_baseline 0.5000 (gain +1.0000)")
    close = decide(Evaluation(2.8), None, policy, baseline=3.0)
    assert not close.promote
    assert close.reason == ("first model: rmse 2.8000 does not beat the baseline prior's 3.0000 by "
                            "min_gain_over_baseline 0.5000 (gain +0.2000); a model no better than the baseline "
                            "is not promoted")
    assert decide(Evaluation(2.8), None, policy, baseline=3.0, force=True).promote
    # A champion exists: the challenger is judged against it, as before.
    assert decide(Evaluation(2.0), Evaluation(2.5), policy, baseline=1.0).promote


def test_without_a_margin_a_tie_with_the_baseline_is_not_a_win():
    policy = PromotionPolicy(floor=0.65, baseline="prior")
    assert not decide(Evaluation(0.7), None, policy, baseline=0.7).promote
    assert decide(Evaluation(0.71), None, policy, baseline=0.7).promote


# --- baselines ---------------------------------------------------------------------------------------------------

def frames():
    train = pd.DataFrame({"temp_c": [10.0, 12.0, 20.0, 22.0], "climate": ["alpine", "alpine", "coastal", "coastal"],
                          "label": [11.0, 13.0, 21.0, 23.0]})
    holdout = pd.DataFrame({"temp_c": [11.0, 21.0, 30.0], "climate": ["alpine", "coastal", "desert"],
                            "label": [12.0, 22.0, 31.0]})
    return train, holdout


def test_regression_baselines():
    train, holdout = frames()
    assert baseline_output("prior", "regression", train, holdout).tolist() == [17.0] * 3
    assert baseline_output("previous_value:temp_c", "regression", train, holdout).tolist() == [11.0, 21.0, 30.0]
    # One split of temp_c: 12 below 16, 22 above it.
    assert baseline_output("rule:temp_c", "regression", train, holdout).tolist() == [12.0, 22.0, 22.0]
    # Per value of a category, the prior for one never seen in training.
    assert baseline_output("rule:climate", "regression", train, holdout).tolist() == [12.0, 22.0, 17.0]


def test_classification_baselines():
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "label": [0, 0, 1, 1, 2, 2]})
    holdout = pd.DataFrame({"x": [1.5, 5.5], "label": [0, 2]})
    prior = baseline_output("prior", "multiclass", train, holdout, np.array([0, 1, 2]))
    assert prior.shape == (2, 3) and np.allclose(prior, 1 / 3)
    stump = baseline_output("rule:x", "multiclass", train, holdout, np.array([0, 1, 2]))
    assert stump.shape == (2, 3) and np.allclose(stump.sum(axis=1), 1)
    binary = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": [0, 0, 0, 1]})
    assert baseline_output("prior", "binary", binary, holdout).tolist() == [0.25, 0.25]
    assert baseline_output("rule:x", "binary", binary, holdout).tolist() == [0.0, 1.0]


def test_a_baseline_column_must_be_a_fitting_feature():
    check_baseline_column(PromotionPolicy(baseline="rule:climate"), ["temp_c"], ["climate"], "w.yaml")
    with pytest.raises(SliceColumnError, match=r"promotion.baseline 'previous_value:climate' of w.yaml: 'climate' is "
                                               r"a categorical feature, not a number; the numeric features are temp_c"):
        check_baseline_column(PromotionPolicy(baseline="previous_value:climate"), ["temp_c"], ["climate"], "w.yaml")
    with pytest.raises(SliceColumnError, match="'tenure_days' is not in the training set"):
        check_baseline_column(PromotionPolicy(baseline="rule:tenure_days"), ["temp_c"], ["climate"], "w.yaml")


# --- slices on any column ----------------------------------------------------------------------------------------

def test_slices_by_value_on_a_categorical_column():
    spec = SliceSpec(column="climate", values=["alpine", "coastal"], min_rows=1)
    check_slice_column(spec, ["temp_c"], ["climate"], "w.yaml")  # categorical is fine by values
    _, holdout = frames()
    scored = evaluation(holdout, np.array([12.0, 20.0, 31.0]), spec, "regression", "mae")
    assert scored.metric == pytest.approx(2 / 3)
    assert scored.slices == {"alpine": SliceScore(1, 0.0), "coastal": SliceScore(1, 2.0)}
    with pytest.raises(ValidationError, match="need either edges .* or values"):
        SliceSpec(column="climate", values=["a"], edges=[0, 1, 2], labels=["x", "y"])


# --- labels per task -------------------------------------------------------------------------------------------

def test_label_checks_follow_the_task():
    columns = FeatureColumns(("temp_c",), ())
    types = {t: [e["type"] for e in validation_suite(config(task=t), columns, ["station_id"])["expectations"]
                 if e["kwargs"].get("column") == "label"] for t in ("binary", "multiclass", "regression")}
    assert types == {
        "binary": ["expect_column_values_to_be_in_set", "expect_column_mean_to_be_between"],
        "multiclass": ["expect_column_values_to_not_be_null", "expect_column_unique_value_count_to_be_between"],
        "regression": ["expect_column_values_to_not_be_null", "expect_column_stdev_to_be_between"],
    }
    stamp = pd.Timestamp("2024-03-02 06:00", tz="UTC")
    labels = pd.DataFrame({"station_id": ["ST-001", "ST-002"], "event_timestamp": [stamp] * 2,
                           "label": [1.5, np.inf], "label_day": [stamp.date()] * 2})
    with pytest.raises(NonFiniteLabels, match=r"1 of 2 labels have a target that is not a finite number \(e.g. "
                                              r"station_id 'ST-002' on 2024-03-02: inf\); label.target "
                                              r"'temp_tomorrow' of a regression task must be finite"):
        check_labels(labels, config(task="regression"), ["station_id"])


# --- a multiclass model, fitted and judged -----------------------------------------------------------------------

def test_a_multiclass_model_is_fitted_and_judged_on_macro_f1(tmp_path):
    rng = np.random.default_rng(5)
    n = 600
    frame = pd.DataFrame({"pressure_hpa": rng.normal(1010, 8, n), "humidity": rng.integers(20, 100, n),
                          "climate": rng.choice(["coastal", "alpine"], n)})
    # Three weather classes from pressure: 0 dry, 1 cloudy, 2 rain.
    frame["label"] = 2 - np.digitize(frame["pressure_hpa"], [1004, 1014])
    frame["split"] = ["train"] * 450 + ["holdout"] * 150
    training = config(task="multiclass", hyperparameters={"max_iter": 30, "min_samples_leaf": 10},
                      promotion={"baseline": "prior", "slices": {"column": "climate", "values": ["coastal", "alpine"],
                                                                 "min_rows": 10}})
    trained = steps.train_and_evaluate(training, frame, ["pressure_hpa", "humidity"], ["climate"], tmp_path)
    assert list(trained.model.classes_) == [0, 1, 2]
    assert set(trained.metrics) == {"macro_f1", "accuracy", "log_loss"}
    assert trained.metrics["macro_f1"] > 0.85 and trained.evaluation.metric == trained.metrics["macro_f1"]
    assert set(trained.evaluation.slices) == {"coastal", "alpine"}
    assert trained.baseline_metrics["macro_f1"] < 0.4  # the class shares predict one class for every row
    assert [p.name for p in trained.plots] == ["feature_importance.png"]
    policy = training.policy
    verdict = decide(trained.evaluation, None, policy, baseline=trained.baseline_metrics["macro_f1"])
    assert verdict.promote and "beats the baseline prior's" in verdict.reason


def test_scoring_writes_the_predicted_class_and_its_probability_for_multiclass():
    from sklearn.ensemble import HistGradientBoostingClassifier

    from pipelines.core.trusted_models import TrustedModel

    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 300)})
    fitted = HistGradientBoostingClassifier(max_iter=20).fit(frame, np.digitize(frame["x"], [-0.5, 0.5]) + 7)
    columns = steps.served_columns("multiclass", TrustedModel("w", "1", fitted, ["x"]), frame, "weather_class")
    assert set(columns) == {"weather_class", "weather_class_probability"}
    assert set(columns["weather_class"]) == {7, 8, 9}
    assert np.allclose(columns["weather_class_probability"], fitted.predict_proba(frame).max(axis=1))
