"""The training template checks a config against the features instance it names when the DAG file is parsed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipelines.templates import load_named
from pipelines.training.config import LabelSource, TrainingConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def build(config):
    if str(REPO / "dags") not in sys.path:
        sys.path.insert(0, str(REPO / "dags"))
    from loopline_templates.training import build_dag

    return build_dag(config)


def test_a_label_block_that_does_not_fit_the_landing_contract_is_a_parse_time_error():
    churn = load_named("churn_training")
    wrong = churn.model_copy(update={"label": LabelSource(table="labels", timestamp="label_ts", target="churn")})
    with pytest.raises(TrainingConfigError, match=r"churn_training: the label table 'labels' of churn_features has "
                                                  r"columns customer_id \(int64\), label_ts \(timestamp\), churned "
                                                  r"\(int64\); label.target 'churn' is not an int64 column of it"):
        build(wrong)


def test_the_churn_dag_names_its_prediction_column_and_slice_gate():
    dag = build(load_named("churn_training"))
    assert "predictions (column `churn_probability`)" in dag.doc_md
    assert "no slice of `tenure_days` losing more than 0.03" in dag.doc_md
    assert "check_start_date" in dag.task_dict
