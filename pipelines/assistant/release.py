"""Shadow and canary releases: which arm answers a user's question, and the live scores of an answer.

The assistant config's ``release:`` (:class:`pipelines.assistant.config.ReleaseSpec`) names a challenger: the
prompt (or adapter) version under its alias. :func:`active_release` looks it up in MLflow on every answer (as
the champion prompt is: moving an alias takes effect on the next answer) and returns None, with the reason,
when there is nothing to release: no such alias, it names the champion, or the gates blocked or rolled the
version back. Only users' questions (``origin`` ``user``) are released; the evaluation's and the DAG's own
check questions are answered by the champion alone.

In **canary** mode :func:`routes_to_challenger` sends a question to the challenger when a hash of its request
id (and the challenger's version, so each new challenger gets a fresh sample) falls under ``share``: the same
request id always gets the same arm. In **shadow** mode the challenger answers every question after the
champion, and its answer is stored and scored, never returned.

:func:`live_scores` scores an answer without a reference answer: refusal, latency, tokens, and groundedness of
its sentences against the passages the model was given (the scorers of :mod:`pipelines.llm_eval.scorers`, with
the MiniLM model the guard has loaded already).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from pipelines.core.settings import LooplineSettings

if TYPE_CHECKING:
    from pipelines.assistant.config import AssistantConfig
    from pipelines.llm_eval.candidates import Candidate

log = logging.getLogger(__name__)

CHAMPION_ARM, CHALLENGER_ARM = "champion", "challenger"
USER_ORIGIN = "user"
SHADOW_ORIGIN = "shadow"  # the origin of a shadow answer's row: not a user-facing answer (drift and live skip it)
_BUCKETS = 16 ** 15


def request_id_for(assistant: str, day: date, safe_question: str) -> str:
    """The request id of a question asked without one: the assistant, the UTC day and the (redacted) question.

    The same question asked again on the same day gets the same id, so a retry is answered by the same arm.
    """
    digest = hashlib.sha256(f"{assistant}\n{day.isoformat()}\n{safe_question.strip()}".encode()).hexdigest()
    return f"q-{digest[:32]}"


def bucket(request_id: str, salt: str = "") -> float:
    """Where ``request_id`` falls in [0, 1): the first 15 hex digits of sha256(salt, id), uniform and stable."""
    digest = hashlib.sha256(f"{salt}\n{request_id}".encode()).hexdigest()
    return int(digest[:15], 16) / _BUCKETS


def routes_to_challenger(request_id: str, share: float, salt: str = "") -> bool:
    """Canary routing: whether the challenger answers this request (its bucket is under ``share``)."""
    return bucket(request_id, salt) < share


def version_label(kind: str, name: str, version: int | str | None) -> str:
    """How rows and traces name an arm's version: ``prompt docs_assistant_answer v3``, ``adapter my_lora v2``."""
    return f"{kind} {name} v{version}"


@dataclass(frozen=True)
class LiveRelease:
    """The release in force for one answer: its mode and share, the challenger with its champion, and how its
    answers are scored."""

    mode: str
    share: float
    challenger: Candidate
    min_support: float = 0.6  # release.min_support: what live_scores counts as a supported sentence

    @property
    def challenger_label(self) -> str:
        return self.challenger.label

    @property
    def champion_label(self) -> str:
        return version_label(self.challenger.kind, self.challenger.name, self.challenger.champion_version)

    def arm_for(self, request_id: str) -> str:
        """The arm whose answer the user sees: the champion in shadow mode, by the hash in canary mode."""
        if self.mode == "canary" and routes_to_challenger(request_id, self.share, self.challenger_label):
            return CHALLENGER_ARM
        return CHAMPION_ARM


def find_challenger(config: AssistantConfig, settings: LooplineSettings | None = None) -> tuple[Candidate | None, str]:
    """The version under ``release.alias`` that may be released, or None with a sentence saying why not.

    Not released: no release block, no champion or no such alias, the alias names the champion, or the version
    was blocked by the offline gate or rolled back (``loopline.gate.decision``).
    """
    from pipelines.core import tracking
    from pipelines.llm_eval.candidates import (
        CHAMPION,
        DECISION_TAG,
        Candidate,
        alias_version,
        version_tags,
    )

    spec = config.release
    if spec is None:
        return None, f"{config.dag_id} has no release block"
    kind = spec.challenger
    name = config.prompt.name if kind == "prompt" else config.generator.adapter.model_name  # type: ignore[union-attr]
    client = tracking.client(settings)
    version = alias_version(client, kind, name, spec.alias)
    if version is None:
        return None, f"{kind} {name} has no @{spec.alias}: nothing to release"
    champion = alias_version(client, kind, name, CHAMPION)
    if champion is None:
        return None, f"{kind} {name} has no @champion to compare the challenger with"
    if version == champion:
        return None, f"{kind} {name} @{spec.alias} is the champion v{version}: nothing to release"
    decision = version_tags(client, kind, name, version).get(DECISION_TAG)
    if decision in ("blocked", "rolled_back"):
        return None, (f"{kind} {name} v{version} was {decision.replace('_', ' ')} by a gate: it gets no live "
                      f"questions; give @{spec.alias} a new version")
    return Candidate(kind, name, spec.alias, version, champion), f"{spec.mode} release of {kind} {name} v{version}"


def active_release(config: AssistantConfig, origin: str,
                   settings: LooplineSettings | None = None) -> LiveRelease | None:
    """The release in force for a question of ``origin``; None: the champion answers alone (logged why)."""
    if config.release is None or origin != USER_ORIGIN:
        return None
    challenger, note = find_challenger(config, settings)
    if challenger is None:
        log.info("No live release: %s", note)
        return None
    return LiveRelease(config.release.mode, config.release.share, challenger, config.release.min_support)


def live_scores(answer: str, refused: bool, passages: Sequence[str], embed: Callable[[Sequence[str]], Any],
                min_support: float, *, latency_ms: float, tokens: int) -> dict[str, Any]:
    """The scores of a live answer that need no reference answer.

    Returns:
        ``refused``, ``latency_ms``, ``tokens``; ``groundedness`` (share of the answer's sentences the passages
        support: similarity ≥ ``min_support`` and its specific terms in them) and ``hallucinated`` (any
        sentence unsupported), both None for a declined answer or one without a sentence; ``unsupported``: the
        unsupported sentences (at most 3, 160 characters each).
    """
    from pipelines.llm_eval.scorers import CITATION, Passage, answer_sentences, support

    scores: dict[str, Any] = {"refused": bool(refused), "latency_ms": latency_ms, "tokens": tokens,
                              "groundedness": None, "hallucinated": None, "unsupported": []}
    sentences = [] if refused else answer_sentences(CITATION.sub("", answer))
    if not sentences:
        return scores
    found = support(sentences, [Passage("", "", text) for text in passages], embed, min_support)
    unsupported = [s.sentence for s in found if not s.supported]
    scores.update({"groundedness": round((len(found) - len(unsupported)) / len(found), 4),
                   "hallucinated": bool(unsupported), "unsupported": [s[:160] for s in unsupported[:3]]})
    return scores
