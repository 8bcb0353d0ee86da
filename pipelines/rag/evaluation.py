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
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import NotRetryable
from pipelines.core.tracking import Decision

if TYPE_CHECKING:
    from pipelines.rag.config import EvaluationConfig
    from pipelines.rag.stores.base import VectorStore

log = logging.getLogger(__name__)
EPSILON = 1e-9

ModeMetrics = dict[str, dict[str, float]]
"""hit@k and MRR@k per search mode: ``{mode: {"hit_rate": …, "mrr": …}}``."""


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
    for ranked, want in zip(rankings, expected, strict=False):
        top = list(ranked)[:k]
        if want in top:
            hits += 1
            reciprocal += 1.0 / (top.index(want) + 1)
    return {"hit_rate": hits / len(expected), "mrr": reciprocal / len(expected)}


def evaluate_version(store: VectorStore, version: str, embed_queries: Callable[[list[str]], Any],
                     question_set: QuestionSet, k: int, modes: Sequence[str]) -> ModeMetrics:
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
        rankings = [[hit.doc_id for hit in store.retrieve(text, vector, k, mode=mode, version=version)]
                    for text, vector in zip(texts, vectors, strict=True)]
        result[mode] = score_rankings(rankings, expected, k)
        log.info("%s, %s search: hit@%d %.3f, MRR@%d %.3f over %d questions", version, mode, k,
                 result[mode]["hit_rate"], k, result[mode]["mrr"], len(texts))
    return result


def gate(candidate: ModeMetrics, live: ModeMetrics | None, config: EvaluationConfig) -> Decision:
    """Whether the candidate may replace the live version (``live`` None: there is none yet).

    The reason lists every bound the candidate misses, ``; ``-separated, or says why it passes.
    """
    k = config.k
    misses: list[str] = []
    for mode in config.modes:
        cand = candidate[mode]
        if cand["hit_rate"] + EPSILON < config.min_hit_rate:
            misses.append(f"{mode} hit@{k} {cand['hit_rate']:.3f} is below evaluation.min_hit_rate "
                          f"{config.min_hit_rate:.3f}")
        if live is None or mode not in live:
            continue
        for metric, bound, label in (("hit_rate", config.max_hit_rate_drop, f"hit@{k}"),
                                     ("mrr", config.max_mrr_drop, f"MRR@{k}")):
            drop = live[mode][metric] - cand[metric]
            if drop > bound + EPSILON:
                misses.append(f"{mode} {label} drops {live[mode][metric]:.3f} → {cand[metric]:.3f} "
                              f"(-{drop:.3f}, allowed -{bound:.3f})")
    if misses:
        return Decision(False, "; ".join(misses))
    first = "first version: no live version to compare with"
    return Decision(True, "no regression beyond the bounds" if live else first)


def flat_metrics(metrics: ModeMetrics | None, k: int, prefix: str = "") -> dict[str, float]:
    """``{mode: {hit_rate, mrr}}`` as flat MLflow metric names: ``<prefix>hit_at_<k>_<mode>``."""
    out = {}
    for mode, values in (metrics or {}).items():
        out[f"{prefix}hit_at_{k}_{mode}"] = values["hit_rate"]
        out[f"{prefix}mrr_at_{k}_{mode}"] = values["mrr"]
    return out


def evaluation_record(metrics: ModeMetrics, corpus_digest: str, question_set: QuestionSet, k: int) -> dict[str, Any]:
    """What the version catalog keeps as a version's ``evaluation``: its metrics and what they were measured on."""
    return {"metrics": metrics, "corpus_digest": corpus_digest, "question_set": question_set.digest, "k": k}


def stored_evaluation(record: dict[str, Any] | None, question_set_digest: str, k: int, *,
                      modes: Sequence[str] | None = None, corpus_digest: str | None = None) -> ModeMetrics | None:
    """A catalogued version's recorded metrics, when they are comparable with a measurement made now.

    The record's ``evaluation`` (see :func:`evaluation_record`) counts when it was computed on the same
    question set and ``k``, covers every mode of ``modes`` and, if ``corpus_digest`` is given, the same
    corpus. Used by the ``rag_index`` steps (no re-evaluation when nothing changed) and by the retrieval
    drift check (the baseline hit rate).

    Args:
        record: the version's catalog record (None or without an evaluation: nothing recorded).
        modes: the modes wanted, in this order; None: every mode recorded.

    Returns:
        ``{mode: {"hit_rate": …, "mrr": …}}``, or None when nothing comparable is recorded.
    """
    evaluation = (record or {}).get("evaluation") or {}
    if evaluation.get("question_set") != question_set_digest or evaluation.get("k") != k:
        return None
    if corpus_digest is not None and evaluation.get("corpus_digest") != corpus_digest:
        return None
    recorded = evaluation.get("metrics") or {}
    if modes is None:
        return dict(recorded)
    if not set(modes) <= set(recorded):
        return None
    return {mode: recorded[mode] for mode in modes}


_WORD = re.compile(r"[a-z0-9]+")


def normalised_words(text: str) -> list[str]:
    """Lower-case runs of letters and digits: what two texts must share to count as a copy."""
    return _WORD.findall(text.lower())


def copied_runs(question: str, corpus_text: str, n: int = 8) -> list[str]:
    """The runs of ``n`` consecutive words of ``question`` that also occur in ``corpus_text``.

    A paraphrased question set must not quote its corpus: a question with a non-empty result copies a
    sentence (punctuation and case are ignored).

    Args:
        corpus_text: The corpus as one string; pass it through :func:`normalised_words` and join with spaces
            once for many questions (``" ".join(normalised_words(text))``), it is used as is.
    """
    words = normalised_words(question)
    haystack = f" {corpus_text} "
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)
            if f" {' '.join(words[i:i + n])} " in haystack]
