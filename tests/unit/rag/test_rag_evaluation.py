"""hit@k, MRR@k, the gate's verdicts, and the frozen question set of the docs index."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.rag.config import EvaluationConfig
from pipelines.rag.evaluation import QuestionSetError, flat_metrics, gate, load_questions, score_rankings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def test_hit_rate_and_mrr():
    rankings = [["a", "b", "c"], ["b", "a"], ["c", "c", "c"], ["x", "y", "a"]]
    expected = ["a", "a", "a", "a"]
    three = {"hit_rate": 0.75, "mrr": (1 + 1 / 2 + 1 / 3) / 4}
    assert score_rankings(rankings, expected, k=3) == pytest.approx(three)
    assert score_rankings(rankings, expected, k=1) == pytest.approx({"hit_rate": 0.25, "mrr": 0.25})


def evaluation(**overrides) -> EvaluationConfig:
    return EvaluationConfig(questions="q.yaml", k=5, modes=["vector", "hybrid"], **overrides)


GOOD = {"vector": {"hit_rate": 0.9, "mrr": 0.8}, "hybrid": {"hit_rate": 0.95, "mrr": 0.85}}


def test_the_first_version_passes_when_it_reaches_the_minimum():
    assert gate(GOOD, None, evaluation(min_hit_rate=0.5)).promote
    verdict = gate(GOOD, None, evaluation(min_hit_rate=0.92))
    assert not verdict.promote
    assert verdict.reason == "vector hit@5 0.900 is below evaluation.min_hit_rate 0.920"


def test_a_small_drop_within_the_bounds_passes():
    live = {"vector": {"hit_rate": 0.93, "mrr": 0.84}, "hybrid": {"hit_rate": 0.95, "mrr": 0.85}}
    verdict = gate(GOOD, live, evaluation())
    assert verdict.promote and verdict.reason == "no regression beyond the bounds"


def test_a_drop_beyond_the_bound_in_any_mode_blocks():
    broken = {"vector": {"hit_rate": 0.2, "mrr": 0.1}, "hybrid": {"hit_rate": 0.95, "mrr": 0.85}}
    verdict = gate(broken, GOOD, evaluation())
    assert not verdict.promote
    assert verdict.reason == ("vector hit@5 drops 0.900 → 0.200 (-0.700, allowed -0.050); "
                              "vector MRR@5 drops 0.800 → 0.100 (-0.700, allowed -0.050)")


def test_an_mrr_drop_alone_blocks():
    worse = {**GOOD, "hybrid": {"hit_rate": 0.95, "mrr": 0.7}}
    assert gate(worse, GOOD, evaluation()).reason == "hybrid MRR@5 drops 0.850 → 0.700 (-0.150, allowed -0.050)"


def test_metrics_flatten_to_mlflow_names():
    assert flat_metrics(GOOD, 5, "candidate_")["candidate_hit_at_5_vector"] == 0.9
    assert flat_metrics(None, 5) == {}


def test_question_set_errors_name_the_file_and_entry(tmp_path):
    with pytest.raises(QuestionSetError, match="does not exist"):
        load_questions(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("questions:\n  - question: ok?\n    source: a.md\n  - question: ''\n    source: b.md\n")
    with pytest.raises(QuestionSetError, match=r"bad.yaml: entry 2 needs a non-empty 'question'"):
        load_questions(bad)


def test_the_docs_question_set_is_answerable_from_docs():
    qs = load_questions(REPO / "dags" / "evaluation" / "docs_questions.yaml")
    assert 20 <= len(qs.questions) <= 30
    assert len({q.question for q in qs.questions}) == len(qs.questions)
    missing = sorted({q.source for q in qs.questions if not (REPO / "docs" / q.source).is_file()})
    assert missing == [], "sources not in docs/: update dags/evaluation/docs_questions.yaml"
