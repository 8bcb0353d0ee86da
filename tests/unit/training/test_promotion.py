"""The promotion policy: a worse challenger is never promoted, a slice regression blocks, floors hold."""

from __future__ import annotations

import pytest

from pipelines.training.config import PromotionPolicy, SliceSpec
from pipelines.training.promotion import Evaluation, SliceScore, decide

pytestmark = pytest.mark.unit

POLICY = PromotionPolicy(floor=0.65, min_improvement=0.01, max_slice_regression=0.03,
                         slices=SliceSpec(column="age_days", edges=[0, 365, 1e9], labels=["young", "old"]))


def ev(metric: float, **slices: tuple[int, float | None]) -> Evaluation:
    return Evaluation(metric=metric, slices={name: SliceScore(rows, value) for name, (rows, value) in slices.items()})


def test_first_model_is_promoted_when_it_reaches_the_floor():
    decision = decide(ev(0.80), None, POLICY)
    assert decision.promote
    assert decision.reason == "first model: roc_auc 0.8000 reaches the floor 0.6500"


def test_first_model_below_the_floor_is_not_promoted():
    decision = decide(ev(0.60), None, POLICY)
    assert not decision.promote
    assert "below the floor 0.6500" in decision.reason


@pytest.mark.parametrize("challenger", [0.70, 0.79, 0.805, 0.8099])
def test_a_challenger_that_is_worse_or_not_better_by_the_margin_is_never_promoted(challenger):
    decision = decide(ev(challenger), ev(0.80), POLICY, champion_version="3")
    assert not decision.promote
    assert "does not beat champion v3's 0.8000 by the margin 0.0100" in decision.reason


def test_a_better_challenger_is_promoted():
    decision = decide(ev(0.85, a=(100, 0.84)), ev(0.80, a=(100, 0.83)), POLICY, champion_version="3")
    assert decision.promote
    assert decision.reason.startswith("roc_auc 0.8500 beats champion v3's 0.8000 by +0.0500")


def test_a_slice_regression_blocks_promotion_even_when_overall_is_better():
    champion = ev(0.80, young=(60, 0.82), old=(60, 0.78))
    challenger = ev(0.86, young=(60, 0.75), old=(60, 0.90))
    decision = decide(challenger, champion, POLICY)
    assert not decision.promote
    assert decision.reason == ("slice young: roc_auc drops 0.0700 (0.8200 → 0.7500), more than the bound 0.0300")


def test_small_or_single_class_slices_are_not_judged():
    champion = ev(0.80, tiny=(5, 0.95), oneclass=(60, None))
    challenger = ev(0.86, tiny=(5, 0.50), oneclass=(60, 0.70))
    assert decide(challenger, champion, POLICY).promote


def test_force_promotes_and_records_what_the_policy_said():
    decision = decide(ev(0.70), ev(0.80), POLICY, champion_version="2", force=True)
    assert decision.promote
    assert decision.reason.startswith("forced by the force_promote param; the policy said: "
                                      "roc_auc 0.7000 does not beat")


def test_without_slices_only_the_overall_metric_is_judged():
    unsliced = POLICY.model_copy(update={"slices": None})
    assert PromotionPolicy().slices is None  # no default slice column: a use case names its own
    assert decide(ev(0.86), ev(0.80), unsliced).promote
