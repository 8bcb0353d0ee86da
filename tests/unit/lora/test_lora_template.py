"""The lora_tune config and DAG: the instance YAML, bad configs, graph shape, form, schedule, light parsing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pipelines.lora import steps
from pipelines.lora.config import LoraTuneConfig

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "dags" / "configs" / "assistant_lora_tune.yaml"
HEAVY = ["pandas", "numpy", "torch", "transformers", "peft", "tokenizers", "mlflow", "sklearn", "safetensors"]
MINIMAL = {"template": "lora_tune", "instance": "helpdesk"}


def assistant() -> LoraTuneConfig:
    return LoraTuneConfig.model_validate(yaml.safe_load(CONFIG.read_text()))


def build(config: LoraTuneConfig):
    if str(REPO / "dags") not in sys.path:
        sys.path.insert(0, str(REPO / "dags"))
    from loopline_templates.lora_tune import build_dag

    return build_dag(config)


def test_the_assistant_instance_validates_and_matches_the_defaults():
    config = assistant()
    assert config.dag_id == "assistant_lora_tune" and config.model_name == "assistant_adapter"
    assert (config.index_asset.name, config.index_asset.uri) == ("docs_index", "loopline://rag/docs")
    assert config.schedule is None and config.base_model == "smollm2" and config.tiny_model is None
    defaults = LoraTuneConfig.model_validate(MINIMAL)
    assert (defaults.base_model, defaults.tiny_model) == ("smollm2", None)
    assert config.tuning.cpu_threads == 1 and config.dataset.max_tokens == 128
    assert config.tuning.gradient_checkpointing and not defaults.tuning.gradient_checkpointing, (
        "SmolLM2's LoRA peak drops by a third with it (docs/benchmarks.md); off by default elsewhere")
    assert config.lora == defaults.lora
    assert config.evaluation == defaults.evaluation.model_copy(update={"promotion": "gate"}), (
        "the assistant's adapters go to its llm_eval gate; the rest are the defaults")


def test_a_tiny_model_needs_a_folder_to_be_built_in():
    with pytest.raises(ValidationError, match=r"tiny_model is built into a folder, but base_model is the packaged "
                                              r"'smollm2': set base_model to a folder"):
        LoraTuneConfig.model_validate({**MINIMAL, "tiny_model": {}})
    tiny = LoraTuneConfig.model_validate({**MINIMAL, "base_model": "home:models/tiny-llama", "tiny_model": {}})
    assert tiny.tiny_model is not None and tiny.tiny_model.hidden_size == 128


@pytest.mark.parametrize("patch,message", [
    ({"tiny_model": {"hidden_size": 100, "num_heads": 3}},
     r"hidden_size \(100\) must be a multiple of num_heads \(3\)"),
    ({"dataset": {"min_answer_chars": 700}}, r"min_answer_chars \(700\) must be below max_answer_chars \(600\)"),
    ({"lora": {"rank": 0}}, "greater than or equal to 1"),
    ({"lora": {"target_modules": []}}, "at least 1 item"),
    ({"lora": {"target_modules": ["q_proj", "v_proj", "q_proj"]}}, "q_proj listed more than once"),
    ({"lora": {"dropout": 0.95}}, "less than or equal to 0.9"),
    ({"lora": {"rnk": 4}}, "Extra inputs are not permitted"),
    ({"tuning": {"gradient_checkpointing": "sometimes"}}, "valid boolean"),
    ({"evaluation": {"min_improvement": 1.5}}, "less than 1"),
    ({"model_name": "Bad-Name"}, "String should match pattern"),
])
def test_bad_configs_are_refused(patch, message):
    with pytest.raises(ValidationError, match=message):
        LoraTuneConfig.model_validate({**MINIMAL, **patch})


def test_the_graph_is_a_chain_of_thin_tasks_ending_in_the_gates_asset():
    dag = build(assistant())
    chain = ["prepare_base_model", "build_dataset", "tune_adapter", "evaluate_adapter", "register_adapter",
             "announce_adapter_candidate"]
    assert sorted(dag.task_dict) == sorted(chain)
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        assert downstream in dag.task_dict[upstream].downstream_task_ids
    assert dag.task_dict["register_adapter"].upstream_task_ids == set(chain[:4])
    announce = dag.task_dict["announce_adapter_candidate"]
    assert [(a.name, a.uri) for a in announce.outlets] == [
        ("assistant_adapter_candidate", "loopline://adapter-candidate/assistant_adapter")]
    plain = build(LoraTuneConfig.model_validate(MINIMAL))
    assert sorted(plain.task_dict) == sorted(chain[:5]), "promotion: perplexity announces nothing"
    assert all(not t.outlets for t in plain.tasks)


def test_house_rules_hold():
    dag = build(assistant())
    assert dag.catchup is False and dag.max_active_runs == 1 and len(dag.doc_md) > 200
    assert {"loopline", "template:lora_tune", "assistant"} <= set(dag.tags)
    for t in dag.tasks:
        assert t.retries >= 1 and t.owner == "ml-platform"
        assert t.python_callable.__doc__ and "\n" not in t.python_callable.__doc__.strip(), t.task_id


def test_it_runs_on_the_docs_index_asset_and_optionally_a_cron():
    from airflow.sdk import AssetOrTimeSchedule

    dag = build(assistant())
    assert [(a.name, a.uri) for a in dag.timetable.asset_condition.objects] == [("docs_index", "loopline://rag/docs")]
    both = build(LoraTuneConfig.model_validate({**MINIMAL, "schedule": "@weekly"}))
    assert isinstance(both.timetable, AssetOrTimeSchedule)
    manual = build(LoraTuneConfig.model_validate({**MINIMAL, "index_asset": None}))
    assert type(manual.timetable).__name__ == "NullTimetable"


def test_the_form_is_typed_and_bounded_and_its_defaults_change_nothing():
    config = assistant()
    params = build(config).params
    schema = {name: params.get_param(name).schema for name in params}
    assert schema["rank"] == {"type": "integer", "minimum": 1, "maximum": 256, "title": "LoRA rank (r)"}
    assert schema["target_modules"]["type"] == "array" and schema["target_modules"]["minItems"] == 1
    assert {"base_model_path", "alpha", "dropout", "epochs", "learning_rate", "max_steps"} <= set(schema)
    assert all(params.get_param(name).description for name in params)
    assert steps.resolve_run(config, params.dump()) == config


def test_the_form_fields_are_the_models_fields():
    """Bounds and descriptions are declared once, on the config model; the form shows the same."""
    from pipelines.core.params import field_schema
    from pipelines.lora.config import LORA_FORM

    params = build(assistant()).params
    for field in LORA_FORM:
        schema = field_schema(LoraTuneConfig, field.path)
        assert params.get_param(field.name).description == schema["description"], field.name
        assert {k: v for k, v in params.get_param(field.name).schema.items() if k != "title"} == {
            k: v for k, v in schema.items() if k != "description"}, field.name
    assert params.get_param("dropout").schema["maximum"] == 0.9
    assert params.get_param("target_modules").schema["uniqueItems"] is True
    assert set(params) == {f.name for f in LORA_FORM} | {"force_promote"}


def test_the_index_asset_is_declared_once():
    from pipelines.core.assets import rag_index

    assert assistant().index_asset_ref == LoraTuneConfig.model_validate(MINIMAL).index_asset_ref == rag_index("docs")
    assert LoraTuneConfig.model_validate({**MINIMAL, "index_asset": None}).index_asset_ref is None


def test_a_form_base_model_is_used_as_it_is_never_built():
    config = assistant()
    run = steps.resolve_run(config, {"base_model_path": "/models/smollm", "rank": 16, "target_modules": ["q_proj"]})
    assert (run.base_model, run.tiny_model) == ("/models/smollm", None)
    assert (run.lora.rank, run.lora.target_modules, run.lora.alpha) == (16, ["q_proj"], 16)
    with pytest.raises(ValidationError):
        steps.resolve_run(config, {"dropout": 2})


def test_building_the_dag_imports_nothing_heavy():
    code = (f"import sys, yaml; sys.path.insert(0, {str(REPO / 'dags')!r});"
            "from pipelines.lora.config import LoraTuneConfig;"
            "from loopline_templates.lora_tune import build_dag;"
            f"build_dag(LoraTuneConfig.model_validate(yaml.safe_load(open({str(CONFIG)!r}))));"
            f"import json; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ.copy())
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
