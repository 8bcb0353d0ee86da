"""What make demo prints about the docs index, from the record_index results of two runs."""

from __future__ import annotations

import pytest

from pipelines.demo.rag import summarize_runs, unexpected

pytestmark = pytest.mark.unit

METRICS = {"vector": {"hit_rate": 0.962, "mrr": 0.897}, "hybrid": {"hit_rate": 1.0, "mrr": 0.917}}
FIRST = {"instance": "docs", "backend": "lancedb", "model_id": "all-MiniLM-L6-v2@12a627c3b64a",
         "chunker": {"size_chars": 1000, "overlap_chars": 150}, "corpus_digest": "018dac8219a49bec",
         "mode": "full", "action": "switched", "live_version": "docs_v1", "documents": 6, "chunks": 47,
         "embedded": 47, "skipped_unchanged": 0, "deleted": 0, "metrics": METRICS, "k": 5,
         "skipped_files": [], "skipped_files_total": 0}
SECOND = {**FIRST, "mode": "unchanged", "action": "unchanged", "embedded": 0, "skipped_unchanged": 47,
          "skipped_files": [{"file": "logo.md", "reason": "is a binary file (NUL bytes)"}],
          "skipped_files_total": 1}


def test_both_runs_are_summarised_with_counts_and_metrics():
    text = summarize_runs(FIRST, SECOND)
    assert text.splitlines() == [
        "docs_rag_index (lancedb): model all-MiniLM-L6-v2@12a627c3b64a, chunks of 1000 chars with 150 overlap, "
        "corpus digest 018dac8219a49bec",
        "  run 1: full build; alias switched to docs_v1",
        "    6 documents, 47 chunks: embedded 47, skipped 0 (unchanged), deleted 0",
        "    hit@5 vector 0.962 / hybrid 1.000; MRR@5 vector 0.897 / hybrid 0.917",
        "  run 2: re-index, corpus unchanged; nothing published, docs_v1 stays live",
        "    6 documents, 47 chunks: embedded 0, skipped 47 (unchanged), deleted 0",
        "    hit@5 vector 0.962 / hybrid 1.000; MRR@5 vector 0.897 / hybrid 0.917",
        "    bad input skipped (1 files): logo.md is a binary file (NUL bytes)",
    ]


def test_an_unchanged_rerun_that_embeds_something_is_unexpected():
    assert unexpected(FIRST, SECOND) == []
    assert unexpected(FIRST, {**SECOND, "mode": "incremental", "embedded": 3}) == [
        "re-indexing the unchanged docs embedded 3 and deleted 0 chunks (mode incremental); expected nothing"]
