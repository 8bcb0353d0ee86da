"""Training-set pieces on tiny frames: the window, the time split, the digest, the checks, the families."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from pipelines.training.config import Hyperparameters, TrainingConfig
from pipelines.training.dataset import FeatureColumns, TrainingSetError, Window, dataset_digest, split_by_time
from pipelines.training.families import build_model, family_params
from pipelines.training.steps import resolve_run, training_key

pytestmark = pytest.mark.unit

CONFIG = TrainingConfig(template="training", instance="churn", model_name="churn", features_config="churn_features",
                        label={"table": "labels", "timestamp": "label_ts", "target": "churned"})


def labelled(days: int, per_day: int = 10, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(days):
        for i in range(per_day):
            rows.append({"customer_id": d * 100 + i, "event_timestamp": datetime(2026, 10, 1 + d, 12, tzinfo=UTC),
                         "label": int(rng.random() < 0.3), "label_day": date(2026, 10, 1 + d),
                         "sessions_30d": int(rng.integers(0, 40)), "plan": rng.choice(["monthly", "annual"])})
    return pd.DataFrame(rows)


def test_window_covers_the_days_before_its_end_and_names_its_last_feature_day():
    window = Window.ending(date(2026, 11, 29), 28)
    assert window.start == date(2026, 11, 1)
    assert window.label_days[0] == date(2026, 11, 1) and window.label_days[-1] == date(2026, 11, 28)
    assert window.last_feature_day == date(2026, 11, 27)  # labels of 11-28 see features as of 11-27 23:59:59


def test_time_split_holds_out_the_latest_days():
    frame = split_by_time(labelled(8), holdout_fraction=0.25)
    holdout_days = sorted(frame.loc[frame["split"] == "holdout", "label_day"].unique())
    assert holdout_days == [date(2026, 10, 7), date(2026, 10, 8)]
    assert frame.loc[frame["split"] == "train", "label_day"].max() < min(holdout_days)


def test_a_single_label_day_cannot_be_split():
    with pytest.raises(TrainingSetError, match=r"labels on 1 day\(s\) only; a time-based holdout needs at least 2"):
        split_by_time(labelled(1), holdout_fraction=0.25)


def test_digest_ignores_row_order_and_sees_any_value_change():
    frame = labelled(3)
    shuffled = frame.sample(frac=1, random_state=1)
    assert dataset_digest(frame) == dataset_digest(shuffled)
    changed = frame.copy()
    changed.loc[5, "sessions_30d"] += 1
    assert dataset_digest(changed) != dataset_digest(frame)


def test_training_key_changes_with_inputs_that_change_the_model_only():
    info = {"digest": "abc", "feature_service": "churn_model_v1"}
    same = training_key(CONFIG, info)
    assert training_key(CONFIG, dict(info)) == same
    assert training_key(CONFIG, {**info, "digest": "abd"}) != same
    assert training_key(resolve_run(CONFIG, {"max_depth": 5}), info) != same
    # torch_mlp's knobs do not enter gradient boosting's key
    assert training_key(resolve_run(CONFIG, {"epochs": 99}), info) == same


def test_run_params_are_validated_like_the_config():
    with pytest.raises(ValueError, match="max_depth"):
        resolve_run(CONFIG, {"max_depth": 0})
    assert resolve_run(CONFIG, {"family": "torch_mlp"}).family == "torch_mlp"


@pytest.mark.parametrize("family", ["gradient_boosting", "torch_mlp"])
def test_each_family_learns_a_real_signal_and_is_seeded(family):
    frame = labelled(20, per_day=20, seed=3)
    frame["label"] = (frame["sessions_30d"] < 12).astype(int)  # a signal any family must find
    hp = Hyperparameters(max_iter=30, min_samples_leaf=5, epochs=80, learning_rate=0.05)
    fitted = [build_model(family, hp, 7, ["sessions_30d"], ["plan"])
              .fit(frame[["sessions_30d", "plan"]], frame["label"])
              for _ in range(2)]
    p1, p2 = (m.predict_proba(frame[["sessions_30d", "plan"]])[:, 1] for m in fitted)
    assert np.allclose(p1, p2)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(frame["label"], p1) > 0.9
    assert set(family_params(family, hp)) <= set(Hyperparameters.model_fields)


def test_feature_columns_lists_numbers_then_categories():
    assert FeatureColumns(("a", "b"), ("c",)).all == ["a", "b", "c"]
