"""The paraphrased question sets of the docstring corpus (the tuning set and the held-out set): big enough,
all four packages, not copied, and not sharing a source document.

The corpus is exported from the installed packages (read with ``ast``, a few seconds) once per module.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pipelines.rag.docstring_corpus import DEFAULT_PACKAGES, export
from pipelines.rag.evaluation import copied_runs, load_questions, normalised_words

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
PARAPHRASED = REPO / "dags" / "evaluation" / "docstrings_paraphrased.yaml"
HELD_OUT = REPO / "dags" / "evaluation" / "docstrings_paraphrased_heldout.yaml"
PARAPHRASED_SETS = pytest.mark.parametrize("question_set", [PARAPHRASED, HELD_OUT], ids=["tuning", "held_out"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("docstrings") / "corpus"
    export(list(DEFAULT_PACKAGES), out)
    text = "\n".join(p.read_text() for p in sorted(out.rglob("*.md")))
    return out, " ".join(normalised_words(text))


def test_default_packages_include_peft():
    assert set(DEFAULT_PACKAGES) == {"airflow", "feast", "mlflow", "peft"}


@PARAPHRASED_SETS
def test_paraphrased_set_has_40_questions_over_the_four_packages(question_set):
    questions = load_questions(question_set).questions
    per_package = Counter(q.source.split("/", 1)[0] for q in questions)
    assert len(questions) >= 40
    assert set(per_package) == set(DEFAULT_PACKAGES)
    assert min(per_package.values()) >= 10, per_package
    assert len({q.question for q in questions}) == len(questions), "a question appears twice"


@PARAPHRASED_SETS
def test_every_expected_source_is_a_document_of_the_corpus(corpus, question_set):
    root, _ = corpus
    missing = [q.source for q in load_questions(question_set).questions if not (root / q.source).is_file()]
    assert not missing, f"expected sources not in the exported corpus: {missing}"


@PARAPHRASED_SETS
def test_no_question_copies_8_consecutive_words_of_the_corpus(corpus, question_set):
    _, words = corpus
    copied = {q.question: runs for q in load_questions(question_set).questions
              if (runs := copied_runs(q.question, words, 8))}
    assert not copied, f"questions quoting the corpus: {copied}"


def test_held_out_set_shares_no_source_or_question_with_the_tuning_set():
    """The held-out set checks that choices made on the tuning set generalise: other documents, other tasks."""
    tuning, held_out = load_questions(PARAPHRASED).questions, load_questions(HELD_OUT).questions
    assert not {q.source for q in tuning} & {q.source for q in held_out}
    assert not {q.question for q in tuning} & {q.question for q in held_out}


def test_copied_runs_finds_a_quoted_sentence():
    corpus_words = " ".join(normalised_words("Set a registered model alias pointing to a model version. Args: name"))
    assert copied_runs("Please, set a registered model alias pointing to a model version!", corpus_words)
    assert copied_runs("How do I give a model version a nickname?", corpus_words) == []
    assert copied_runs("set a registered model alias pointing to a", corpus_words, n=8) == [
        "set a registered model alias pointing to a"]
