"""The release gate: may a candidate's evaluation replace the champion's? Pure functions, no I/O.

Both evaluations asked the same golden set (same digest) in one DAG run. :func:`judge` checks, in order:

1. every metric bounded in ``gate.max_regression``: the candidate is at most that much worse than the champion
   (worse is lower for the rates of success, higher for hallucination, refusals, attacks, tokens and latency:
   :data:`METRIC_DIRECTIONS`);
2. every ceiling in ``gate.ceilings``: the candidate's value is at or below it, whatever the champion scored;
   a ceiling on a metric the golden set does not measure blocks too: the gate cannot show that it holds;
3. every category (slice) of the golden set, on each of ``gate.slice_metrics``: the candidate's mean is at most
   ``gate.max_slice_regression`` worse than the champion's.

:func:`judge_arms` makes check 1 for a live release: the challenger arm's figures of a day against the champion
arm's (:data:`LIVE_METRIC_DIRECTIONS`).

A failed check blocks; the decision names each check that failed with both values and the bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

EPSILON = 1e-9
HIGHER, LOWER = "higher", "lower"

# The run's headline metrics (steps.SUMMARY_METRICS and the safety ones) and which way is better.
METRIC_DIRECTIONS: dict[str, str] = {
    "hit_at_k": HIGHER, "mrr": HIGHER, "fact_recall": HIGHER, "token_f1": HIGHER, "rouge_l": HIGHER,
    "groundedness": HIGHER, "citation_precision": HIGHER, "refusal_accuracy": HIGHER, "within_budget": HIGHER,
    "hallucination_rate": LOWER, "over_refusal_rate": LOWER, "tokens_mean": LOWER, "tokens_max": LOWER,
    "latency_p95_ms": LOWER, "attack_success_rate": LOWER, "injection_success_rate": LOWER,
    "canary_leak_rate": LOWER,
}
# The per-case scorers (their means per category are the slices) and which way is better.
SCORER_DIRECTIONS: dict[str, str] = {
    "retrieval_hit": HIGHER, "retrieval_reciprocal_rank": HIGHER, "fact_recall": HIGHER, "token_f1": HIGHER,
    "rouge_l": HIGHER, "groundedness": HIGHER, "citation_precision": HIGHER, "refusal_correct": HIGHER,
    "within_budget": HIGHER, "hallucinated": LOWER, "over_refusal": LOWER, "tokens": LOWER, "latency_ms": LOWER,
    "attack_succeeded": LOWER, "canary_leaked": LOWER,
}

# What a live release compares (pipelines.llm_eval.live.arm_figures): the figures a day of answers has without
# reference answers, and which way is better.
LIVE_METRIC_DIRECTIONS: dict[str, str] = {
    "refusal_rate": LOWER, "groundedness": HIGHER, "hallucination_rate": LOWER, "latency_p95_ms": LOWER,
    "tokens_mean": LOWER,
}


@dataclass(frozen=True)
class GateCheck:
    """One comparison: what, the two values, the bound, and whether it held."""

    name: str
    candidate: float | None
    champion: float | None
    bound: float
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on a candidate, with every check it made."""

    passed: bool
    checks: list[GateCheck] = field(default_factory=list)

    @property
    def failures(self) -> list[GateCheck]:
        return [check for check in self.checks if not check.passed]

    def summary(self) -> str:
        if self.passed:
            return f"passed: all {len(self.checks)} checks held against the champion"
        return f"blocked: {len(self.failures)} of {len(self.checks)} checks failed: " + "; ".join(
            check.reason for check in self.failures)


def _fmt(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.4g}"


def regression(name: str, candidate: float | None, champion: float | None, bound: float, direction: str) -> GateCheck:
    """Whether ``candidate`` is at most ``bound`` worse than ``champion`` (``direction``: which way is better)."""
    if champion is None:
        return GateCheck(name, candidate, champion, bound, True,
                         f"{name}: the champion has no value to compare with (candidate {_fmt(candidate)})")
    if candidate is None:
        return GateCheck(name, candidate, champion, bound, False,
                         f"{name}: not measured for the candidate (champion {_fmt(champion)})")
    worse_by = champion - candidate if direction == HIGHER else candidate - champion
    passed = worse_by <= bound + EPSILON
    verb = "fell" if direction == HIGHER else "rose"
    if passed:
        reason = f"{name} {_fmt(candidate)} against the champion's {_fmt(champion)} (allowed {bound:g} worse)"
    else:
        reason = (f"{name} {verb} to {_fmt(candidate)} from the champion's {_fmt(champion)}: {worse_by:.4g} worse, "
                  f"allowed {bound:g}")
    return GateCheck(name, candidate, champion, bound, passed, reason)


def ceiling(name: str, candidate: float | None, bound: float) -> GateCheck:
    """Whether ``candidate`` is at or below ``bound``; an unmeasured value fails (nothing shows it holds)."""
    if candidate is None:
        return GateCheck(name, None, None, bound, False,
                         f"{name}: not measured (the golden set has no case for it), so the ceiling {bound:g} "
                         "cannot be shown to hold: add the cases or remove the ceiling from gate.ceilings")
    passed = candidate <= bound + EPSILON
    reason = (f"{name} {_fmt(candidate)} within its ceiling {bound:g}" if passed else
              f"{name} {_fmt(candidate)} above its ceiling {bound:g}")
    return GateCheck(name, candidate, None, bound, passed, reason)


def judge(candidate: Mapping[str, float | None], champion: Mapping[str, float | None],
          candidate_slices: Mapping[str, Mapping[str, float]], champion_slices: Mapping[str, Mapping[str, float]],
          gate) -> GateDecision:
    """Judge a candidate's evaluation against the champion's on the same golden set.

    Args:
        candidate, champion: the headline metrics (``EvalSummary.metrics``).
        candidate_slices, champion_slices: the mean of each scorer per category (``metrics_by_category``).
        gate: a :class:`pipelines.llm_eval.config.GateSpec`.
    """
    checks = [regression(name, candidate.get(name), champion.get(name), bound, METRIC_DIRECTIONS[name])
              for name, bound in sorted(gate.max_regression.items())]
    checks += [ceiling(name, candidate.get(name), bound) for name, bound in sorted(gate.ceilings.items())]
    for category in sorted(set(candidate_slices) | set(champion_slices)):
        for scorer in gate.slice_metrics:
            mine = candidate_slices.get(category, {}).get(scorer)
            theirs = champion_slices.get(category, {}).get(scorer)
            if mine is None and theirs is None:
                continue  # the scorer does not apply to this category's cases
            checks.append(regression(f"{category}/{scorer}", mine, theirs, gate.max_slice_regression,
                                     SCORER_DIRECTIONS[scorer]))
    return GateDecision(all(check.passed for check in checks), checks)


def judge_arms(challenger: Mapping[str, float | None], champion: Mapping[str, float | None],
               max_regression: Mapping[str, float]) -> GateDecision:
    """Judge a live release's challenger arm against its champion arm on one day of answers.

    The same check as the offline gate's ``max_regression`` (:func:`regression`), on the metrics of
    :data:`LIVE_METRIC_DIRECTIONS`: a metric the champion arm lacks is not compared, one only it has blocks.
    """
    checks = [regression(name, challenger.get(name), champion.get(name), bound, LIVE_METRIC_DIRECTIONS[name])
              for name, bound in sorted(max_regression.items())]
    return GateDecision(all(check.passed for check in checks), checks)
