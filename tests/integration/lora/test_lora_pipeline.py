"""assistant_lora_tune through Airflow (``dag.test()``) on the tiny test model, and every bad input it names.

The pipeline is the instance's YAML with the tiny from-scratch Llama as its base (:data:`TINY`: seconds per
run, so the many runs below stay cheap); the default base, SmolLM2, is tuned in ``test_lora_smollm2.py``.

One run builds the tiny Llama, tunes, evaluates, registers the adapter and gives it ``@challenger`` for the
assistant's llm_eval gate (the instance's ``evaluation.promotion: gate``), announcing it with the Asset
``assistant_adapter_candidate``; a re-run reuses everything and announces nothing; the same adapter under
``promotion: perplexity`` takes ``@champion`` here; a weak challenger from the form leaves the aliases; a
missing base model fails the run. A mismatched tokenizer
and an empty dataset are refused by the steps themselves. Nothing bad registers a version or moves the
champion.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipelines.core import tracking
from pipelines.lora import steps
from pipelines.lora.base_model import BaseModelError, load_tokenizer
from pipelines.lora.config import LoraTuneConfig
from pipelines.lora.dataset import DatasetError
from support.airflow_helpers import build_and_register, xcom

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "dags" / "configs" / "assistant_lora_tune.yaml"
NAME = "assistant_adapter"
TINY = {"base_model": "home:models/tiny-llama", "tiny_model": {}, "dataset": {"max_tokens": 256},
        "tuning": {"epochs": 10, "learning_rate": 0.01, "max_steps": 200, "batch_size": 8, "cpu_threads": 1}}



CANDIDATE_URI = "loopline://adapter-candidate/assistant_adapter"


def task_states(run) -> dict[str, tuple[str, int]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(TaskInstance.task_id, TaskInstance.state, TaskInstance.try_number).where(
            TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)).all()
    return {task_id: (str(state), tries) for task_id, state, tries in rows}


def registry_state() -> tuple[set[str], str | None, int | None]:
    from pipelines.llm_eval.candidates import alias_version

    versions = {str(v.version) for v in tracking.client().search_model_versions(f"name = '{NAME}'")}
    champion = tracking.champion(NAME)
    return (versions, str(champion.version) if champion else None,
            alias_version(tracking.client(), "adapter", NAME, "challenger"))


def asset_events(run) -> list[dict]:
    """The extras of the adapter-candidate Asset events the run's tasks emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(
            AssetModel.uri == CANDIDATE_URI, AssetEvent.source_run_id == run.run_id)).all()
        return [dict(row.extra or {}) for row in rows]


def dag_config() -> LoraTuneConfig:
    """The instance's YAML on the tiny test model."""
    raw = yaml.safe_load(CONFIG.read_text())
    for key, value in TINY.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
    return LoraTuneConfig.model_validate({**raw, "retry_delay_minutes": 0})


@pytest.fixture(scope="module")
def config() -> LoraTuneConfig:
    return dag_config()


@pytest.fixture(scope="module")
def tuned(airflow_db, config):
    dag = build_and_register(config)
    return dag, dag.test()


def test_the_run_tunes_evaluates_registers_and_hands_the_adapter_to_the_gate(tuned, loopline_home):
    dag, run = tuned
    assert run.state == "success"
    assert {t: s for t, (s, _) in task_states(run).items()} == {
        t: "success" for t in ("prepare_base_model", "build_dataset", "tune_adapter", "evaluate_adapter",
                               "register_adapter", "announce_adapter_candidate")}
    assert [o.uri for o in dag.get_task("announce_adapter_candidate").outlets] == [CANDIDATE_URI]
    base = xcom(run, "prepare_base_model")
    assert base["built"] and base["path"] == str(loopline_home / "models" / "tiny-llama")
    assert base["architecture"] == "LlamaForCausalLM" and base["tokenizer_size"] == base["vocab_size"]
    summary = xcom(run, "register_adapter")
    assert summary["tuned_perplexity"] < summary["base_perplexity"] * 0.95
    assert 0 < summary["merge_max_abs_diff"] < 1e-3, "merged and adapted are two models, compared"
    assert summary["trainable_fraction"] < 0.02
    assert summary["adapter_bytes"] <= 0.02 * summary["base_weights_bytes"]
    assert (summary["registered"], summary["promoted"], summary["version"], summary["champion"]) == (
        True, False, "1", None)
    assert (summary["promotion"], summary["alias"], summary["challenger_set"]) == ("gate", "challenger", True)
    assert summary["reason"] == ("version 1 takes @challenger: the llm_eval gate judges its answers against the base "
                                 "model alone (no adapter is champion yet)")
    assert registry_state() == ({"1"}, None, 1)
    index_version = xcom(run, "build_dataset")["index_version"]  # the docs index, if this session built one
    assert asset_events(run) == [{"model_name": NAME, "version": "1", "champion": None,
                                  "index_version": index_version}]

    version = tracking.client().get_model_version(NAME, "1")
    data = xcom(run, "build_dataset")
    assert version.tags["base_model_digest"] == base["digest"] and version.tags["dataset_digest"] == data["digest"]
    assert (version.tags["loopline.promotion"], version.tags["loopline.promotion_reason"]) == (
        "challenger", summary["reason"])
    assert version.tags["loopline.lineage.corpus_digest"] == data["corpus_digest"]
    assert version.tags["loopline.lineage.index_version"] == (data["index_version"] or "none")
    assert version.tags["loopline.lineage.index"] == "docs_rag_index"
    assert version.tags["loopline.tuning_key"] == xcom(run, "tune_adapter")["tuning_key"]
    mlflow_run = tracking.client().get_run(version.run_id)
    assert mlflow_run.data.params["lora_rank"] == "8" and mlflow_run.data.params["base_model_digest"] == base["digest"]
    assert mlflow_run.data.tags["loopline.lineage.corpus_digest"] == data["corpus_digest"]
    assert mlflow_run.data.metrics["eval_perplexity"] == pytest.approx(summary["tuned_perplexity"], rel=1e-4)
    history = tracking.client().get_metric_history(version.run_id, "train_loss")
    assert [m.step for m in history] == list(range(1, summary["steps"] + 1))
    assert {i.dataset.name for i in mlflow_run.inputs.dataset_inputs} == {
        "assistant_instruction_pairs_training", "assistant_instruction_pairs_evaluation"}


def test_the_challenger_answers_through_mlflow_pyfunc(tuned):
    import mlflow
    import pandas as pd

    tracking.configure_mlflow()
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger", model_config={"max_new_tokens": 12})
    answers = model.predict(pd.DataFrame({"instruction": [
        'What does the section "Training, registration and promotion > Bad input" of training.md say?']}))
    assert len(answers) == 1 and isinstance(answers[0], str) and answers[0]


def test_a_registered_version_is_scored_on_a_runs_eval_pairs(tuned):
    from pipelines.lora.evaluation import champion_on_split

    _, run = tuned
    base, data = xcom(run, "prepare_base_model"), xcom(run, "build_dataset")
    version = tracking.client().get_model_version_by_alias(NAME, "challenger")
    scored = champion_on_split(version, base, data["eval_path"], data["max_tokens"], 8, "cpu")
    assert scored == {"version": "1", "perplexity": pytest.approx(xcom(run, "register_adapter")["tuned_perplexity"],
                                                                  rel=1e-3)}
    other_base = champion_on_split(version, {**base, "digest": "0" * 64}, data["eval_path"],
                                   data["max_tokens"], 8, "cpu")
    assert other_base["perplexity"] is None and "tuned on another base model" in other_base["why_not_scored"]


def test_a_rerun_reuses_the_base_model_the_adapter_and_the_version(tuned):
    dag, first = tuned
    before = registry_state()
    run = dag.test()
    assert run.state == "success"
    assert xcom(run, "prepare_base_model")["built"] is False
    assert xcom(run, "build_dataset")["digest"] == xcom(first, "build_dataset")["digest"]
    assert xcom(run, "tune_adapter")["reused"] is True
    assert xcom(run, "tune_adapter")["run_id"] == xcom(first, "tune_adapter")["run_id"]
    summary = xcom(run, "register_adapter")
    assert summary["reason"].startswith("version 1 is @challenger already (same inputs as before)")
    assert summary["challenger_set"] is False and task_states(run)["announce_adapter_candidate"][0] == "skipped"
    assert asset_events(run) == [], "nothing new for the gate: no Asset event"
    assert registry_state() == before


def test_without_the_gate_the_champion_moves_on_perplexity(tuned):
    """``evaluation.promotion: perplexity`` (a user without an assistant): the same adapter, another model name."""
    _, run = tuned
    config = LoraTuneConfig.model_validate({**dag_config().model_dump(), "model_name": "assistant_adapter_ppl",
                                            "evaluation": {"promotion": "perplexity"}})
    assert config.candidate_asset_ref is None
    base, data, tuned_adapter = (xcom(run, t) for t in ("prepare_base_model", "build_dataset", "tune_adapter"))
    evaluation = xcom(run, "evaluate_adapter")
    summary = steps.register_adapter(config, base, data, tuned_adapter, evaluation)
    assert (summary["promoted"], summary["alias"], summary["champion"], summary["challenger_set"]) == (
        True, "champion", summary["version"], False)
    assert summary["reason"].startswith("first adapter: eval perplexity")
    again = steps.register_adapter(config, base, data, tuned_adapter, evaluation)
    assert again["reason"] == f"version {summary['version']} is already the champion (same inputs as before)"


def test_a_weak_challenger_leaves_the_champion_and_says_why(tuned):
    dag, _ = tuned
    before = registry_state()
    run = dag.test(run_conf={"max_steps": 2, "learning_rate": 0.0005})
    assert run.state == "success"
    summary = xcom(run, "register_adapter")
    assert summary["registered"] is False and summary["version"] is None
    assert summary["reason"].endswith("does not improve by the margin 5.0%; nothing registered")
    assert tracking.client().get_run(summary["run_id"]).data.tags["loopline.registration_reason"] == summary["reason"]
    assert registry_state() == before


# Bad input: a clear error, nothing registered, the champion untouched.

def test_a_missing_base_model_path_fails_the_run_without_retry(tuned):
    dag, _ = tuned
    before = registry_state()
    run = dag.test(run_conf={"base_model_path": "/nowhere/tiny-llama"})
    assert run.state == "failed"
    states = task_states(run)
    assert states["prepare_base_model"] == ("failed", 1), "bad input is not retried"
    assert all(states[t][0] == "upstream_failed" for t in ("build_dataset", "tune_adapter", "register_adapter",
                                                         "announce_adapter_candidate"))
    with pytest.raises(BaseModelError, match=r"base model folder /nowhere/tiny-llama does not exist"):
        steps.prepare_base_model(steps.resolve_run(dag_config(), {"base_model_path": "/nowhere/tiny-llama"}))
    assert registry_state() == before


def test_a_tokenizer_that_does_not_match_the_model_is_refused(tuned, tmp_path):
    _, run = tuned
    before = registry_state()
    mismatched = tmp_path / "mismatched"
    shutil.copytree(xcom(run, "prepare_base_model")["path"], mismatched)
    tokenizer = load_tokenizer(mismatched)
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(1000)])
    tokenizer.save_pretrained(mismatched)
    with pytest.raises(BaseModelError, match=r"tokenizer and model in .*mismatched do not match: the tokenizer has "
                                             r"\d+ tokens but the model's embedding has \d+ rows"):
        steps.prepare_base_model(steps.resolve_run(dag_config(), {"base_model_path": str(mismatched)}))
    assert registry_state() == before


def test_an_empty_dataset_is_refused(tuned, tmp_path):
    _, run = tuned
    before = registry_state()
    (tmp_path / "notes.md").write_text("# Notes\n\n## Empty\n\n### Still empty\n\nTiny.\n")
    config = LoraTuneConfig.model_validate({**dag_config().model_dump(), "corpus": {"path": str(tmp_path)}})
    with pytest.raises(DatasetError, match=rf"the instruction dataset from {tmp_path} is empty: no section has at "
                                           r"least 40 characters of text\. Nothing was tuned or registered"):
        steps.build_dataset(config, xcom(run, "prepare_base_model"))
    (tmp_path / "notes.md").unlink()
    with pytest.raises(DatasetError, match=rf"corpus {tmp_path} has no readable document"):
        steps.build_dataset(config, xcom(run, "prepare_base_model"))
    assert registry_state() == before
