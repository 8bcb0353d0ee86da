"""The golden set: questions with what a right answer is, kept as YAML in the repository, pinned by its digest.

A file holds ``cases:``, each with an ``id`` (unique), a ``kind`` (``answerable``: the corpus answers it;
``unanswerable``: the right answer declines), a ``category`` (the slice it counts in) and the ``question``. An
answerable case also names its ``source`` (the document or documents, relative to the corpus folder, that
answer it), a ``reference`` answer and the ``facts`` a right answer contains: each a phrase or a list of
equivalent phrases. :func:`load_golden` validates a file with pydantic and raises :class:`GoldenSetError`
naming the file, the case and the field. The sha256 of the file's bytes (:attr:`GoldenSet.digest`) goes with
every result: two evaluations compare only on the same digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from pipelines.core.config import StrictModel
from pipelines.core.errors import NotRetryable

CASE_ID = r"^[a-z0-9][a-z0-9_-]{0,79}$"


class GoldenSetError(NotRetryable, ValueError):
    """A golden-set file that cannot be used; the message names the file, the case and the field."""


class GoldenCase(StrictModel):
    """One question of the golden set and what a right answer to it is."""

    id: str = Field(pattern=CASE_ID, description="Unique id of the case: lower case, digits, '-' and '_'.")
    kind: Literal["answerable", "unanswerable"]
    category: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="The slice the case counts in.")
    question: str = Field(min_length=3, max_length=2000)
    source: tuple[str, ...] = Field((), description="Documents (relative to the corpus folder) that answer it.")
    reference: str | None = Field(None, min_length=1, description="A right answer, in plain words.")
    facts: tuple[tuple[str, ...], ...] = Field((), description="What a right answer contains: each fact is a "
                                                                "phrase or a list of equivalent phrases.")

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
        if self.kind == "answerable":
            missing = [name for name in ("source", "reference", "facts") if not getattr(self, name)]
            if missing:
                raise ValueError(f"an answerable case needs {', '.join(missing)} (the document that answers it, a "
                                 "reference answer and the facts a right answer contains)")
        elif self.source or self.reference or self.facts:
            raise ValueError("an unanswerable case has no source, reference or facts: its right answer declines")
        return self

    def expectations(self) -> dict[str, object]:
        """What the scorers compare the answer with (MLflow logs each key as an expectation on the trace)."""
        data: dict[str, object] = {"case_id": self.id, "kind": self.kind, "category": self.category}
        if self.kind == "answerable":
            data.update(sources=list(self.source), reference=self.reference, facts=[list(f) for f in self.facts])
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
        """What the load step hands on (XCom): path, digest, counts and categories."""
        return {"path": str(self.path), "digest": self.digest, "cases": len(self.cases),
                "answerable": self.count("answerable"), "unanswerable": self.count("unanswerable"),
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
    still covers every slice and both kinds; all of them when ``limit`` is None."""
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
