"""The paraphrased question set of the docstring corpus: big enough, all four packages, and not copied.

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


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("docstrings") / "corpus"
    export(list(DEFAULT_PACKAGES), out)
    text = "\n".join(p.read_text() for p in sorted(out.rglob("*.md")))
    return out, " ".join(normalised_words(text))


def test_default_packages_include_peft():
    assert set(DEFAULT_PACKAGES) == {"airflow", "feast", "mlflow", "peft"}


def test_paraphrased_set_has_40_questions_over_the_four_packages():
    questions = load_questions(PARAPHRASED).questions
    per_package = Counter(q.source.split("/", 1)[0] for q in questions)
    assert len(questions) >= 40
    assert set(per_package) == set(DEFAULT_PACKAGES)
    assert min(per_package.values()) >= 10, per_package
    assert len({q.question for q in questions}) == len(questions), "a question appears twice"


def test_every_expected_source_is_a_document_of_the_corpus(corpus):
    root, _ = corpus
    missing = [q.source for q in load_questions(PARAPHRASED).questions if not (root / q.source).is_file()]
    assert not missing, f"expected sources not in the exported corpus: {missing}"


def test_no_question_copies_8_consecutive_words_of_the_corpus(corpus):
    _, words = corpus
    copied = {q.question: runs for q in load_questions(PARAPHRASED).questions
              if (runs := copied_runs(q.question, words, 8))}
    assert not copied, f"questions quoting the corpus: {copied}"


def test_copied_runs_finds_a_quoted_sentence():
    corpus_words = " ".join(normalised_words("Set a registered model alias pointing to a model version. Args: name"))
    assert copied_runs("Please, set a registered model alias pointing to a model version!", corpus_words)
    assert copied_runs("How do I give a model version a nickname?", corpus_words) == []
    assert copied_runs("set a registered model alias pointing to a", corpus_words, n=8) == [
        "set a registered model alias pointing to a"]
