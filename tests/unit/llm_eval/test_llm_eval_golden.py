"""The golden set: the docs set is valid and sized for ≤ 3-point flips; bad files fail naming the case and field."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipelines.llm_eval.golden import GoldenSetError, load_golden, select_cases

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
GOOD = """cases:
  - id: tea
    kind: answerable
    category: drinks
    question: How hot should green tea water be?
    source: tea.md
    reference: 80 degrees.
    facts: [80 degrees, [two minutes, 2 minutes]]
  - id: paris
    kind: unanswerable
    category: off_corpus
    question: What is the capital of France?
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "golden.yaml"
    path.write_text(text)
    return path


def test_the_docs_golden_set_is_valid_and_big_enough():
    golden = load_golden(REPO / "dags/evaluation/docs_golden.yaml")
    answerable = [c for c in golden.cases if c.kind == "answerable"]
    assert len(answerable) >= 34  # one flip moves a rate over the answerable cases by at most 3 points
    assert golden.count("unanswerable") >= 34  # the same for refusal accuracy
    corpus = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    for case in answerable:
        assert set(case.source) <= corpus, f"{case.id}: {case.source} is not a document of docs/"
    assert golden.digest == hashlib.sha256((REPO / "dags/evaluation/docs_golden.yaml").read_bytes()).hexdigest()


def test_the_unanswerable_questions_stay_out_of_the_corpus():
    golden = load_golden(REPO / "dags/evaluation/docs_golden.yaml")
    corpus = " ".join(p.read_text().lower() for p in (REPO / "docs").rglob("*.md"))
    for case in golden.cases:
        if case.kind == "unanswerable":
            assert case.question.lower() not in corpus, f"{case.id} is quoted in docs/: it became answerable"


def test_a_valid_file_loads_with_its_digest(tmp_path):
    golden = load_golden(write(tmp_path, GOOD))
    tea, paris = golden.cases
    assert tea.source == ("tea.md",) and tea.facts == (("80 degrees",), ("two minutes", "2 minutes"))
    assert paris.expectations() == {"case_id": "paris", "kind": "unanswerable", "category": "off_corpus"}
    assert tea.expectations()["facts"] == [["80 degrees"], ["two minutes", "2 minutes"]]
    assert golden.digest == hashlib.sha256(GOOD.encode()).hexdigest()
    assert golden.summary()["categories"] == {"drinks": 1, "off_corpus": 1}
    assert golden.summary()["adversarial"] == 0


@pytest.mark.parametrize(("change", "message"), [
    (("    facts: [80 degrees, [two minutes, 2 minutes]]\n", ""),
     "case 0 (id 'tea'), field (the case): an answerable case needs facts"),
    (("    question: How hot should green tea water be?\n", ""), "case 0 (id 'tea'), field question: field required"),
    (("  - id: paris", "  - id: tea"), "case id 'tea' is used twice (cases 0 and 1)"),
    (("    category: off_corpus\n", "    category: off_corpus\n    reference: Paris\n"),
     "case 1 (id 'paris'), field (the case): an unanswerable case has no source, reference or facts"),
    (("    kind: unanswerable", "    kind: maybe"), "case 1 (id 'paris'), field kind: Input should be"),
    (("    source: tea.md\n", "    source: tea.md\n    sauce: tea.md\n"),
     "case 0 (id 'tea'), field sauce: unknown field"),
    (("  - id: paris", "  - id: Paris!"), "case 1 (id 'Paris!'), field id: String should match pattern"),
    (("What is the capital of France?", "how hot should green tea water be?"), "ask the same question"),
])
def test_bad_files_fail_naming_the_case_and_field(tmp_path, change, message):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(GoldenSetError) as failure:
        load_golden(path)
    assert str(failure.value).startswith(f"golden set {path}: ")
    assert message in str(failure.value)


def test_unreadable_or_broken_files_say_so(tmp_path):
    with pytest.raises(GoldenSetError, match="cannot read it"):
        load_golden(tmp_path / "missing.yaml")
    with pytest.raises(GoldenSetError, match="not valid YAML at line 3, column 1"):
        load_golden(write(tmp_path, "cases:\n  - id: [x\n"))
    with pytest.raises(GoldenSetError, match="expected a mapping with a 'cases' list"):
        load_golden(write(tmp_path, "- just a list\n"))


def test_a_limit_takes_cases_in_turn_from_each_category():
    golden = load_golden(REPO / "dags/evaluation/docs_golden.yaml")
    chosen = select_cases(golden.cases, len(golden.categories))
    assert sorted(c.category for c in chosen) == golden.categories
    assert {c.kind for c in chosen} == {"answerable", "unanswerable", "adversarial"}
    assert select_cases(golden.cases, None) == list(golden.cases)
