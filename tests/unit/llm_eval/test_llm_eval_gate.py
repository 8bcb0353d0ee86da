"""The release gate and the live-traffic judgement on hand-made figures whose verdict is known."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.llm_eval.config import GateSpec, LiveTrafficSpec, LlmEvalConfig
from pipelines.llm_eval.gate import judge
from pipelines.llm_eval.live import judge_live

pytestmark = pytest.mark.unit

CHAMPION = {"hit_at_k": 0.95, "mrr": 0.85, "fact_recall": 0.60, "groundedness": 0.40, "citation_precision": 0.50,
            "refusal_accuracy": 0.90, "hallucination_rate": 0.70, "over_refusal_rate": 0.05,
            "injection_success_rate": 0.0, "canary_leak_rate": 0.0}
SLICES = {"rag": {"fact_recall": 0.7}, "off_corpus": {"refusal_correct": 0.9},
          "question_injection": {"attack_succeeded": 0.0}}


def test_a_candidate_equal_to_the_champion_passes_every_check():
    decision = judge(CHAMPION, CHAMPION, SLICES, SLICES, GateSpec())
    assert decision.passed and decision.failures == []
    assert decision.summary().startswith("passed: all")
    assert len(decision.checks) == len(GateSpec().max_regression) + len(GateSpec().ceilings) + 3


def test_a_regression_beyond_its_bound_blocks_and_names_both_values():
    worse = {**CHAMPION, "fact_recall": 0.50}  # 0.10 below, bound 0.05
    decision = judge(worse, CHAMPION, SLICES, SLICES, GateSpec())
    assert not decision.passed
    assert [check.name for check in decision.failures] == ["fact_recall"]
    assert "fact_recall fell to 0.5 from the champion's 0.6: 0.1 worse, allowed 0.05" in decision.summary()


def test_within_the_bound_passes_and_lower_is_better_metrics_regress_upwards():
    assert judge({**CHAMPION, "fact_recall": 0.56}, CHAMPION, SLICES, SLICES, GateSpec()).passed
    more = {**CHAMPION, "hallucination_rate": 0.80}  # rose 0.10, bound 0.05
    decision = judge(more, CHAMPION, SLICES, SLICES, GateSpec())
    assert [check.name for check in decision.failures] == ["hallucination_rate"]
    assert "hallucination_rate rose to 0.8" in decision.summary()
    fewer = {**CHAMPION, "hallucination_rate": 0.30}  # better: no regression
    assert judge(fewer, CHAMPION, SLICES, SLICES, GateSpec()).passed


def test_a_ceiling_blocks_whatever_the_champion_scored_and_an_unmeasured_ceiling_blocks_too():
    leaky = {**CHAMPION, "injection_success_rate": 0.03}
    champion_as_leaky = dict(leaky)
    decision = judge(leaky, champion_as_leaky, SLICES, SLICES, GateSpec())
    assert [check.name for check in decision.failures] == ["injection_success_rate"]
    assert "above its ceiling 0" in decision.summary()
    unmeasured = {k: v for k, v in CHAMPION.items() if k != "canary_leak_rate"}
    decision = judge(unmeasured, CHAMPION, SLICES, SLICES, GateSpec())
    assert [check.name for check in decision.failures] == ["canary_leak_rate"]
    assert "not measured" in decision.summary()


def test_a_slice_that_drops_beyond_its_bound_blocks_like_a_metric():
    slices = {**SLICES, "rag": {"fact_recall": 0.4}}  # 0.3 below the champion's slice, bound 0.2
    decision = judge(CHAMPION, CHAMPION, slices, SLICES, GateSpec())
    assert [check.name for check in decision.failures] == ["rag/fact_recall"]
    attacked = {**SLICES, "question_injection": {"attack_succeeded": 0.25}}
    assert [c.name for c in judge(CHAMPION, CHAMPION, attacked, SLICES, GateSpec()).failures] == \
        ["question_injection/attack_succeeded"]


def test_a_metric_the_candidate_lost_blocks_one_the_champion_lacked_does_not():
    lost = {k: v for k, v in CHAMPION.items() if k != "groundedness"}
    assert [c.name for c in judge(lost, CHAMPION, SLICES, SLICES, GateSpec()).failures] == ["groundedness"]
    new = {k: v for k, v in CHAMPION.items() if k != "groundedness"}
    assert judge(CHAMPION, new, SLICES, SLICES, GateSpec()).passed


def test_the_gate_config_refuses_unknown_metrics_and_negative_bounds():
    with pytest.raises(ValidationError, match="unknown metric fact_recal"):
        GateSpec(max_regression={"fact_recal": 0.1})
    with pytest.raises(ValidationError, match="unknown scorer"):
        GateSpec(slice_metrics=("nope",))
    with pytest.raises(ValidationError, match="not negative"):
        GateSpec(ceilings={"hallucination_rate": -0.1})


def _traffic(**changes):
    base = {"day": "2026-12-01", "answers": 40, "refused": 4, "refusal_share": 0.1, "rated": 10, "downvotes": 1,
            "downvote_share": 0.1, "latency_p95_ms": 6000.0}
    return {**base, **changes}


def test_live_traffic_within_its_thresholds_is_not_a_regression():
    verdict = judge_live(_traffic(), LiveTrafficSpec())
    assert not verdict.regressed and verdict.signals == []


@pytest.mark.parametrize(("changes", "signal"), [
    ({"downvotes": 4, "downvote_share": 0.4}, "downvotes"),
    ({"refused": 24, "refusal_share": 0.6}, "refusals"),
    ({"latency_p95_ms": 45_000.0}, "latency"),
])
def test_each_live_threshold_crossed_is_a_signal(changes, signal):
    verdict = judge_live(_traffic(**changes), LiveTrafficSpec())
    assert verdict.regressed and verdict.signals == [signal], verdict.reasons


def test_too_few_answers_are_not_judged():
    verdict = judge_live(_traffic(answers=5, refused=5, refusal_share=1.0), LiveTrafficSpec())
    assert not verdict.regressed and "under min_answers 20" in verdict.summary()


def test_the_fallback_asset_is_named_by_the_instance():
    config = LlmEvalConfig.model_validate({"template": "llm_eval", "instance": "docs"})
    assert config.fallback_asset == "docs_assistant_fallback"
    assert config.fallback_asset_ref.uri == "loopline://assistant-fallback/docs"
