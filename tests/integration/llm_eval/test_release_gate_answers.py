"""The release gate and the fallback on the toy world, through ``dag.test()`` and the real assistant (SmolLM2).

1. A deliberately bad prompt (its examples answer without the context) is given ``@challenger``: the llm_eval DAG
   asks the golden set with the champion and with it, the gate blocks it on fact recall, the decision and reason
   are tagged on the version and the runs, and ``@champion`` does not move. The next run does not judge it again.
2. A challenger with the champion's content (a new version, the same answers) passes and becomes the champion;
   it records the version it replaced.
3. A new index version whose green tea page now says the wrong temperature goes live (its own retrieval gate
   passes: the right documents are still found); the answers regress on fact recall, so the index gate blocks it
   and rolls the index back to the version before.
4. Yesterday's live answers (real answers, stamped yesterday) are all declined: the live check emits the fallback
   once (dedupe, cap, cooldown), and the fallback step moves ``@champion`` back to the version that passed before,
   tagged with why; the next answer uses it.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from pipelines.core.settings import REPO_ROOT
from support.airflow_helpers import build_and_register, xcom

sys.path.insert(0, str(REPO_ROOT / "plugins"))

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Few-shot examples that answer without the passages: SmolLM2 follows examples far better than instructions.
BAD_PROMPT = [
    {"role": "system", "content": "You are a sea shanty singer."},
    {"role": "user", "content": "Context:\n[1] garden.md\nWater tomato plants early in the morning.\n\n"
                                "Question: When should I water tomato plants?"},
    {"role": "assistant", "content": "Yo ho, the sea is wide and the wind is free!"},
    {"role": "user", "content": "Context:\n[1] printer.md\nReplace the toner when the light blinks orange.\n\n"
                                "Question: What do I do when the toner light blinks orange?"},
    {"role": "assistant", "content": "Yo ho, the sea is wide and the wind is free!"},
    {"role": "user", "content": "Context:\n{{ context }}\n\nQuestion: {{ question }}"},
]


@pytest.fixture(scope="module")
def gated(eval_world, airflow_db):
    """The toy llm_eval config with a gate that fits a golden set without adversarial cases, saved as YAML."""
    from pipelines.llm_eval.config import LlmEvalConfig

    data = eval_world.config.model_dump(mode="json")
    data["gate"] = {"ceilings": {"hallucination_rate": 1.0}, "max_slice_regression": 0.5}
    data["live"] = {"min_answers": 3, "max_refusal_share": 0.5, "cooldown_hours": 12}
    config = LlmEvalConfig.model_validate(data)
    path = eval_world.root / "evaltoy_llm_eval.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return config, path


def _prompt_state(name: str):
    from mlflow import MlflowClient

    from pipelines.llm_eval.candidates import alias_version

    client = MlflowClient()
    return client, alias_version(client, "prompt", name, "champion")


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_a_prompt_that_ignores_the_context_is_blocked_and_the_champion_stays(eval_world, gated):
    import mlflow

    config, _ = gated
    name = "evaltoy_answer"
    client, champion = _prompt_state(name)
    bad = mlflow.genai.register_prompt(name=name, template=BAD_PROMPT, commit_message="test: ignores the context")
    mlflow.genai.set_prompt_alias(name, alias="challenger", version=int(bad.version))

    dag = build_and_register(config)
    run = dag.test()
    states = _states(run)
    assert states["gate_candidate"] == "success" and states["write_candidate_report"] == "success"
    assert states["emit_fallback"] == "skipped"  # no live answers yesterday: nothing judged, nothing emitted
    result = xcom(run, "gate_candidate")
    assert result["passed"] is False and result["promoted"] is False
    assert "fact_recall" in result["failed_checks"], result["reason"]
    assert _prompt_state(name)[1] == champion  # the champion stays

    tags = client.get_prompt_version(name, int(bad.version)).tags
    assert tags["loopline.gate.decision"] == "blocked"
    assert "fact_recall fell to" in tags["loopline.gate.reason"]
    assert tags["loopline.gate.judged_against"] == str(champion)
    assert tags["loopline.gate.golden_digest"] == result["golden_digest"]
    candidate_run = mlflow.get_run(result["candidate_run_id"])
    assert candidate_run.data.tags["loopline.gate.decision"] == "blocked"
    assert candidate_run.data.tags["loopline.llm_eval.role"] == "candidate"
    assert candidate_run.data.params["prompt_version"] == str(bad.version)
    assert mlflow.get_run(result["champion_run_id"]).data.params["prompt_version"] == str(champion)

    # The Loopline page shows the decision and its reason next to the runs, with the candidate's report.
    from loopline_ui.page import render
    from pipelines.cockpit import evaluation_summary

    shown = evaluation_summary(config, eval_world.settings)
    assert shown["champion_prompt_version"] == champion
    row = next(r for r in shown["runs"] if r["run_id"] == result["candidate_run_id"])
    assert (row["role"], row["decision"], row["candidate"]) == ("candidate", "blocked", f"prompt {name} v{bad.version}")
    assert row["reason"] == tags["loopline.gate.reason"] and row["report"].endswith(".html")
    case = {"name": "evaltoy", "dags": [], "errors": [], "models": [], "indexes": [], "drift": [], "assistants": [],
            "evaluations": [shown], "runs": []}
    html = render({"data_home": "home", "mlflow": "sqlite", "use_cases": [case]})
    assert "blocked" in html and "fact_recall fell to" in html and row["report"] in html

    again = dag.test()  # judged already on this golden set against this champion: not asked again
    assert _states(again)["find_candidate"] == "skipped"
    assert _states(again)["evaluate_candidate"] == "skipped"


def test_a_challenger_as_good_as_the_champion_is_promoted_then_rolled_back_on_a_live_regression(eval_world, gated):
    import mlflow

    from pipelines.assistant.answer import answer
    from pipelines.llm_eval import steps
    from pipelines.llm_eval.config import AssistantFallbackConfig
    from pipelines.llm_eval.steps import NoFallback

    config, path = gated
    name = "evaltoy_answer"
    client, champion = _prompt_state(name)
    same = client.get_prompt_version(name, champion)
    copy = mlflow.genai.register_prompt(name=name, template=same.template, commit_message="test: same content")
    mlflow.genai.set_prompt_alias(name, alias="challenger", version=int(copy.version))

    run = build_and_register(config).test()
    result = xcom(run, "gate_candidate")
    assert result["passed"] is True and result["promoted"] is True, result["reason"]
    assert _prompt_state(name)[1] == int(copy.version)
    assert client.get_prompt_version(name, int(copy.version)).tags["loopline.gate.replaced"] == str(champion)

    # Yesterday's live traffic: real answers, all declined (off the corpus).
    assistant = steps.assistant_config(config)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    for question in ("What is the capital of France?", "Who won the football world cup in 1998?",
                     "How tall is Mount Everest?"):
        assert answer(question, assistant, eval_world.settings, now=yesterday).refused
    now = datetime.now(UTC)
    live = steps.check_live_traffic(config, now, eval_world.settings)
    assert live["regressed"] and live["signals"] == ["refusals"], live
    assert live["traffic"]["answers"] == 3 and live["traffic"]["refusal_share"] == 1.0
    evening = now.replace(hour=20, minute=0, second=0, microsecond=0)  # the guard rails judge the runs' own times
    extra = steps.emit_fallback(config, live, "scheduled__fb1", evening, eval_world.settings)
    assert extra["signals"] == ["refusals"] and extra["traffic"]["refused"] == 3
    with pytest.raises(NoFallback, match="dedupe"):
        steps.emit_fallback(config, live, "scheduled__fb1", evening, eval_world.settings)
    with pytest.raises(NoFallback, match="cap: evaltoy_assistant_fallback was emitted 1 time"):
        steps.emit_fallback(config, live, "scheduled__fb2", evening + timedelta(hours=1), eval_world.settings)
    with pytest.raises(NoFallback, match="cooldown"):  # the next day, within the 12 h cooldown
        steps.emit_fallback(config, live, "scheduled__fb3", evening + timedelta(hours=6), eval_world.settings)

    fallback = AssistantFallbackConfig.model_validate({"template": "assistant_fallback", "instance": "evaltoy",
                                                       "evaluation": str(path)})
    assert extra["crossed"] == ["refusal share (3 of 3) 1 above 0.5"]
    done = steps.roll_back_champion(fallback, extra["crossed"], "asset_triggered__fb1", eval_world.settings)
    assert (done["from_version"], done["to_version"], done["already_done"]) == (int(copy.version), champion, False)
    assert _prompt_state(name)[1] == champion
    tags = client.get_prompt_version(name, int(copy.version)).tags
    assert tags["loopline.gate.decision"] == "rolled_back" and "refusal share" in tags["loopline.rollback.reason"]
    assert steps.roll_back_champion(fallback, extra["crossed"], "asset_triggered__fb1",
                                    eval_world.settings)["already_done"] is True  # a retry moves nothing
    assert answer("How much wind does a kite need?", assistant, eval_world.settings).prompt_version == champion


def test_a_new_index_version_that_makes_the_answers_worse_is_rolled_back(eval_world, gated):
    import mlflow

    from pipelines.assistant.retrieval import index_config
    from pipelines.llm_eval import steps
    from pipelines.rag.steps import run_once
    from pipelines.rag.stores import open_store
    from pipelines.rag.versions import load_rag_config

    config, _ = gated
    settings = eval_world.settings
    before = steps.evaluate_answers(config, settings, run_key="index_gate_before")
    with pytest.raises(steps.NoCandidate, match="no new index version"):
        steps.gate_index(config, before, settings)

    # The same instance rebuilt blue/green (another chunker) from a corpus whose tea page gives wrong figures.
    corpus = eval_world.root / "corpus_wrong_tea"
    corpus.mkdir()
    for page in (eval_world.root / "corpus").iterdir():
        text = page.read_text()
        if page.name == "tea.md":
            text = text.replace("80 degrees", "100 degrees").replace("two minutes", "ten minutes")
            assert "100 degrees" in text, "the toy tea page changed: fix this test's edit"
        (corpus / page.name).write_text(text)
    live_before = before["index_version"]
    rag = load_rag_config(eval_world.root / "evaltoy_rag_index.yaml")
    wrong = rag.model_copy(update={"corpus": rag.corpus.model_copy(update={"path": str(corpus)}),
                                   "chunker": rag.chunker.model_copy(update={"size_chars": 240})})
    run_once(wrong, "build", settings)
    assistant = steps.assistant_config(config)
    with open_store(rag.index.backend, rag.instance, settings) as store:
        assert store.live_version() != live_before, "the rebuilt version went live through its own gate"

    after = steps.evaluate_answers(config, settings, run_key="index_gate_after")
    assert after["index_version"] != live_before
    result = steps.gate_index(config, after, settings)
    assert result["passed"] is False and "fact_recall" in result["failed_checks"], result["reason"]
    assert result["rolled_back"] == {"from": after["index_version"], "to": live_before, "changed": True}
    with open_store(rag.index.backend, rag.instance, settings) as store:
        assert store.live_version() == live_before == index_config(assistant).instance + "_v1"
    tags = mlflow.get_run(after["run_id"]).data.tags
    assert tags["loopline.gate.index_decision"] == "blocked" and "fact_recall fell to" in tags["loopline.gate.reason"]
