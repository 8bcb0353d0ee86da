"""Scores and decisions: answer-token loss and perplexity, the merge check, the registration and champion rules.

The loss is the mean negative log-likelihood per answer token over the whole eval split (token-weighted,
not a mean of batch means), and perplexity is ``exp`` of it. The decision functions are pure, say why, and
return :class:`pipelines.core.tracking.Decision` (``promote``: register, or take the champion alias).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.errors import NotRetryable
from pipelines.core.tracking import Decision
from pipelines.lora.tuning import IGNORE, Example, batches, encode_pairs


class AdapterRejected(NotRetryable, ValueError):
    """The tuned adapter failed a check (the merge check): nothing was registered, the champion is untouched."""


def eval_loss(model, examples: list[Example], batch_size: int, pad_id: int, device: str) -> tuple[float, int]:
    """``(mean NLL per answer token, answer tokens)`` of ``model`` on ``examples`` (eval mode, no gradients)."""
    import torch

    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for ids, mask, labels in batches(examples, batch_size, pad_id, device):
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = labels[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                                    ignore_index=IGNORE, reduction="sum")
            total += float(nll)
            tokens += int((target != IGNORE).sum())
    if tokens == 0:
        raise ValueError("the eval split has no answer tokens to score")
    return total / tokens, tokens


def perplexity(loss: float) -> float:
    """``exp(loss)``, capped so a diverged model reports a large number instead of overflowing."""
    return math.exp(min(loss, 50.0))


def merge_difference(adapted, merged, examples: list[Example], pad_id: int, device: str) -> float:
    """Largest |logit| difference between base + adapter and the merged model.

    Args:
        adapted: The PEFT model (base weights and the adapter beside them).
        merged: A separately loaded copy with the adapter merged into the weights (``merge_and_unload``).
        examples: Compared on the real (non-padding) positions of up to 8 of them, both models in eval mode.
    """
    import torch

    adapted.eval()
    merged.eval()
    worst = 0.0
    with torch.no_grad():
        for ids, mask, _ in batches(examples[:8], 8, pad_id, device):
            a = adapted(input_ids=ids, attention_mask=mask).logits
            b = merged(input_ids=ids, attention_mask=mask).logits
            keep = mask.bool()
            worst = max(worst, float((a[keep] - b[keep]).abs().max()))
    return worst


def merged_model(base_path, adapter_path, device: str):
    """The base model loaded afresh with the adapter merged into its weights, as a consumer would build it."""
    from pathlib import Path

    from peft import PeftModel

    from pipelines.lora.base_model import load_model

    adapted = PeftModel.from_pretrained(load_model(Path(base_path), device), str(adapter_path))
    return adapted.merge_and_unload().eval()


@dataclass(frozen=True)
class AdapterScores:
    """Base and base + adapter on the eval split: answer-token losses, tokens scored, the merge difference."""

    base_loss: float
    tuned_loss: float
    eval_tokens: int
    merge_max_abs_diff: float


def split_loss(model, eval_path: str, tokenizer, max_tokens: int, batch_size: int, device: str) -> tuple[float, int]:
    """:func:`eval_loss` of ``model`` on the pairs of one split file, encoded as for tuning."""
    examples = encode_pairs(eval_path, tokenizer, max_tokens)
    return eval_loss(model, examples, batch_size, tokenizer.pad_token_id, device)


def score_adapter(base_path: Path, adapter_path: Path, eval_path: str, max_tokens: int, batch_size: int,
                  device: str) -> AdapterScores:
    """Eval loss of the base model and of base + adapter on the eval split, and the merge check's difference."""
    from peft import PeftModel

    from pipelines.lora.base_model import load_model, load_tokenizer

    tokenizer = load_tokenizer(base_path)
    model = load_model(base_path, device)
    base_loss, tokens = split_loss(model, eval_path, tokenizer, max_tokens, batch_size, device)
    adapted = PeftModel.from_pretrained(model, str(adapter_path)).to(device).eval()
    tuned_loss, _ = split_loss(adapted, eval_path, tokenizer, max_tokens, batch_size, device)
    merged = merged_model(base_path, adapter_path, device)
    difference = merge_difference(adapted, merged, encode_pairs(eval_path, tokenizer, max_tokens),
                                  tokenizer.pad_token_id, device)
    return AdapterScores(base_loss, tuned_loss, tokens, difference)


def champion_on_split(champion: Any, base: Mapping[str, Any], eval_path: str, max_tokens: int, batch_size: int,
                      device: str) -> dict[str, Any]:
    """The champion's eval perplexity on this run's eval split, or why it cannot be scored here.

    Args:
        champion: The registered version with the ``champion`` alias.
        base: This run's base model (``path``, ``digest``); a champion tuned on another base is not scored.

    Returns:
        ``version``, ``perplexity`` (None when not scored) and ``why_not_scored`` when not scored: the
        ``champion`` argument of :func:`champion_decision`.
    """
    from peft import PeftModel

    from pipelines.lora.base_model import load_model, load_tokenizer
    from pipelines.lora.experiment import BASE_DIGEST_TAG, download_adapter

    info: dict[str, Any] = {"version": str(champion.version), "perplexity": None}
    theirs = champion.tags.get(BASE_DIGEST_TAG)
    if theirs != base["digest"]:
        info["why_not_scored"] = (f"it was tuned on another base model (digest {(theirs or '?')[:12]}…, this "
                                  f"run's is {base['digest'][:12]}…)")
        return info
    with tempfile.TemporaryDirectory() as folder:
        adapter = download_adapter(champion, Path(folder))
        model = PeftModel.from_pretrained(load_model(Path(base["path"]), device), str(adapter)).to(device).eval()
        loss, _ = split_loss(model, eval_path, load_tokenizer(Path(base["path"])), max_tokens, batch_size, device)
    info["perplexity"] = perplexity(loss)
    return info


def registration_decision(base_ppl: float, tuned_ppl: float, min_improvement: float) -> Decision:
    """Register only if the adapter lowers eval perplexity by at least ``min_improvement`` of the base's."""
    gain = (base_ppl - tuned_ppl) / base_ppl
    words = f"eval perplexity {tuned_ppl:.3f} against the base model's {base_ppl:.3f} ({gain:+.1%})"
    if gain >= min_improvement:
        return Decision(True, f"{words} improves by at least the margin {min_improvement:.1%}")
    return Decision(False, f"{words} does not improve by the margin {min_improvement:.1%}; nothing registered")


def champion_decision(tuned_ppl: float, champion: dict[str, Any] | None, min_gain: float, *,
                      force: bool = False) -> Decision:
    """Whether the registered adapter takes the ``champion`` alias.

    Args:
        tuned_ppl: The challenger's eval perplexity.
        champion: None (no champion yet) or ``version``, ``perplexity`` (scored on the same eval split; None
            when it could not be, e.g. tuned on another base model) and ``why_not_scored``.
        min_gain: The challenger must be lower than the champion by more than this share of its perplexity.
        force: Promote whatever the rule says (the reason records what it said).
    """
    if champion is None:
        decision = Decision(True, f"first adapter: eval perplexity {tuned_ppl:.3f} passed the registration gate")
    elif champion.get("perplexity") is None:
        decision = Decision(False, f"champion v{champion['version']} cannot be compared on this eval split "
                                   f"({champion.get('why_not_scored', 'not scored')}); it stays")
    else:
        theirs = champion["perplexity"]
        gain = (theirs - tuned_ppl) / theirs
        words = (f"eval perplexity {tuned_ppl:.3f} against champion v{champion['version']}'s {theirs:.3f} "
                 f"({gain:+.1%})")
        decision = (Decision(True, f"{words} beats it by more than {min_gain:.1%}") if gain > min_gain
                    else Decision(False, f"{words} does not beat it by more than {min_gain:.1%}"))
    if force and not decision.promote:
        return Decision(True, f"forced by the run's force_promote; the rule said: {decision.reason}")
    return decision


@dataclass(frozen=True)
class CandidateMove:
    """What ``register_adapter`` does with a registered version when the assistant's gate promotes.

    ``alias`` is the alias the version takes (``champion`` only when forced; None: nothing moves); ``announce``
    says whether the adapter-candidate Asset is emitted (the gate has something new to judge).
    """

    alias: str | None
    announce: bool
    reason: str


def candidate_move(version: str, champion: str | None, challenger: str | None, candidate_alias: str, *,
                   force: bool = False) -> CandidateMove:
    """With ``evaluation.promotion: gate``: the registered ``version`` goes to the gate as ``candidate_alias``.

    The gate (``pipelines.llm_eval.candidates``) judges it on answer metrics against the champion (the base
    model alone while there is none) and moves ``champion`` itself.

    Args:
        version: The version this run registered (or found registered for its tuning key).
        champion, challenger: The versions the ``champion`` and ``candidate_alias`` aliases name now (None: unset).
        candidate_alias: The gate's challenger alias.
        force: The run's ``force_promote``: the version takes ``champion`` at once, past the gate.
    """
    against = f"champion v{champion}" if champion else "the base model alone (no adapter is champion yet)"
    if champion == version:
        return CandidateMove(None, False, f"version {version} is already the champion (same inputs as before)")
    if force:
        return CandidateMove("champion", False, f"forced by the run's force_promote: version {version} takes "
                                                f"@champion without the llm_eval gate (which would judge it against "
                                                f"{against})")
    if challenger == version:
        return CandidateMove(None, False, f"version {version} is @{candidate_alias} already (same inputs as before); "
                                          "the gate was told when it got the alias")
    replaced = f", replacing v{challenger} there" if challenger else ""
    return CandidateMove(candidate_alias, True, f"version {version} takes @{candidate_alias}{replaced}: the llm_eval "
                                                f"gate judges its answers against {against}")
