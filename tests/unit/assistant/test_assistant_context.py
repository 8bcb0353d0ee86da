"""From hits to numbered passages within a token budget; the refusal gate; citations and clean answers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pipelines.assistant.context import (
    REFUSAL,
    assemble_context,
    cited_sources,
    clean_answer,
    is_refusal,
    refusal_reason,
    unique_sources,
)

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    doc_id: str
    heading: str
    text: str
    score: float


def words(text: str) -> int:
    """A stand-in tokenizer: one token per word."""
    return len(text.split())


def cut(text: str, tokens: int) -> str:
    return " ".join(text.split()[:tokens])


HITS = [
    Hit("c2", "tea.md", "Tea > Growing", "Tea bushes grow on misty hillsides.", 0.5),
    Hit("c1", "tea.md", "Tea > Brewing", "Green tea brews at 80 degrees.", 0.9),
    Hit("c3", "bikes.md", "Bicycles > Tyres", "Road tyres run at six to eight bar.", 0.3),
]


def test_passages_are_chosen_by_score_and_shown_best_last():
    context = assemble_context(HITS, 600, words)
    assert [(p.number, p.chunk_id) for p in context.passages] == [(1, "c3"), (2, "c2"), (3, "c1")]
    assert context.text.startswith("[1] bikes.md\nRoad tyres")
    assert context.text.endswith("[3] tea.md\nGreen tea brews at 80 degrees.")
    assert context.tokens == sum(p.tokens for p in context.passages) + 2 * words("\n\n")


def test_duplicates_by_id_or_text_are_left_out():
    hits = [*HITS, Hit("c1", "tea.md", "Tea > Brewing", "Green tea brews at 80 degrees.", 0.9),
            Hit("c9", "copy.md", "", "  green TEA brews   at 80 degrees. ", 0.4)]
    context = assemble_context(hits, 600, words)
    assert [p.chunk_id for p in context.passages] == ["c3", "c2", "c1"]
    assert context.duplicates == 2


def test_lower_scored_passages_are_dropped_first_to_fit_the_budget():
    best, second = (f"[1] tea.md\n{hit.text}" for hit in (HITS[1], HITS[0]))
    budget = words(best) + words(second)
    context = assemble_context(HITS, budget, words)
    assert [p.chunk_id for p in context.passages] == ["c2", "c1"]
    assert context.over_budget == 1 and context.tokens <= budget


def test_a_smaller_passage_after_one_that_did_not_fit_still_gets_in():
    long = Hit("c5", "long.md", "", "word " * 50, 0.8)
    context = assemble_context([HITS[1], long, HITS[0]], 20, words)
    assert [p.chunk_id for p in context.passages] == ["c2", "c1"]
    assert context.over_budget == 1


def test_the_best_passage_alone_too_long_is_cut_not_dropped():
    long = Hit("c5", "long.md", "", " ".join(f"w{i}" for i in range(100)), 0.95)
    context = assemble_context([long], 12, words, cut)
    assert len(context.passages) == 1 and context.tokens <= 12
    assert context.passages[0].text.startswith("w0 w1")
    assert assemble_context([long], 12, words).passages == ()


def test_no_hits_make_an_empty_context():
    context = assemble_context([], 600, words)
    assert context.passages == () and context.text == "" and context.tokens == 0


@pytest.mark.parametrize(("similarity", "overlap", "reason"), [
    (0.8, 0.75, None),
    (0.3, 0.5, None),
    (0.29, 1.0, "the best chunk's similarity 0.29 is below retrieval.min_similarity 0.30"),
    (0.9, 0.4, "only 40% of the question's content words are in the retrieved chunks (retrieval.min_overlap 50%)"),
    (None, 1.0, "the index returned nothing for this question"),
])
def test_the_refusal_gate(similarity, overlap, reason):
    context = assemble_context(HITS, 600, words)
    assert refusal_reason(similarity, overlap, context, min_similarity=0.3, min_overlap=0.5) == reason


def test_an_empty_context_is_always_declined():
    empty = assemble_context([], 600, words)
    assert refusal_reason(0.9, 1.0, empty, min_similarity=0.3, min_overlap=0.5) is not None


def test_cited_markers_map_to_their_passages():
    context = assemble_context(HITS, 600, words)
    sources, unknown = cited_sources("Brew it at 80 degrees [3], on hills [2][3]; see [7].", context)
    assert [p.chunk_id for p in sources] == ["c1", "c2"] and unknown == [7]
    assert unique_sources(sources) == [{"doc_id": "tea.md", "heading": "Tea > Brewing"},
                                       {"doc_id": "tea.md", "heading": "Tea > Growing"}]


def test_an_answer_without_markers_keeps_every_passage_best_first():
    context = assemble_context(HITS, 600, words)
    sources, unknown = cited_sources("At 80 degrees.", context)
    assert [p.chunk_id for p in sources] == ["c1", "c2", "c3"] and unknown == []


def test_clean_answer_drops_an_invented_next_passage():
    text = "Green tea brews at 80 degrees.\n\n[5] kites.md\nKites > Flying\n\nA kite needs wind"
    assert clean_answer(text) == "Green tea brews at 80 degrees."
    assert clean_answer("  Replace the toner [2].  ") == "Replace the toner [2]."
    assert clean_answer("Make clean deletes the data home.\n\nQuestion: What does make clean delete?") == \
        "Make clean deletes the data home."
    assert clean_answer("See [1] for the steps.") == "See [1] for the steps."


def test_refusals_are_recognised():
    assert is_refusal(REFUSAL) and is_refusal("I don’t know.") and is_refusal("i do not know that")
    assert not is_refusal("Green tea brews at 80 degrees.")
