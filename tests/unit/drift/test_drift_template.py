"""The drift_check config and template: validation, the graph, the Asset it emits, the docs it shows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pipelines.drift.config import DriftCheckConfig

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "dags" / "configs"


def config(name: str) -> DriftCheckConfig:
    return DriftCheckConfig.model_validate(yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()))


def build(cfg: DriftCheckConfig):
    if str(REPO / "dags") not in sys.path:
        sys.path.insert(0, str(REPO / "dags"))
    from loopline_templates.drift_check import build_dag

    return build_dag(cfg)


def test_the_shipped_configs_are_valid():
    churn = config("churn_drift_check")
    assert (churn.dag_id, churn.kind, churn.tabular.training_config) == (
        "churn_drift_check", "tabular", "churn_training")
    docs = config("docs_drift_check")
    assert (docs.dag_id, docs.kind, docs.rag.rag_config) == ("docs_drift_check", "rag", "docs_rag_index")


def test_the_section_of_the_other_kind_is_refused():
    raw = yaml.safe_load((CONFIGS / "churn_drift_check.yaml").read_text())
    with pytest.raises(ValidationError, match="rag: set, but kind is tabular; use the 'tabular' section"):
        DriftCheckConfig.model_validate({**raw, "rag": {"hit_rate_drop": 0.1}})
    with pytest.raises(ValidationError, match="drift_share"):
        DriftCheckConfig.model_validate({**raw, "tabular": {"drift_share": 1.5}})


def test_the_tabular_dag_emits_exactly_the_asset_churn_training_is_scheduled_on():
    dag = build(config("churn_drift_check"))
    assert [t.task_id for t in dag.topological_sort()] == ["check_drift", "judge_drift", "emit_retrain"]
    (asset,) = dag.task_dict["emit_retrain"].outlets
    assert (asset.name, asset.uri) == ("churn_retrain", "loopline://retrain/churn")
    from loopline_templates.training import build_dag
    from pipelines.templates import load_config

    training = build_dag(load_config(CONFIGS / "churn_training.yaml"))
    assert "churn_retrain" in str(training.timetable.asset_condition) or any(
        a.name == "churn_retrain" for a in training.timetable.asset_condition.iter_assets().values()
        if hasattr(a, "name"))
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.params["window_days"] == 7


def test_the_dag_docs_state_thresholds_and_guard_rails():
    doc = build(config("churn_drift_check")).doc_md
    for text in ("`wasserstein`", "**30%**", "cooldown_hours: 24", "max_triggers_per_day: 1", "dedupe",
                 "`churn_retrain`", "**`churn_training`**", "reports/churn/drift/<day>.html"):
        assert text in doc, text


def test_a_missing_target_config_is_named(tmp_path):
    from pipelines.drift.targets import target_asset

    cfg = config("churn_drift_check")
    with pytest.raises(ValueError, match="target 'churn_training' has no config"):
        target_asset(cfg, config_dir=tmp_path)


def test_the_rag_dag_emits_exactly_the_asset_docs_rag_index_is_scheduled_on():
    dag = build(config("docs_drift_check"))
    assert [t.task_id for t in dag.topological_sort()] == ["check_drift", "judge_drift", "emit_reindex"]
    (asset,) = dag.task_dict["emit_reindex"].outlets
    assert (asset.name, asset.uri) == ("docs_reindex", "loopline://reindex/docs")
    assert "**`docs_rag_index`**" in dag.doc_md and "frozen question set" in dag.doc_md
