"""Retrieval evaluation: a frozen question set, hit@k and MRR@k per search mode, and the gate.

The question set is a YAML file kept in the repository::

    questions:
      - question: How does a bad config file show up in the UI?
        source: architecture.md        # the document that answers it, relative to the corpus folder

For each question the version under test returns its ``k`` best chunks. *hit@k* is the share of questions
whose expected document is among those chunks' documents; *MRR@k* the mean of 1/rank of the first chunk
from the expected document (0 when none is in the top k). The gate lets a candidate go live only when, in
every evaluated mode, neither metric drops by more than its bound against the live version, and hit@k
reaches ``min_hit_rate``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from pipelines.core.errors import NotRetryable

if TYPE_CHECKING:
    from pipelines.rag.config import EvaluationConfig
    from pipelines.rag.stores.base import VectorStore

log = logging.getLogger(__name__)
EPSILON = 1e-9


class QuestionSetError(NotRetryable, ValueError):
    """The question set file cannot be used; the message names the file and the entry."""


class GateBlocked(NotRetryable, RuntimeError):
    """The candidate regresses beyond the bounds: the alias stays where it is."""


@dataclass(frozen=True)
class Question:
    question: str
    source: str


@dataclass(frozen=True)
class QuestionSet:
    path: Path
    questions: list[Question]
    digest: str


def load_questions(path: Path) -> QuestionSet:
    """Read a question set YAML file.

    Raises:
        QuestionSetError: the file is missing, not YAML, or an entry lacks ``question`` or ``source``.
    """
    import yaml

    if not path.exists():
        raise QuestionSetError(f"question set {path} does not exist: set evaluation.questions to a YAML "
                               "file of questions and their source documents")
    raw_text = path.read_text()
    try:
        raw = yaml.safe_load(raw_text)
    except yaml.YAMLError as exc:
        raise QuestionSetError(f"question set {path} is not valid YAML: {exc}") from None
    entries = raw.get("questions") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise QuestionSetError(f"question set {path} has no 'questions' list")
    questions = []
    for i, entry in enumerate(entries, 1):
        question = str(entry.get("question") or "").strip() if isinstance(entry, dict) else ""
        if not question or not entry.get("source"):
            raise QuestionSetError(f"question set {path}: entry {i} needs a non-empty 'question' and a "
                                   f"'source' (got {entry!r})")
        questions.append(Question(question, str(entry["source"]).strip().removeprefix("./")))
    return QuestionSet(path, questions, hashlib.sha256(raw_text.encode()).hexdigest()[:16])


def score_rankings(rankings: Sequence[Sequence[str]], expected: Sequence[str], k: int) -> dict[str, float]:
    """hit@k and MRR@k of ranked document ids (one list per question, best first) against the expected ids."""
    if not expected:
        return {"hit_rate": 0.0, "mrr": 0.0}
    hits, reciprocal = 0, 0.0
    for ranked, want in zip(rankings, expected):
        top = list(ranked)[:k]
        if want in top:
            hits += 1
            reciprocal += 1.0 / (top.index(want) + 1)
    return {"hit_rate": hits / len(expected), "mrr": reciprocal / len(expected)}


def evaluate_version(store: VectorStore, version: str, embed_queries: Callable[[list[str]], Any],
                     question_set: QuestionSet, k: int, modes: Sequence[str]) -> dict[str, dict[str, float]]:
    """hit@k and MRR@k of one version, per search mode.

    Args:
        embed_queries: Texts → vectors, with the model that built ``version``.

    Returns:
        ``{mode: {"hit_rate": …, "mrr": …}}``.
    """
    texts = [q.question for q in question_set.questions]
    vectors = embed_queries(texts)
    expected = [q.source for q in question_set.questions]
    result = {}
    for mode in modes:
        rankings = [[hit.doc_id for hit in store.search(text, vector, k, mode=mode, version=version)]
                    for text, vector in zip(texts, vectors)]
        result[mode] = score_rankings(rankings, expected, k)
        log.info("%s, %s search: hit@%d %.3f, MRR@%d %.3f over %d questions", version, mode, k,
                 result[mode]["hit_rate"], k, result[mode]["mrr"], len(texts))
    return result


@dataclass
class GateVerdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "; ".join(self.reasons)


def gate(candidate: dict[str, dict[str, float]], live: dict[str, dict[str, float]] | None,
         config: EvaluationConfig) -> GateVerdict:
    """Whether the candidate may replace the live version (``live`` None: there is none yet)."""
    verdict = GateVerdict(passed=True)
    k = config.k
    for mode in config.modes:
        cand = candidate[mode]
        if cand["hit_rate"] + EPSILON < config.min_hit_rate:
            verdict.passed = False
            verdict.reasons.append(f"{mode} hit@{k} {cand['hit_rate']:.3f} is below evaluation.min_hit_rate "
                                   f"{config.min_hit_rate:.3f}")
        if live is None or mode not in live:
            continue
        for metric, bound, label in (("hit_rate", config.max_hit_rate_drop, f"hit@{k}"),
                                     ("mrr", config.max_mrr_drop, f"MRR@{k}")):
            drop = live[mode][metric] - cand[metric]
            if drop > bound + EPSILON:
                verdict.passed = False
                verdict.reasons.append(f"{mode} {label} drops {live[mode][metric]:.3f} → {cand[metric]:.3f} "
                                       f"(-{drop:.3f}, allowed -{bound:.3f})")
    if verdict.passed:
        verdict.reasons.append("no regression beyond the bounds" if live
                               else "first version: no live version to compare with")
    return verdict


def flat_metrics(metrics: dict[str, dict[str, float]] | None, k: int, prefix: str = "") -> dict[str, float]:
    """``{mode: {hit_rate, mrr}}`` as flat MLflow metric names: ``<prefix>hit_at_<k>_<mode>``."""
    out = {}
    for mode, values in (metrics or {}).items():
        out[f"{prefix}hit_at_{k}_{mode}"] = values["hit_rate"]
        out[f"{prefix}mrr_at_{k}_{mode}"] = values["mrr"]
    return out
