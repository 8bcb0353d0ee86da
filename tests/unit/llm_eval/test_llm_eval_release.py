"""The live release comparison: its config, the two arms' figures from query-log rows, the gate's regression check
on them, and live traffic that never counts a shadow answer as a user's."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from pipelines.assistant import query_log
from pipelines.core.settings import LooplineSettings
from pipelines.llm_eval.config import LiveReleaseSpec, LlmEvalConfig
from pipelines.llm_eval.gate import judge_arms
from pipelines.llm_eval.live import arm_figures, live_traffic
from pipelines.templates import load_named

pytestmark = pytest.mark.unit

DAY = date(2026, 12, 1)
CHAMPION, CHALLENGER = "prompt docs_answer v1", "prompt docs_answer v2"


def row(arm: str, version: str, *, refused=False, latency=1000.0, groundedness=1.0, shown=True, origin="user",
        tokens=(600, 40)) -> dict:
    return {"assistant": "docs_assistant", "origin": origin, "arm": arm, "version": version, "shown": shown,
            "refused": refused, "latency_ms": latency, "tokens_in": tokens[0], "tokens_out": tokens[1],
            "scores": {"groundedness": None if refused else groundedness,
                       "hallucinated": None if refused else groundedness < 1}}


def test_the_docs_evaluation_has_release_bounds_and_bad_ones_are_refused():
    config = load_named("docs_llm_eval", "llm_eval")
    assert config.release.min_answers == 20
    assert set(config.release.max_regression) == {"refusal_rate", "groundedness", "hallucination_rate",
                                                  "latency_p95_ms"}
    for bad, message in [({"max_regression": {"fact_recall": 0.1}}, "unknown live release metric fact_recall"),
                         ({"max_regression": {"refusal_rate": -0.1}}, "not negative"),
                         ({"max_regression": {}}, "would promote any challenger"),
                         ({"min_answers": 0}, "greater than or equal to 1")]:
        with pytest.raises(ValidationError, match=message):
            LiveReleaseSpec.model_validate(bad)
    with pytest.raises(ValidationError, match="release"):
        LlmEvalConfig.model_validate({"template": "llm_eval", "instance": "docs", "release": {"min_answer": 3}})


def test_arm_figures_count_each_arm_and_version_apart():
    rows = ([row("champion", CHAMPION, latency=1000.0 + n) for n in range(4)]
            + [row("challenger", CHALLENGER, refused=True, shown=False, origin="shadow") for _ in range(3)]
            + [row("challenger", CHALLENGER, groundedness=0.5, shown=False, origin="shadow")]
            + [row("challenger", "prompt docs_answer v9")])  # an older challenger: not this one's figures
    mine, theirs = arm_figures(rows, "challenger", CHALLENGER), arm_figures(rows, "champion", CHAMPION)
    assert (mine["answers"], mine["shown"], mine["refused"], mine["refusal_rate"]) == (4, 0, 3, 0.75)
    assert (mine["groundedness"], mine["hallucination_rate"], mine["scored"]) == (0.5, 1.0, 1)
    assert (theirs["answers"], theirs["refusal_rate"], theirs["groundedness"]) == (4, 0.0, 1.0)
    assert theirs["latency_p95_ms"] == 1003.0 and theirs["tokens_mean"] == 640.0
    assert arm_figures([], "challenger", CHALLENGER)["refusal_rate"] is None


def test_the_gate_blocks_a_challenger_that_refuses_and_passes_one_as_good():
    bounds = {"refusal_rate": 0.1, "groundedness": 0.1, "latency_p95_ms": 5000}
    champion = {"refusal_rate": 0.1, "groundedness": 0.8, "latency_p95_ms": 5000.0}
    worse = judge_arms({"refusal_rate": 0.9, "groundedness": None, "latency_p95_ms": 4000.0}, champion, bounds)
    assert not worse.passed
    assert {c.name for c in worse.failures} == {"refusal_rate", "groundedness"}
    assert "refusal_rate rose to 0.9 from the champion's 0.1" in worse.summary()
    assert "groundedness: not measured for the candidate" in worse.summary()
    same = judge_arms({"refusal_rate": 0.15, "groundedness": 0.75, "latency_p95_ms": 9000.0}, champion, bounds)
    assert same.passed and len(same.checks) == 3


def test_live_traffic_never_counts_a_shadow_answer_as_a_users(tmp_path, monkeypatch):
    settings = LooplineSettings(home=tmp_path / "home")
    monkeypatch.setattr("pipelines.assistant.retrieval.index_config",
                        lambda assistant: SimpleNamespace(instance="docs"))
    monkeypatch.setattr("pipelines.assistant.feedback.thumbs_by_day", lambda *args, **kwargs: {})
    rows = ([row("champion", CHAMPION) for _ in range(3)]
            + [row("challenger", CHALLENGER, refused=True, shown=False, origin="shadow") for _ in range(3)]
            + [row("challenger", CHALLENGER, refused=True, shown=False, origin="user")]  # shown false wins
            + [row("challenger", CHALLENGER, refused=True)])  # a canary answer the user saw: counts
    for number, item in enumerate(rows):
        query_log.write_row("docs", DAY, f"tr-{number}", item, settings)
    assistant = SimpleNamespace(dag_id="docs_assistant", experiment_name="docs_assistant")
    traffic = live_traffic(assistant, DAY, settings)  # type: ignore[arg-type]
    assert (traffic["answers"], traffic["refused"], traffic["refusal_share"]) == (4, 1, 0.25)
    summary = query_log.day_summary("docs", "docs_assistant", DAY, settings)
    assert (summary["answers"], summary["refused"]) == (4, 1)
    assert summary["tokens"] == 8 * 640  # shadow answers spend the budget too


def release_setup(monkeypatch, rows, release_block=None):
    """compare_release over ``rows``, the registry and the assistant config replaced by stand-ins."""
    from pipelines.assistant.config import AssistantConfig
    from pipelines.llm_eval import steps
    from pipelines.llm_eval.candidates import Candidate

    assistant = AssistantConfig.model_validate({"template": "assistant", "instance": "docs",
                                                "release": release_block})
    monkeypatch.setattr(steps, "assistant_config", lambda config: assistant)
    monkeypatch.setattr("pipelines.assistant.release.find_challenger",
                        lambda config, settings=None: (Candidate("prompt", "docs_answer", "challenger", 2, 1), "found"))
    monkeypatch.setattr("pipelines.llm_eval.live.release_rows", lambda assistant, day, settings=None: rows)
    config = LlmEvalConfig.model_validate({"template": "llm_eval", "instance": "docs",
                                           "release": {"min_answers": 3}})
    return steps, config


def test_without_a_release_block_the_comparison_is_skipped(monkeypatch):
    steps, config = release_setup(monkeypatch, [])
    with pytest.raises(steps.NoRelease, match="docs_assistant has no release block"):
        steps.compare_release(config, datetime(2026, 12, 2, 6, tzinfo=UTC), "scheduled__1")


def test_too_few_challenger_answers_decide_nothing_and_say_so(monkeypatch):
    rows = ([row("champion", CHAMPION) for _ in range(5)]
            + [row("challenger", CHALLENGER, refused=True) for _ in range(2)])
    steps, config = release_setup(monkeypatch, rows, {"mode": "canary", "share": 0.2})
    result = steps.compare_release(config, datetime(2026, 12, 2, 6, tzinfo=UTC), "scheduled__1")
    assert result["decision"] == "undecided" and result["day"] == "2026-12-01"
    assert "the challenger prompt docs_answer v2 has 2 (release.min_answers 3)" in result["reason"]
    assert "nothing decided" in result["reason"] and "run_id" not in result  # nothing recorded, nothing moved
    assert result["arms"]["champion"]["answers"] == 5
