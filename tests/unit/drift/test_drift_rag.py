"""Retrieval drift helpers: the query log, the chunk sample, and the embedding score against Evidently's."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from pipelines.core.settings import LooplineSettings
from pipelines.drift.rag import embedding_distance, embedding_drift, log_queries, read_queries, sample_ids

pytestmark = pytest.mark.unit


def test_logged_queries_read_back_and_bad_lines_are_skipped(tmp_path):
    settings = LooplineSettings(home=tmp_path)
    day = date(2026, 11, 20)
    path = log_queries("docs", day, ["what is a DAG", "how to re-run a day"], settings)
    with path.open("a") as handle:
        handle.write("not json\n{\"other\": 1}\n\"a bare string query\"\n\n")
    assert read_queries("docs", [day, date(2026, 11, 21)], settings) == [
        "what is a DAG", "how to re-run a day", "a bare string query"]


def test_a_pipelines_own_check_questions_are_not_user_traffic(tmp_path):
    settings = LooplineSettings(home=tmp_path)
    day = date(2026, 11, 20)
    path = log_queries("docs", day, ["a user's question"], settings)
    with path.open("a") as handle:
        handle.write('{"query": "Who painted the Mona Lisa?", "origin": "check"}\n'
                     '{"query": "asked in the UI", "origin": "user"}\n')
    assert read_queries("docs", [day], settings) == ["a user's question", "asked in the UI"]


def test_the_chunk_sample_is_deterministic_and_bounded():
    ids = [f"c{i}" for i in range(100)]
    assert sample_ids(ids, 10) == sample_ids(list(reversed(ids)), 10) and len(sample_ids(ids, 10)) == 10
    assert sample_ids(ids[:5], 10) == sorted(ids[:5])


def test_the_score_is_evidentlys_distance_and_small_sets_get_no_plot():
    rng = np.random.default_rng(0)
    reference, current = rng.normal(size=(40, 8)), rng.normal(0.5, size=(40, 8))
    score, snapshot = embedding_drift(reference, current, threshold=0.15)
    assert score == pytest.approx(snapshot.dict()["metrics"][0]["value"])
    assert score == pytest.approx(embedding_distance(reference, current))
    small_score, none = embedding_drift(reference[:5], current[:5], threshold=0.15)
    assert none is None and small_score == pytest.approx(embedding_distance(reference[:5], current[:5]))
