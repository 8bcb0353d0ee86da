"""The promotion policy: when a challenger takes the ``champion`` alias. Pure functions, no MLflow.

1. Every champion reaches the absolute floor of the metric.
2. With no champion yet, a challenger above the floor is promoted.
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
    value: float | None  # None when the slice has a single class in the holdout


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
) -> Decision:
    """Apply the policy; the reason is a sentence a person can act on (``tracking.apply_decision`` records it)."""
    verdict = _judge(challenger, champion, policy, champion_version)
    if force and not verdict.promote:
        return Decision(True, f"forced by the force_promote param; the policy said: {verdict.reason}")
    return verdict


def _judge(challenger: Evaluation, champion: Evaluation | None, policy: PromotionPolicy,
           champion_version: str | None) -> Decision:
    name = policy.metric
    if challenger.metric < policy.floor:
        return Decision(False, f"{name} {challenger.metric:.4f} is below the floor {policy.floor:.4f}")
    if champion is None:
        return Decision(True, f"first model: {name} {challenger.metric:.4f} reaches the floor {policy.floor:.4f}")
    label = f"champion v{champion_version}" if champion_version else "the champion"
    gain = challenger.metric - champion.metric
    if gain < policy.min_improvement:
        return Decision(
            False,
            f"{name} {challenger.metric:.4f} does not beat {label}'s {champion.metric:.4f} by the margin "
            f"{policy.min_improvement:.4f} (difference {gain:+.4f})",
        )
    for slice_name, theirs in champion.slices.items():
        ours = challenger.slices.get(slice_name)
        if ours is None or ours.value is None or theirs.value is None:
            continue
        if policy.slices is None or min(ours.rows, theirs.rows) < policy.slices.min_rows:
            continue
        drop = theirs.value - ours.value
        if drop > policy.max_slice_regression:
            return Decision(
                False,
                f"slice {slice_name}: {name} drops {drop:.4f} ({theirs.value:.4f} → {ours.value:.4f}), "
                f"more than the bound {policy.max_slice_regression:.4f}",
            )
    return Decision(
        True,
        f"{name} {challenger.metric:.4f} beats {label}'s {champion.metric:.4f} by {gain:+.4f} "
        f"and no slice regresses beyond {policy.max_slice_regression:.4f}",
    )
