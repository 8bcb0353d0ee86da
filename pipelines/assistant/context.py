"""From search hits to the prompt's context: dedupe, order, number, fit a token budget; and the refusal gate.

:func:`assemble_context` turns the live index's hits into numbered passages (``[1] tea.md`` and the chunk's
text, which starts with its heading path) within ``max_context_tokens``; the numbers are what an answer
cites. :func:`refusal_reason` is the gate that declines a question *before* the model runs: SmolLM2-135M
does not reliably say "I don't know" when told to, so a question whose best chunk is not similar enough, or
whose content words the chunks do not contain, never reaches it. :func:`cited_sources` maps ``[n]`` markers
in an answer back to the passages. Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

REFUSAL = "I don't know based on the documentation."
CITATION = re.compile(r"\[(\d{1,3})\]")


class Hit(Protocol):
    """What a search hit has (``pipelines.rag.stores.base.SearchHit``)."""

    chunk_id: str
    doc_id: str
    heading: str
    text: str
    score: float


@dataclass(frozen=True)
class Passage:
    """A chunk as the prompt shows it: its number, where it is from, its text and its search score."""

    number: int
    chunk_id: str
    doc_id: str
    heading: str
    text: str
    score: float
    tokens: int

    @property
    def block(self) -> str:
        return passage_block(self.number, self.doc_id, self.text)

    def source(self) -> dict[str, Any]:
        """The passage as an answer's source: document and heading."""
        return {"doc_id": self.doc_id, "heading": self.heading}


@dataclass(frozen=True)
class Context:
    """The numbered passages the prompt carries, their text, tokens, and the hits left out (duplicates, budget)."""

    passages: tuple[Passage, ...]
    text: str
    tokens: int
    duplicates: int
    over_budget: int

    def summary(self) -> dict[str, Any]:
        return {"passages": [{k: v for k, v in asdict(p).items() if k != "text"} for p in self.passages],
                "tokens": self.tokens, "duplicates": self.duplicates, "over_budget": self.over_budget}


def passage_block(number: int, doc_id: str, text: str) -> str:
    return f"[{number}] {doc_id}\n{text.strip()}"


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def assemble_context(hits: Sequence[Hit], max_tokens: int, count_tokens: Callable[[str], int],
                     truncate: Callable[[str, int], str] | None = None) -> Context:
    """Numbered passages from ``hits`` within ``max_tokens``: chosen best score first, shown best *last*.

    A hit whose chunk id or text (whitespace and case aside) came already is a duplicate and left out; a
    passage that does not fit the tokens left is left out, and smaller ones after it may still fit. When
    even the best passage alone is too long, its start is kept (``truncate``), so a question with hits
    never gets an empty context.

    The chosen passages are shown in rising score order and numbered in that order, so the best one is
    right above the question: SmolLM2-135M answers from the passage nearest the question (measured on the
    toy corpus: best-first order answered 1 of 4 questions from the right passage with 2 passages, best-last
    4 of 4 with 2 and with 4).

    Args:
        hits: search hits, any order.
        max_tokens: tokens the context may take, passages and the blank lines between them.
        count_tokens: the generator's tokenizer count of a text.
        truncate: the longest start of a text within a number of tokens (None: too long is left out).
    """
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    unique = []
    for hit in sorted(hits, key=lambda h: (-h.score, h.chunk_id)):
        key = _normalised(hit.text)
        if hit.chunk_id in seen_ids or key in seen_texts:
            continue
        seen_ids.add(hit.chunk_id)
        seen_texts.add(key)
        unique.append(hit)
    separator = count_tokens("\n\n") if unique else 0
    # The numbers have at most as many digits as the hits' count: budget with the widest.
    widest = len(unique)
    chosen: list[tuple[Any, str, int]] = []
    used = over = 0
    for hit in unique:
        cost = count_tokens(passage_block(widest, hit.doc_id, hit.text)) + (separator if chosen else 0)
        text = hit.text
        if used + cost > max_tokens:
            if chosen or truncate is None:
                over += 1
                continue
            header = count_tokens(passage_block(widest, hit.doc_id, ""))
            text = truncate(hit.text, max(max_tokens - header - 1, 0)).strip()
            cost = count_tokens(passage_block(widest, hit.doc_id, text))
            if not text or cost > max_tokens:
                over += 1
                continue
        chosen.append((hit, text, cost))
        used += cost
    passages = tuple(Passage(number, hit.chunk_id, hit.doc_id, hit.heading, text, float(hit.score), cost)
                     for number, (hit, text, cost) in enumerate(reversed(chosen), 1))
    return Context(passages, "\n\n".join(p.block for p in passages), used, len(hits) - len(unique), over)


def refusal_reason(similarity: float | None, word_overlap: float, context: Context, *, min_similarity: float,
                   min_overlap: float) -> str | None:
    """Why the question is declined without generating, or None when the context may answer it.

    Args:
        similarity: the best chunk's cosine similarity to the question (None: no hit at all).
        word_overlap: the share of the question's content words found in the context.
    """
    if not context.passages or similarity is None:
        return "the index returned nothing for this question"
    if similarity < min_similarity:
        return f"the best chunk's similarity {similarity:.2f} is below retrieval.min_similarity {min_similarity:.2f}"
    if word_overlap < min_overlap:
        return (f"only {word_overlap:.0%} of the question's content words are in the retrieved chunks "
                f"(retrieval.min_overlap {min_overlap:.0%})")
    return None


# What the model sometimes writes after its answer: a made-up next passage ("[5] tea.md"), or a next turn.
RUN_ON = re.compile(r"^(?:\[\d{1,3}\]\s+\S+\s*|(?:Question|Context):.*)$", re.M)


def clean_answer(text: str) -> str:
    """The model's answer without what it sometimes adds after it: an invented passage or a next question."""
    run_on = RUN_ON.search(text)
    if run_on:
        text = text[: run_on.start()]
    return text.strip()


def cited_sources(answer: str, context: Context) -> tuple[list[Passage], list[int]]:
    """The passages an answer cites with ``[n]`` (in citation order), or all passages when it cites none.

    All passages, best first, when it cites none: they are what the answer was written from.

    Returns:
        (the source passages, the cited numbers that name no passage).
    """
    by_number = {p.number: p for p in context.passages}
    cited: list[Passage] = []
    unknown: list[int] = []
    for match in CITATION.finditer(answer):
        number = int(match.group(1))
        passage = by_number.get(number)
        if passage is None:
            unknown.append(number)
        elif passage not in cited:
            cited.append(passage)
    return (cited or sorted(context.passages, key=lambda p: -p.number)), unknown


def unique_sources(passages: Sequence[Passage]) -> list[dict[str, Any]]:
    """Document and heading of each passage, each pair once, in order."""
    out: list[dict[str, Any]] = []
    for passage in passages:
        source = passage.source()
        if source not in out:
            out.append(source)
    return out


def is_refusal(text: str) -> bool:
    """Whether the model itself declined (its answer starts with "I don't know")."""
    return _normalised(text).replace("’", "'").startswith(("i don't know", "i do not know"))
