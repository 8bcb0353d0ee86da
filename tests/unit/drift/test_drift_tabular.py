"""Tabular drift on small frames built in code: a shift is found, a copy is not, a schema mismatch is named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.drift.config import TabularDrift
from pipelines.drift.tabular import SchemaMismatch, check_schema, drift_report, roc_auc

pytestmark = pytest.mark.unit

NUMERIC, CATEGORICAL = ["charges", "sessions", "tenure"], ["plan"]


def frame(n: int, seed: int, *, charges_shift: float = 0.0, prediction_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "charges": rng.normal(65 + charges_shift, 20, n), "sessions": rng.poisson(20, n).astype("int64"),
        "tenure": rng.integers(0, 1000, n), "plan": rng.choice(["monthly", "annual"], n, p=[0.6, 0.4]),
        "prediction": np.clip(rng.beta(2, 6, n) + prediction_shift, 0, 1),
    })


def test_same_distribution_finds_no_drift():
    result = drift_report(frame(2000, 1), frame(2000, 2), NUMERIC, CATEGORICAL, TabularDrift())
    assert result.drifted_columns == [] and result.drift_share == 0.0
    assert not result.prediction_drifted and result.prediction_drift < 0.1
    assert set(result.column_scores) == {*NUMERIC, *CATEGORICAL}


def test_a_shifted_column_and_shifted_predictions_are_found():
    result = drift_report(frame(2000, 1), frame(2000, 2, charges_shift=25, prediction_shift=0.15),
                          NUMERIC, CATEGORICAL, TabularDrift())
    assert result.drifted_columns == ["charges"] and result.drift_share == 0.25
    assert result.prediction_drifted and result.prediction_drift > 0.1
    assert result.evidence()["drifted_columns"] == ["charges"]


def test_a_missing_column_is_a_schema_mismatch():
    with pytest.raises(SchemaMismatch, match=r"the current window lacks tenure.*nothing was triggered"):
        drift_report(frame(100, 1), frame(100, 2).drop(columns=["tenure"]), NUMERIC, CATEGORICAL, TabularDrift())


def test_a_retyped_column_is_a_schema_mismatch():
    current = frame(100, 2)
    current["charges"] = current["charges"].astype(str)
    with pytest.raises(SchemaMismatch, match="charges is numeric in the model but object in the current window"):
        check_schema(frame(100, 1), current, NUMERIC, CATEGORICAL)


def test_roc_auc_needs_both_classes():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([1, 1], [0.2, 0.3]) is None
