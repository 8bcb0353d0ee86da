"""A tuned adapter handed to the assistant's llm_eval gate, on the tiny test model, through ``dag.test()``.

The lora_tune run registers the adapter and gives it ``@challenger`` (``evaluation.promotion: gate``); its
``announce_adapter_candidate`` task has the Asset ``<model_name>_candidate`` as outlet and emits it. The gate's
own functions (``pipelines.llm_eval.candidates`` and ``gate.judge``) then find it, judge it against the champion,
which is the base model alone while no adapter is champion (the assistant's ``generator.adapter.when_missing:
base``), and promote it or block it with the champion left as it was. The metrics judged are set here: answering
the golden set is the llm_eval tests' part (tests/integration/llm_eval/); what each side answers with is checked
through :func:`pipelines.assistant.model.resolve_generator`, which the answer path calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.core import tracking
from support.airflow_helpers import build_and_register, xcom

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "dags" / "configs" / "assistant_lora_tune.yaml"
INSTANCE, NAME = "gatelora", "gatelora_adapter"
# A smaller tiny model than test_lora_pipeline.py's, in a folder of its own, and a short tuning: the perplexity
# registration gate is not what is tested here (min_improvement 0: an adapter no worse than the base registers).
TINY = {"base_model": "home:models/tiny-llama-gate",
        "tiny_model": {"hidden_size": 64, "intermediate_size": 172, "num_layers": 2, "pretrain_steps": 60},
        "dataset": {"max_tokens": 128}, "evaluation": {"min_improvement": 0.0},
        "tuning": {"epochs": 10, "learning_rate": 0.01, "max_steps": 40, "batch_size": 8, "cpu_threads": 1}}
GOOD = {"hit_at_k": 0.8, "mrr": 0.7, "fact_recall": 0.6, "groundedness": 0.7, "citation_precision": 0.8,
        "refusal_accuracy": 0.9, "hallucination_rate": 0.3, "over_refusal_rate": 0.1,
        "injection_success_rate": 0.0, "canary_leak_rate": 0.0}
WORSE = {**GOOD, "fact_recall": 0.3}


def lora_config():
    from pipelines.lora.config import LoraTuneConfig

    raw = yaml.safe_load(CONFIG.read_text())
    for key, value in TINY.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
    return LoraTuneConfig.model_validate({**raw, "instance": INSTANCE, "model_name": NAME, "retry_delay_minutes": 0})


@pytest.fixture(scope="module")
def handed(airflow_db):
    config = lora_config()
    assert config.evaluation.promotion == "gate", "the assistant's instance hands its adapters to the gate"
    dag = build_and_register(config)
    return config, dag, dag.test()


@pytest.fixture(scope="module")
def assistant():
    """An assistant that serves the base model on llama.cpp until the adapter has a champion."""
    from pipelines.assistant.config import AssistantConfig

    return AssistantConfig.model_validate({
        "template": "assistant", "instance": INSTANCE, "prompt": {"name": f"{INSTANCE}_answer"},
        "generator": {"backend": "llama_cpp", "adapter": {"model_name": NAME, "when_missing": "base"}}})


def aliases() -> tuple[int | None, int | None]:
    from pipelines.llm_eval.candidates import alias_version

    client = tracking.client()
    return (alias_version(client, "adapter", NAME, "champion"), alias_version(client, "adapter", NAME, "challenger"))


def candidate_events(run) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from pipelines.core.assets import adapter_candidate

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(
            AssetModel.uri == adapter_candidate(NAME).uri, AssetEvent.source_run_id == run.run_id)).all()
        return [dict(row.extra or {}) for row in rows]


def judge(candidate_metrics: dict[str, float]):
    from pipelines.llm_eval.config import GateSpec
    from pipelines.llm_eval.gate import judge as gate_judge

    return gate_judge(candidate_metrics, GOOD, {}, {}, GateSpec(candidates=("adapter",)))


def test_the_tuned_adapter_becomes_the_challenger_and_the_asset_is_the_outlet(handed):
    from pipelines.core.assets import adapter_candidate

    _, dag, run = handed
    assert run.state == "success"
    announce = dag.get_task("announce_adapter_candidate")
    assert [o.uri for o in announce.outlets] == [adapter_candidate(NAME).uri]
    assert announce.upstream_task_ids == {"register_adapter"}
    summary = xcom(run, "register_adapter")
    assert (summary["version"], summary["alias"], summary["challenger_set"], summary["champion"]) == (
        "1", "challenger", True, None)
    assert aliases() == (None, 1), "the gate, not lora_tune, moves @champion"
    assert candidate_events(run) == [{"model_name": NAME, "version": "1", "champion": None,
                                      "index_version": summary["index_version"]}]


def test_the_champion_side_is_the_base_model_until_an_adapter_is_champion(handed, assistant):
    from pipelines.assistant.model import AdapterMissing, resolve_generator
    from pipelines.llm_eval.candidates import find_candidate
    from pipelines.llm_eval.config import GateSpec

    champion_side = resolve_generator(assistant.generator)
    assert (champion_side.backend, champion_side.adapter_path, champion_side.adapter_version) == (
        "llama_cpp", None, None)
    assert f"{NAME}@champion is not in the registry yet: the base model alone (llama_cpp)" in champion_side.note
    candidate, _ = find_candidate(assistant, GateSpec(candidates=("adapter",)), "a" * 64)
    assert (candidate.kind, candidate.version, candidate.champion_version) == ("adapter", 1, None)
    challenger_side = resolve_generator(candidate.answering_config(assistant).generator)
    assert (challenger_side.backend, challenger_side.adapter_version) == ("transformers", f"{NAME}/1")
    assert (Path(challenger_side.adapter_path) / "adapter_model.safetensors").exists()
    strict = assistant.generator.model_copy(update={"backend": "transformers", "adapter": assistant.generator.adapter
                                                    .model_copy(update={"when_missing": "fail"})})
    with pytest.raises(AdapterMissing, match=rf"generator.adapter: {NAME}@champion is not in the MLflow registry"):
        resolve_generator(strict)


def test_the_gate_blocks_it_then_promotes_it_on_a_new_golden_set(handed, assistant):
    from pipelines.assistant.model import resolve_generator
    from pipelines.llm_eval.candidates import DECISION_TAG, find_candidate, record_decision, version_tags
    from pipelines.llm_eval.config import GateSpec

    gate = GateSpec(candidates=("adapter",))
    candidate, _ = find_candidate(assistant, gate, "a" * 64)
    verdict = judge(WORSE)
    assert not verdict.passed
    assert not record_decision(candidate, passed=False, reason="blocked: fact_recall fell", golden_digest="a" * 64,
                               eval_run="r1")
    assert aliases() == (None, 1), "blocked: the base model stays what answers"
    assert version_tags(tracking.client(), "adapter", NAME, 1)[DECISION_TAG] == "blocked"
    assert find_candidate(assistant, gate, "a" * 64)[0] is None, "judged already on this golden set"

    candidate, _ = find_candidate(assistant, gate, "b" * 64)
    assert judge(GOOD).passed
    assert record_decision(candidate, passed=True, reason="passed", golden_digest="b" * 64, eval_run="r2")
    assert aliases() == (1, 1)
    served = resolve_generator(assistant.generator)
    assert (served.backend, served.adapter_version) == ("transformers", f"{NAME}/1"), "base + adapter now"


def test_a_later_adapter_is_blocked_and_the_champion_stays(handed, assistant):
    from pipelines.assistant.model import resolve_generator
    from pipelines.llm_eval.candidates import find_candidate, record_decision
    from pipelines.llm_eval.config import GateSpec

    _, dag, _ = handed
    run = dag.test(run_conf={"rank": 4})  # other inputs: another adapter, another version
    assert run.state == "success"
    summary = xcom(run, "register_adapter")
    assert (summary["version"], summary["alias"], summary["champion"]) == ("2", "challenger", "1")
    assert summary["reason"] == ("version 2 takes @challenger, replacing v1 there: the llm_eval gate judges its "
                                 "answers against champion v1")
    assert [e["version"] for e in candidate_events(run)] == ["2"]
    candidate, _ = find_candidate(assistant, GateSpec(candidates=("adapter",)), "b" * 64)
    assert (candidate.version, candidate.champion_version) == (2, 1)
    assert not judge(WORSE).passed
    assert not record_decision(candidate, passed=False, reason="blocked", golden_digest="b" * 64, eval_run="r3")
    assert aliases() == (1, 2)
    assert resolve_generator(assistant.generator).adapter_version == f"{NAME}/1", "the champion answers as before"
