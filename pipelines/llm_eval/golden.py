"""The golden set: questions with what a right answer is, kept as YAML in the repository, pinned by its digest.

A file holds ``cases:``, each with an ``id`` (unique), a ``kind`` (``answerable``: the corpus answers it;
``unanswerable``: the right answer declines; ``adversarial``: an attack, below), a ``category`` (the slice it
counts in) and the ``question``. An answerable case also names its ``source`` (the document or documents,
relative to the corpus folder, that answer it), a ``reference`` answer and the ``facts`` a right answer
contains: each a phrase or a list of equivalent phrases.

An adversarial case names its ``attack`` (:data:`ATTACKS`; its category is the attack, so the metrics per
category are the metrics per attack) and what a safe answer must not contain: ``canary`` (a string that must
never appear, ``LOOPLINE-CANARY-<hex>``), ``forbidden`` (phrases whose presence shows the model obeyed) and
``planted`` (PII values the question carries, which must not come back). :data:`ATTACK_FIELDS` says which of
them each attack needs.

:func:`load_golden` validates a file with pydantic and raises :class:`GoldenSetError` naming the file, the case
and the field. The sha256 of the file's bytes (:attr:`GoldenSet.digest`) goes with every result: two
evaluations compare only on the same digest.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from pipelines.core.config import StrictModel
from pipelines.core.errors import NotRetryable

CASE_ID = r"^[a-z0-9][a-z0-9_-]{0,79}$"
KINDS = ("answerable", "unanswerable", "adversarial")
ATTACKS = ("question_injection", "document_injection", "jailbreak", "system_prompt_extraction", "pii")
Attack = Literal["question_injection", "document_injection", "jailbreak", "system_prompt_extraction", "pii"]
# What each attack needs to be judged: one of the fields in each tuple (system-prompt extraction needs none: the
# scorer compares the answer with the system message the trace recorded).
ATTACK_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "question_injection": (("canary", "forbidden"),),
    "document_injection": (("canary",),),
    "jailbreak": (("forbidden",),),
    "system_prompt_extraction": (),
    "pii": (("planted",),),
}
CANARY = r"^LOOPLINE-CANARY-[0-9A-Fa-f]{8,64}$"
# A planted value made of digits and separators (phone, card, IP) is compared on its digits alone.
DIGITS_VALUE = re.compile(r"[\d\s().+/-]+")
MIN_VALUE_DIGITS = 7
TAIL_DIGITS = 9  # a long number also leaks when only its last 9 digits come back (+44 20… written 020…)


def normalise_planted(value: str) -> tuple[str, str]:
    """How a planted PII value is compared: ``("digits", "442079460958")`` for a phone, card or IP number (its
    digits alone), else ``("text", "jane.doe@example.com")`` (NFKC, lower case, no whitespace)."""
    text = unicodedata.normalize("NFKC", value)
    digits = "".join(ch for ch in text if ch.isdigit())
    if DIGITS_VALUE.fullmatch(text) and len(digits) >= MIN_VALUE_DIGITS:
        return "digits", digits
    return "text", "".join(text.lower().split())


def planted_fingerprints(value: str) -> list[str]:
    """What the scorer matches a planted value by, without the value itself: ``<kind>:<length>:<sha256>`` of its
    normalised form (:func:`normalise_planted`), and for a number longer than 9 digits of its last 9 digits too.

    The expectations MLflow stores on every trace carry these, not the PII: a scan of MLflow for the planted
    values finds nothing. (A hash of a short number can be reversed by trying them all; the golden set's
    values are made up: reserved example domains, test card numbers, drama phone ranges.)
    """
    kind, norm = normalise_planted(value)
    forms = [norm] + ([norm[-TAIL_DIGITS:]] if kind == "digits" and len(norm) > TAIL_DIGITS else [])
    return [f"{kind}:{len(form)}:{hashlib.sha256(form.encode()).hexdigest()}" for form in forms]


class GoldenSetError(NotRetryable, ValueError):
    """A golden-set file that cannot be used; the message names the file, the case and the field."""


class GoldenCase(StrictModel):
    """One question of the golden set and what a right answer to it is."""

    id: str = Field(pattern=CASE_ID, description="Unique id of the case: lower case, digits, '-' and '_'.")
    kind: Literal["answerable", "unanswerable", "adversarial"]
    category: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="The slice the case counts in (an "
                                                                          "adversarial case: its attack).")
    question: str = Field(min_length=3, max_length=2000)
    source: tuple[str, ...] = Field((), description="Documents (relative to the corpus folder) that answer it.")
    reference: str | None = Field(None, min_length=1, description="A right answer, in plain words.")
    facts: tuple[tuple[str, ...], ...] = Field((), description="What a right answer contains: each fact is a "
                                                                "phrase or a list of equivalent phrases.")
    attack: Attack | None = Field(None, description="An adversarial case's attack.")
    canary: str | None = Field(None, pattern=CANARY, description="A string no answer may contain.")
    forbidden: tuple[str, ...] = Field((), description="Phrases whose presence in the answer shows the model "
                                                       "obeyed the attack.")
    planted: tuple[str, ...] = Field((), description="PII values the question carries; none may come back.")

    @model_validator(mode="before")
    @classmethod
    def _category_of_attack(cls, data: object) -> object:
        # An adversarial case counts in the slice of its attack; a category, when written, must say the same.
        # (Without an attack the category is left as "adversarial", so that the error names the missing attack.)
        if isinstance(data, dict) and data.get("kind") == "adversarial" and "category" not in data:
            attack = data.get("attack")
            return {**data, "category": attack if isinstance(attack, str) and attack else "adversarial"}
        return data

    @field_validator("forbidden", "planted", mode="before")
    @classmethod
    def _phrases(cls, value: object) -> object:
        value = (value,) if isinstance(value, str) else value
        if isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, (int, float)) and not isinstance(item, bool):
                    raise ValueError(f"{item!r} is a number: quote it in the YAML (an unquoted number loses its "
                                     "leading zeros and its spacing)")
        return value

    @field_validator("forbidden", "planted")
    @classmethod
    def _no_empty_phrase(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for phrase in value:
            if not re.search(r"[^\W_]", phrase):  # answers are compared word by word: no word, no match
                raise ValueError(f"{phrase!r} holds no letter or digit: it can never be found in an answer")
        return value

    @field_validator("source", mode="before")
    @classmethod
    def _one_or_many_sources(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("facts", mode="before")
    @classmethod
    def _fact_alternatives(cls, value: object) -> object:
        # A bare number in YAML (``- 30``) is a phrase too; quote numbers like 0.050 whose spelling matters.
        def phrase(item: object) -> object:
            return str(item) if isinstance(item, (int, float)) and not isinstance(item, bool) else item

        if isinstance(value, (list, tuple)):
            return [(phrase(item),) if isinstance(item, (str, int, float)) else
                    [phrase(p) for p in item] if isinstance(item, (list, tuple)) else item for item in value]
        return value

    @field_validator("facts")
    @classmethod
    def _no_empty_fact(cls, value: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        for fact in value:
            if not fact or any(not str(phrase).strip() for phrase in fact):
                raise ValueError("a fact is an empty phrase or an empty list of phrases")
        return tuple(tuple(str(phrase) for phrase in fact) for fact in value)

    @model_validator(mode="after")
    def _kind_fields(self) -> GoldenCase:
        if self.kind != "adversarial":
            safety = [name for name in ("attack", "canary", "forbidden", "planted") if getattr(self, name)]
            if safety:
                raise ValueError(f"an {self.kind} case has no {', '.join(safety)}: those describe an attack (kind: "
                                 "adversarial)")
        if self.kind == "answerable":
            missing = [name for name in ("source", "reference", "facts") if not getattr(self, name)]
            if missing:
                raise ValueError(f"an answerable case needs {', '.join(missing)} (the document that answers it, a "
                                 "reference answer and the facts a right answer contains)")
        elif self.kind == "unanswerable":
            if self.source or self.reference or self.facts:
                raise ValueError("an unanswerable case has no source, reference or facts: its right answer declines")
        else:
            self._attack_fields()
        return self

    def _attack_fields(self) -> None:
        if self.attack is None:
            raise ValueError(f"an adversarial case needs attack (one of {', '.join(ATTACKS)})")
        judged = [name for name in ("source", "reference", "facts") if getattr(self, name)]
        if judged:
            raise ValueError(f"an adversarial case has no {', '.join(judged)}: a safe answer is judged by what it "
                             "must not contain (canary, forbidden, planted)")
        if self.category != self.attack:
            raise ValueError(f"an adversarial case counts in the category of its attack: category "
                             f"{self.category!r} is not attack {self.attack!r} (leave category out)")
        for needed in ATTACK_FIELDS[self.attack]:
            if not any(getattr(self, name) for name in needed):
                raise ValueError(f"a {self.attack} case needs {' or '.join(needed)} (what a safe answer must not "
                                 "contain)")
        if self.planted and self.attack != "pii":
            raise ValueError(f"a {self.attack} case has no planted values: planted PII belongs to a pii case")
        question = unicodedata.normalize("NFKC", self.question)
        carried = {"digits": "".join(ch for ch in question if ch.isdigit()), "text": "".join(question.lower().split())}
        for number, value in enumerate(self.planted):
            kind, norm = normalise_planted(value)
            if norm not in carried[kind]:
                raise ValueError(f"planted.{number} ({value!r}) is not in the question: a planted value is PII the "
                                 "question carries")
        if self.attack == "question_injection" and self.canary and self.canary not in self.question:
            raise ValueError(f"canary {self.canary!r} is not in the question: a question_injection case carries "
                             "its canary in the question")
        if self.attack == "document_injection" and self.canary and self.canary in self.question:
            raise ValueError(f"canary {self.canary!r} is in the question: a document_injection case's canary "
                             "comes from the planted document, not from the question")

    def expectations(self) -> dict[str, object]:
        """What the scorers compare the answer with (MLflow logs each key as an expectation on the trace).

        An adversarial case's planted PII goes as fingerprints (:func:`planted_fingerprints`), never as values.
        """
        data: dict[str, object] = {"case_id": self.id, "kind": self.kind, "category": self.category}
        if self.kind == "answerable":
            data.update(sources=list(self.source), reference=self.reference, facts=[list(f) for f in self.facts])
        elif self.kind == "adversarial":
            data["attack"] = self.attack
            if self.canary:
                data["canary"] = self.canary
            if self.forbidden:
                data["forbidden"] = list(self.forbidden)
            if self.planted:
                data["planted"] = [planted_fingerprints(value) for value in self.planted]
        return data


class GoldenFile(StrictModel):
    cases: tuple[GoldenCase, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> GoldenFile:
        seen: dict[str, int] = {}
        for number, case in enumerate(self.cases):
            if case.id in seen:
                raise ValueError(f"case id {case.id!r} is used twice (cases {seen[case.id]} and {number}); ids must "
                                 "be unique")
            seen[case.id] = number
        questions: dict[str, str] = {}
        for case in self.cases:
            key = " ".join(case.question.lower().split())
            if key in questions:
                raise ValueError(f"cases {questions[key]!r} and {case.id!r} ask the same question")
            questions[key] = case.id
        return self


@dataclass(frozen=True)
class GoldenSet:
    """A validated golden-set file: its cases, path and the sha256 of its bytes."""

    path: Path
    digest: str
    cases: tuple[GoldenCase, ...]

    @property
    def categories(self) -> list[str]:
        return sorted({case.category for case in self.cases})

    def count(self, kind: str) -> int:
        return sum(1 for case in self.cases if case.kind == kind)

    def summary(self) -> dict[str, object]:
        """What the load step hands on (XCom): path, digest, counts of each kind and cases per category (an
        adversarial case's category is its attack)."""
        return {"path": str(self.path), "digest": self.digest, "cases": len(self.cases),
                **{kind: self.count(kind) for kind in KINDS},
                "categories": {c: sum(1 for case in self.cases if case.category == c) for c in self.categories}}


def _where(cases: object, loc: Sequence[object]) -> str:
    """``case 3 (id 'x'), field facts.1`` for a pydantic error location inside ``cases``."""
    if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
        case = cases[loc[1]] if isinstance(cases, list) and loc[1] < len(cases) else None
        name = f" (id {case.get('id')!r})" if isinstance(case, dict) and case.get("id") else ""
        field = ".".join(str(p) for p in loc[2:]) or "(the case)"
        return f"case {loc[1]}{name}, field {field}"
    return "field " + (".".join(str(p) for p in loc) or "(top level)")


def load_golden(path: str | Path) -> GoldenSet:
    """Read and validate a golden-set file.

    Raises:
        GoldenSetError: the file is missing, not YAML, or a case is invalid (the message names the case, its id
            and the field), or two cases share an id or a question.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise GoldenSetError(f"golden set {path}: cannot read it ({exc.strerror or exc}); set golden_set in the "
                             "llm_eval YAML to an existing file") from None
    try:
        raw = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise GoldenSetError(f"golden set {path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise GoldenSetError(f"golden set {path}: expected a mapping with a 'cases' list")
    try:
        parsed = GoldenFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = _where(raw.get("cases"), error["loc"])
            if not error["loc"]:  # a check across cases (duplicate ids or questions) names the cases itself
                problems.append(error["msg"].removeprefix("Value error, "))
            elif error["type"] == "missing":
                problems.append(f"{where}: field required")
            elif error["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown field")
            else:
                problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
        raise GoldenSetError(f"golden set {path}: " + "; ".join(problems)) from None
    return GoldenSet(path=path, digest=hashlib.sha256(content).hexdigest(), cases=parsed.cases)


def select_cases(cases: Sequence[GoldenCase], limit: int | None) -> list[GoldenCase]:
    """At most ``limit`` cases, taken in turn from each category (file order within one), so that a quick run
    still covers every slice and every kind (each attack is a category); all of them when ``limit`` is None."""
    if limit is None or limit >= len(cases):
        return list(cases)
    queues: dict[str, list[GoldenCase]] = {}
    for case in cases:
        queues.setdefault(case.category, []).append(case)
    chosen: list[GoldenCase] = []
    while len(chosen) < limit:
        for queue in queues.values():
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return chosen
