"""The promotion policy: when a challenger takes the ``champion`` alias. Pure functions, no MLflow.

The metric is the policy's (one of its task's); "beats", "floor" and "drops" follow its direction (lower is better
for log loss, Brier, RMSE, MAE).

1. Every champion reaches the absolute floor of the metric (when one is set).
2. With no champion yet, a challenger that reaches the floor and beats the baseline (``promotion.baseline``, scored
   on the same holdout) by ``min_gain_over_baseline`` is promoted.
3. Otherwise the challenger must beat the champion, on the same holdout, by ``min_improvement``,
   and no slice judged on both may lose more than ``max_slice_regression``.
4. ``force`` promotes whatever the checks say, and the reason records what they said.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.core.tracking import Decision
from pipelines.training.config import PromotionPolicy


@dataclass(frozen=True)
class SliceScore:
    rows: int
    value: float | None  # None when the metric is undefined on the slice (a single class, under 2 rows)


@dataclass(frozen=True)
class Evaluation:
    """One model's scores on one holdout: the policy's metric overall and per slice."""

    metric: float
    slices: dict[str, SliceScore] = field(default_factory=dict)


def decide(
    challenger: Evaluation,
    champion: Evaluation | None,
    policy: PromotionPolicy,
    *,
    champion_version: str | None = None,
    force: bool = False,
    baseline: float | None = None,
) -> Decision:
    """Apply the policy; the reason is a sentence a person can act on (``tracking.apply_decision`` records it).

    ``baseline``: the baseline's value of the policy's metric on the same holdout (``policy.baseline`` names it);
    a first model must beat it by ``policy.min_gain_over_baseline``.
    """
    verdict = _judge(challenger, champion, policy, champion_version, baseline)
    if force and not verdict.promote:
        return Decision(True, f"forced by the force_promote param; the policy said: {verdict.reason}")
    return verdict


def gain(new: float, old: float, higher_is_better: bool) -> float:
    """How much better ``new`` is than ``old`` (positive: better), whatever the metric's direction."""
    return new - old if higher_is_better else old - new


def _judge(challenger: Evaluation, champion: Evaluation | None, policy: PromotionPolicy,
           champion_version: str | None, baseline: float | None) -> Decision:
    name, up = policy.metric_name, policy.higher_is_better
    floor = policy.floor
    if floor is not None and gain(challenger.metric, floor, up) < 0:
        side = "below the floor" if up else "above the ceiling (lower is better)"
        return Decision(False, f"{name} {challenger.metric:.4f} is {side} {floor:.4f}")
    if champion is None:
        reached = (f"reaches the floor {floor:.4f}" if floor is not None else "(no floor set)")
        if baseline is None:
            return Decision(True, f"first model: {name} {challenger.metric:.4f} {reached}")
        margin = gain(challenger.metric, baseline, up)
        against = (f"the baseline {policy.baseline}'s {baseline:.4f} by min_gain_over_baseline "
                   f"{policy.min_gain_over_baseline:.4f} (gain {margin:+.4f})")
        if margin < policy.min_gain_over_baseline or margin <= 0:
            return Decision(False, f"first model: {name} {challenger.metric:.4f} does not beat {against}; "
                                   "a model no better than the baseline is not promoted")
        return Decision(True, f"first model: {name} {challenger.metric:.4f} {reached} and beats {against}")
    label = f"champion v{champion_version}" if champion_version else "the champion"
    improvement = gain(challenger.metric, champion.metric, up)
    if improvement < policy.min_improvement:
        return Decision(
            False,
            f"{name} {challenger.metric:.4f} does not beat {label}'s {champion.metric:.4f} by the margin "
            f"{policy.min_improvement:.4f} (difference {improvement:+.4f})",
        )
    for slice_name, theirs in champion.slices.items():
        ours = challenger.slices.get(slice_name)
        if ours is None or ours.value is None or theirs.value is None:
            continue
        if policy.slices is None or min(ours.rows, theirs.rows) < policy.slices.min_rows:
            continue
        drop = -gain(ours.value, theirs.value, up)
        if drop > policy.max_slice_regression:
            return Decision(
                False,
                f"slice {slice_name}: {name} {'drops' if up else 'worsens'} {drop:.4f} "
                f"({theirs.value:.4f} → {ours.value:.4f}), more than the bound {policy.max_slice_regression:.4f}",
            )
    return Decision(
        True,
        f"{name} {challenger.metric:.4f} beats {label}'s {champion.metric:.4f} by {improvement:+.4f} "
        f"and no slice regresses beyond {policy.max_slice_regression:.4f}",
    )
