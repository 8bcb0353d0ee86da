"""Shadow and canary releases on the toy world, through the real assistant (SmolLM2 in llama.cpp) and ``dag.test()``.

The challenger is a prompt version whose examples decline every question ("I don't know based on the
documentation."): what a bad prompt looks like on live traffic (everything refused, nothing grounded).

1. Shadow: the challenger answers the question too; the user gets the champion's answer; the query log and the
   traces hold both, tagged with arm, version and shown, and both are scored; the live traffic figures count one
   user answer.
2. Canary at 50 %: each question is answered by the arm its request id hashes to (a retry: the same arm); the
   llm_eval DAG compares the two arms on that day, rolls the challenger back (tagged, its alias removed) and the
   champion stays; the next question is answered by the champion alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from support.airflow_helpers import build_and_register, xcom

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAME = "canarytoy_answer"  # a prompt of its own: the release gate test moves evaltoy_answer's aliases
DECLINE = "I don't know based on the documentation."
REFUSING_PROMPT = [
    {"role": "system", "content": "You answer questions about the documentation."},
    {"role": "user", "content": "Context:\n[1] garden.md\nWater tomato plants early in the morning.\n\n"
                                "Question: When should I water tomato plants?"},
    {"role": "assistant", "content": DECLINE},
    {"role": "user", "content": "Context:\n[1] printer.md\nReplace the toner when the light blinks orange.\n\n"
                                "Question: What do I do when the toner light blinks orange?"},
    {"role": "assistant", "content": DECLINE},
    {"role": "user", "content": "Context:\n{{ context }}\n\nQuestion: {{ question }}"},
]
QUESTIONS = ["At what temperature should green tea brew?", "How much wind does a kite need?",
             "How do owls fly so quietly?", "What pressure for road bike tyres?"]


@pytest.fixture(scope="module")
def canary_world(eval_world, airflow_db):
    """The toy assistant under its own instance and prompt, its champion seeded, the refusing prompt @challenger."""
    import mlflow

    from pipelines.assistant import steps as assistant_steps
    from pipelines.assistant.config import AssistantConfig
    from pipelines.core import tracking
    from pipelines.llm_eval.candidates import alias_version

    data = yaml.safe_load((eval_world.root / "evaltoy_assistant.yaml").read_text())
    data.update({"instance": "canarytoy", "prompt": {**data["prompt"], "name": NAME}})
    base = AssistantConfig.model_validate(data)
    assistant_steps.seed_prompt(base, eval_world.settings)
    champion = alias_version(tracking.client(eval_world.settings), "prompt", NAME, "champion")
    bad = mlflow.genai.register_prompt(name=NAME, template=REFUSING_PROMPT, commit_message="test: declines")
    mlflow.genai.set_prompt_alias(NAME, alias="challenger", version=int(bad.version))
    return base, champion, int(bad.version)


def released(base, release: dict):
    from pipelines.assistant.config import AssistantConfig

    return AssistantConfig.model_validate({**base.model_dump(mode="json"), "release": release})


def day_rows(eval_world, assistant, day):
    from pipelines.assistant import query_log

    return [row for row in query_log.read_rows("evaltoy", day, eval_world.settings)
            if row.get("assistant") == assistant.dag_id]


def test_a_shadow_challenger_is_stored_and_scored_but_never_shown(eval_world, canary_world):
    import mlflow

    from pipelines.assistant.answer import answer
    from pipelines.llm_eval.live import live_traffic

    base, champion, bad = canary_world
    assistant = released(base, {"mode": "shadow"})
    asked = datetime.now(UTC) - timedelta(days=3)  # a day of its own
    result = answer(QUESTIONS[1], assistant, eval_world.settings, now=asked, request_id="shadow-1")
    assert (result.arm, result.prompt_version, result.release_version) == (
        "champion", champion, f"prompt {NAME} v{champion}")
    assert result.answer != DECLINE, "the champion answers the kite question from kites.md"

    rows = {row["arm"]: row for row in day_rows(eval_world, assistant, asked.date())}
    assert set(rows) == {"champion", "challenger"}
    mine, theirs = rows["challenger"], rows["champion"]
    assert (theirs["trace_id"], theirs["shown"], theirs["origin"]) == (result.trace_id, True, "user")
    assert (mine["shown"], mine["origin"], mine["prompt_version"]) == (False, "shadow", bad)
    assert mine["version"] == f"prompt {NAME} v{bad}" and mine["request_id"] == theirs["request_id"] == "shadow-1"
    assert mine["answer"] != result.answer and mine["refused"] is True, mine["answer"]
    # both scored: the champion's answer has sentences to ground, the challenger's declined
    assert theirs["scores"]["groundedness"] is not None and theirs["scores"]["refused"] is False
    assert mine["scores"]["refused"] is True and mine["scores"]["groundedness"] is None
    assert mine["scores"]["latency_ms"] == mine["latency_ms"] > 0
    for row in (mine, theirs):  # both traced, tagged with their arm
        mlflow.flush_trace_async_logging(terminate=False)
        tags = mlflow.get_trace(row["trace_id"], flush=True).info.tags
        assert (tags["loopline.arm"], tags["loopline.shown"], tags["loopline.release.version"]) == (
            row["arm"], str(row["shown"]).lower(), row["version"])
    traffic = live_traffic(assistant, asked.date(), eval_world.settings)
    assert (traffic["answers"], traffic["refused"]) == (1, 0)  # the shadow answer is no user's


def test_a_canary_answers_its_share_and_a_bad_challenger_is_rolled_back_by_the_evaluation(eval_world, canary_world):
    from pipelines.assistant.answer import answer
    from pipelines.assistant.release import routes_to_challenger
    from pipelines.core import tracking
    from pipelines.llm_eval.candidates import alias_version, version_tags
    from pipelines.llm_eval.config import LlmEvalConfig

    base, champion, bad = canary_world
    assistant = released(base, {"mode": "canary", "share": 0.5})
    assistant_yaml = eval_world.root / "canarytoy_assistant.yaml"
    assistant_yaml.write_text(yaml.safe_dump(assistant.model_dump(mode="json")))
    config = LlmEvalConfig.model_validate({
        "template": "llm_eval", "instance": "canarytoy", "assistant": str(assistant_yaml),
        "golden_set": str(eval_world.golden), "budgets": {"tokens_per_answer": 2000, "latency_p95_ms": 60_000},
        "gate": {"ceilings": {"hallucination_rate": 1.0}, "max_slice_regression": 0.5},
        "live": {"min_answers": 50},  # the fallback is not this test's
        "release": {"min_answers": 2, "max_regression": {"refusal_rate": 0.3, "groundedness": 0.3}}})

    # Request ids the router sends two to each arm (the hash is the router's: any ids would do, these are quick).
    label = f"prompt {NAME} v{bad}"
    ids = [f"canary-{n}" for n in range(100)]
    to_challenger = [i for i in ids if routes_to_challenger(i, 0.5, label)][:2]
    to_champion = [i for i in ids if not routes_to_challenger(i, 0.5, label)][:2]
    yesterday = datetime.now(UTC) - timedelta(days=1)
    for request_id, question in zip(to_challenger + to_champion, QUESTIONS, strict=True):
        result = answer(question, assistant, eval_world.settings, now=yesterday, request_id=request_id)
        arm = "challenger" if request_id in to_challenger else "champion"
        assert (result.arm, result.prompt_version) == (arm, bad if arm == "challenger" else champion)
    again = answer(QUESTIONS[0], assistant, eval_world.settings, now=yesterday, request_id=to_challenger[0])
    assert (again.arm, again.prompt_version) == ("challenger", bad)  # a retry: the same arm
    rows = day_rows(eval_world, assistant, yesterday.date())
    assert len(rows) == 5 and all(row["shown"] and row["origin"] == "user" for row in rows)
    assert sorted(row["arm"] for row in rows) == ["challenger"] * 3 + ["champion"] * 2

    run = build_and_register(config).test(run_conf={"cases": 1})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["compare_release"] == "success", states
    assert states["find_candidate"] == "skipped"  # rolled back first: not evaluated offline
    decided = xcom(run, "compare_release")
    assert decided["decision"] == "rolled_back" and "refusal_rate" in decided["failed_checks"], decided["reason"]
    assert decided["arms"]["challenger"]["answers"] == 3 and decided["arms"]["challenger"]["refusal_rate"] == 1.0

    client = tracking.client(eval_world.settings)
    assert alias_version(client, "prompt", NAME, "champion") == champion  # the champion stays
    assert alias_version(client, "prompt", NAME, "challenger") is None  # the challenger loses its alias
    tags = version_tags(client, "prompt", NAME, bad)
    assert tags["loopline.gate.decision"] == "rolled_back" and "refusal_rate rose to 1" in tags["loopline.gate.reason"]
    assert tags["loopline.gate.judged_against"] == str(champion) and tags["loopline.release.mode"] == "canary"
    import mlflow

    release_run = mlflow.get_run(decided["run_id"])
    assert release_run.data.tags["loopline.llm_eval.role"] == "release"
    assert release_run.data.metrics["challenger/refusal_rate"] == 1.0

    after = answer(QUESTIONS[2], assistant, eval_world.settings, request_id=to_challenger[1])
    assert (after.arm, after.prompt_version) == (None, champion)  # nothing to release: the champion alone
