"""What the gate judges and moves: prompt versions (MLflow's prompt registry) and adapter versions (its model
registry), each found by alias, tagged with the gate's decision, promoted and rolled back by moving aliases.

A **candidate** is the version a person (or a pipeline) gave the ``challenger`` alias while ``champion`` names
another. It is judged once per golden-set digest and champion: the decision is a tag on the version
(``loopline.gate.decision``, ``.reason``, ``.golden_digest``, ``.judged_against``), so the daily run does not ask
the golden set again for a candidate already judged. A promotion writes the tags first, then moves
``champion`` only if it still names the version judged against (compare-and-set), and records the version it
replaced (``loopline.gate.replaced``): that chain is what :func:`roll_back` walks back, to the last version that
passed (or was champion before any gate).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pipelines.core import tracking
from pipelines.core.errors import NotRetryable
from pipelines.core.settings import LooplineSettings

if TYPE_CHECKING:
    from pipelines.assistant.config import AssistantConfig

log = logging.getLogger(__name__)

Kind = Literal["prompt", "adapter"]
CHAMPION = "champion"
DECISION_TAG = "loopline.gate.decision"
REASON_TAG = "loopline.gate.reason"
DIGEST_TAG = "loopline.gate.golden_digest"
AGAINST_TAG = "loopline.gate.judged_against"
REPLACED_TAG = "loopline.gate.replaced"
PROMOTED_AT_TAG = "loopline.gate.promoted_at"
EVAL_RUN_TAG = "loopline.gate.eval_run"
ROLLBACK_REASON_TAG = "loopline.rollback.reason"
RESTORED_BY_TAG = "loopline.rollback.restored_by"
ROLLBACK_AT_TAG = "loopline.rollback.at"
HELD_TAG = "loopline.release.held"  # passed the offline gate; a live release (compare_release) decides
MAX_TAG_CHARS = 4000  # well under the registries' tag value limits


class NothingToRollBack(NotRetryable):
    """No champion, or no earlier version that passed the gate, to move the alias back to."""


@dataclass(frozen=True)
class Candidate:
    """A challenger version of a prompt or adapter, and the champion version it is judged against."""

    kind: Kind
    name: str
    challenger_alias: str
    version: int
    champion_version: int | None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name} v{self.version}"

    def answering_config(self, assistant: AssistantConfig) -> AssistantConfig:
        """The assistant config that answers with this candidate instead of the champion."""
        if self.kind == "prompt":
            return assistant.model_copy(update={"prompt": assistant.prompt.model_copy(
                update={"alias": self.challenger_alias})})
        generator = assistant.generator
        adapter = generator.adapter.model_copy(update={"alias": self.challenger_alias})  # type: ignore[union-attr]
        return assistant.model_copy(update={"generator": generator.model_copy(update={"adapter": adapter})})

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "challenger_alias": self.challenger_alias,
                "version": self.version, "champion_version": self.champion_version, "label": self.label}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        """The candidate :meth:`to_json` wrote (an XCom); the derived ``label`` is left out."""
        return cls(**{key: value for key, value in data.items() if key != "label"})


# --- the two registries, one interface ---------------------------------------------------------------------------

def alias_version(client: Any, kind: Kind, name: str, alias: str) -> int | None:
    """The version ``alias`` names, or None when the prompt/model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        found = (client.get_prompt_version_by_alias(name, alias) if kind == "prompt"
                 else client.get_model_version_by_alias(name, alias))
    except MlflowException:
        return None
    return int(found.version) if found is not None else None


def version_tags(client: Any, kind: Kind, name: str, version: int) -> dict[str, str]:
    found = (client.get_prompt_version(name, version) if kind == "prompt"
             else client.get_model_version(name, str(version)))
    return dict(found.tags or {}) if found is not None else {}


def set_version_tags(client: Any, kind: Kind, name: str, version: int, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        value = str(value)[:MAX_TAG_CHARS]
        if kind == "prompt":
            client.set_prompt_version_tag(name, version, key, value)
        else:
            client.set_model_version_tag(name, str(version), key, value)


def set_alias(client: Any, kind: Kind, name: str, alias: str, version: int) -> None:
    if kind == "prompt":
        client.set_prompt_alias(name, alias, int(version))
    else:
        client.set_registered_model_alias(name, alias, str(version))


def delete_alias(client: Any, kind: Kind, name: str, alias: str) -> None:
    if kind == "prompt":
        client.delete_prompt_alias(name, alias)
    else:
        client.delete_registered_model_alias(name, alias)


def subjects(assistant: AssistantConfig, kinds: tuple[str, ...]) -> list[tuple[Kind, str]]:
    """The (kind, name) pairs of the assistant the gate looks after: its prompt, and its adapter when it has one."""
    found: list[tuple[Kind, str]] = []
    if "prompt" in kinds:
        found.append(("prompt", assistant.prompt.name))
    if "adapter" in kinds and assistant.generator.adapter is not None:
        found.append(("adapter", assistant.generator.adapter.model_name))
    return found


# --- finding, promoting, rolling back ----------------------------------------------------------------------------

def find_candidate(assistant: AssistantConfig, gate, golden_digest: str,
                   settings: LooplineSettings | None = None) -> tuple[Candidate | None, str]:
    """The first version under the challenger alias not yet judged against today's champion on this golden set.

    Returns:
        (the candidate or None, a sentence saying what was found).
    """
    client = tracking.client(settings)
    notes = []
    for kind, name in subjects(assistant, gate.candidates):
        version = alias_version(client, kind, name, gate.challenger_alias)
        if version is None:
            notes.append(f"{kind} {name} has no @{gate.challenger_alias}")
            continue
        champion = alias_version(client, kind, name, CHAMPION)
        if version == champion:
            notes.append(f"{kind} {name} @{gate.challenger_alias} is the champion v{version}")
            continue
        tags = version_tags(client, kind, name, version)
        if tags.get(DECISION_TAG) == "rolled_back":
            notes.append(f"{kind} {name} v{version} was rolled back after a live regression "
                         f"({tags.get(ROLLBACK_REASON_TAG, 'see its tags')}); give @{gate.challenger_alias} a new "
                         "version")
            continue
        if (tags.get(DECISION_TAG) and tags.get(DIGEST_TAG) == golden_digest
                and tags.get(AGAINST_TAG) == str(champion)):
            notes.append(f"{kind} {name} v{version} was judged already against champion v{champion} on this golden "
                         f"set: {tags[DECISION_TAG]}")
            continue
        candidate = Candidate(kind, name, gate.challenger_alias, version, champion)
        return candidate, f"candidate {candidate.label} (champion v{champion})"
    return None, "; ".join(notes) or "nothing to judge (no prompt or adapter under the gate)"


def record_decision(candidate: Candidate, *, passed: bool, reason: str, golden_digest: str, eval_run: str,
                    settings: LooplineSettings | None = None, now: datetime | None = None,
                    hold: bool = False) -> bool:
    """Tag the candidate with the decision and, when it passed, make it the champion (compare-and-set).

    ``hold``: a passed candidate is tagged passed and :data:`HELD_TAG` but ``champion`` stays: a live release of
    it decides (``steps.compare_release``).

    Returns:
        Whether ``champion`` moved to the candidate.

    Raises:
        tracking.ChampionMoved: the champion alias moved since the candidate was judged (retryable: the retry
            judges against the new champion); nothing was tagged.
    """
    client = tracking.client(settings)
    now = now or datetime.now(UTC)
    current = alias_version(client, candidate.kind, candidate.name, CHAMPION)
    if current != candidate.champion_version:
        raise tracking.ChampionMoved(f"{candidate.kind} {candidate.name}@champion moved from "
                                     f"v{candidate.champion_version} to v{current} while v{candidate.version} was "
                                     "judged; the retry judges it against the new champion")
    tags = {DECISION_TAG: "passed" if passed else "blocked", REASON_TAG: reason, DIGEST_TAG: golden_digest,
            AGAINST_TAG: str(candidate.champion_version), EVAL_RUN_TAG: eval_run}
    if passed and hold:
        tags[HELD_TAG] = "true"
    elif passed:
        tags.update({REPLACED_TAG: str(candidate.champion_version or ""), PROMOTED_AT_TAG: now.isoformat()})
    set_version_tags(client, candidate.kind, candidate.name, candidate.version, tags)
    if not passed:
        audit_event(client, candidate.kind, candidate.name, candidate.version, "rejection", "rejected", reason, now,
                    f"gate:{candidate.champion_version}", candidate.champion_version,
                    {"eval_run": eval_run, "golden_digest": golden_digest}, settings)
        log.info("%s blocked; champion stays v%s: %s", candidate.label, candidate.champion_version, reason)
        return False
    if hold:
        log.info("%s passed the offline gate; @champion stays v%s until the live release decides", candidate.label,
                 candidate.champion_version)
        return False
    set_alias(client, candidate.kind, candidate.name, CHAMPION, candidate.version)
    audit_event(client, candidate.kind, candidate.name, candidate.version, "promotion", "promoted", reason, now,
                f"gate:{candidate.champion_version}", candidate.champion_version,
                {"eval_run": eval_run, "golden_digest": golden_digest}, settings)
    log.info("%s is the champion now (was v%s): %s", candidate.label, candidate.champion_version, reason)
    return True


def audit_event(client: Any, kind: Kind, name: str, version: int, event: str, decision: str, reason: str,
                at: datetime, key: str, previous: int | None, evidence: dict[str, Any],
                settings: LooplineSettings | None) -> str:
    """Write the audit record of a gate decision or rollback on ``kind name`` v``version`` (pipelines/audit).

    Its provenance is the version's own tags (an adapter's carry the corpus digest and index version it learnt
    from, see pipelines/lora/lineage.py) and the git commit.
    """
    from pipelines.audit.records import AuditEvent, git_commit, record

    made_of = {"git_commit": git_commit(), "version_tags": version_tags(client, kind, name, version)}
    return record(AuditEvent(kind=event, subject=f"{kind} {name}", version=str(version), decision=decision,  # type: ignore[arg-type]
                             reason=reason, at=at, key=f"{kind}:{name}:v{version}:{key}",
                             previous=None if previous is None else str(previous), evidence=evidence,
                             provenance=made_of), settings)


@dataclass(frozen=True)
class RollBack:
    """What :func:`roll_back` did: the alias moved from ``from_version`` back to ``to_version``."""

    kind: Kind
    name: str
    from_version: int
    to_version: int
    reason: str
    already: bool

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "from_version": self.from_version,
                "to_version": self.to_version, "reason": self.reason, "already_done": self.already}


def _champions(assistant: AssistantConfig, kinds: tuple[str, ...],
               settings: LooplineSettings | None) -> list[tuple[Kind, str, int, dict[str, str]]]:
    """(kind, name, champion version, its tags) of each subject of the assistant that has a champion."""
    client = tracking.client(settings)
    found = []
    for kind, name in subjects(assistant, kinds):
        version = alias_version(client, kind, name, CHAMPION)
        if version is not None:
            found.append((kind, name, version, version_tags(client, kind, name, version)))
    return found


def last_promotion(assistant: AssistantConfig, kinds: tuple[str, ...],
                   settings: LooplineSettings | None = None) -> tuple[Kind, str] | None:
    """The subject whose champion was promoted by the gate most recently (the likeliest cause of a regression)."""
    promoted = [(tags.get(PROMOTED_AT_TAG, ""), kind, name)
                for kind, name, _, tags in _champions(assistant, kinds, settings) if tags.get(REPLACED_TAG)]
    if not promoted:
        return None
    _, kind, name = max(promoted)
    return kind, name


def _restore(kind: Kind, name: str, version: int, tags: dict[str, str], fallback_reason: str = "") -> RollBack:
    """The rollback recorded on ``version``'s tags (the version a rollback restored)."""
    return RollBack(kind, name, int(tags.get("loopline.rollback.from", version)), version,
                    tags.get(ROLLBACK_REASON_TAG, fallback_reason), already=True)


def restored_by(assistant: AssistantConfig, kinds: tuple[str, ...], run_key: str,
                settings: LooplineSettings | None = None) -> RollBack | None:
    """The rollback run ``run_key`` made, if a champion of the assistant was restored by it."""
    for kind, name, version, tags in _champions(assistant, kinds, settings):
        if tags.get(RESTORED_BY_TAG) == run_key:
            return _restore(kind, name, version, tags)
    return None


def roll_back(kind: Kind, name: str, reason: str, run_key: str, settings: LooplineSettings | None = None,
              now: datetime | None = None) -> RollBack:
    """Move ``champion`` back to the version the current champion replaced; tag both with why.

    Idempotent per ``run_key`` (the Airflow run): a retry finds its own restore and moves nothing.

    Raises:
        NothingToRollBack: no champion, or it replaced nothing (it was the first one, or was rolled back to).
    """
    client = tracking.client(settings)
    now = now or datetime.now(UTC)
    current = alias_version(client, kind, name, CHAMPION)
    if current is None:
        raise NothingToRollBack(f"{kind} {name} has no @champion to roll back")
    tags = version_tags(client, kind, name, current)
    if tags.get(RESTORED_BY_TAG) == run_key:
        return _restore(kind, name, current, tags, reason)
    previous = tags.get(REPLACED_TAG)
    if not previous:
        raise NothingToRollBack(f"{kind} {name}@champion v{current} replaced no earlier version through the gate "
                                "(it is the first champion, or was restored already): nothing to roll back to; "
                                "fix the cause or move the alias by hand")
    target = int(previous)
    set_version_tags(client, kind, name, current, {DECISION_TAG: "rolled_back", ROLLBACK_REASON_TAG: reason,
                                                   ROLLBACK_AT_TAG: now.isoformat()})
    set_version_tags(client, kind, name, target, {RESTORED_BY_TAG: run_key, "loopline.rollback.from": str(current),
                                                  ROLLBACK_REASON_TAG: reason,
                                                  ROLLBACK_AT_TAG: now.isoformat()})
    set_alias(client, kind, name, CHAMPION, target)
    audit_event(client, kind, name, target, "rollback", "rolled_back", reason, now, f"rollback:{run_key}", current,
                {"rolled_back_from": current, "run_key": run_key}, settings)
    log.warning("Rolled %s %s@champion back from v%s to v%s: %s", kind, name, current, target, reason)
    return RollBack(kind, name, current, target, reason, already=False)
