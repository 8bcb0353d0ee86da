"""Chunking by code symbol and weighted reciprocal rank fusion: the options issue 15 added to rag_index."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.rag.config import ChunkerConfig, SearchConfig
from pipelines.rag.corpus import (
    Document,
    chunk_document,
    chunk_document_by_symbol,
    chunk_document_with,
    first_sentence,
    identifier_words,
    normalise_text,
    qualified_name,
)
from pipelines.rag.hashing import chunk_corpus, chunker_digest
from pipelines.rag.stores.base import HybridFusion, SearchHit, fuse_reciprocal_rank

pytestmark = pytest.mark.unit

MODULE = """\
# mlflow.tracking.client

Internal package providing a Python CRUD interface to runs. More words follow here.

## class MlflowClient

Client of an MLflow Tracking Server that creates and manages experiments and runs.

### MlflowClient.set_registered_model_alias

Set a registered model alias pointing to a model version.

## search_runs()

Search for runs that fit the search criteria.
"""


def doc(text: str = MODULE, doc_id: str = "mlflow/tracking/client.md") -> Document:
    return Document(doc_id, "markdown", normalise_text(text, "markdown"), "hash")


def test_qualified_name_joins_module_and_innermost_symbol():
    assert qualified_name(("mlflow.tracking.client", "class MlflowClient",
                           "MlflowClient.set_registered_model_alias")) == \
        "mlflow.tracking.client.MlflowClient.set_registered_model_alias"
    assert qualified_name(("mlflow.tracking.client", "search_runs()")) == "mlflow.tracking.client.search_runs"
    assert qualified_name(("mlflow.tracking.client",)) == "mlflow.tracking.client"
    assert qualified_name(()) == ""


def test_identifier_words_split_snake_camel_and_dots():
    assert identifier_words("MlflowClient.set_registered_model_alias") == "mlflow client set registered model alias"
    assert identifier_words("HTTPServerConfig") == "http server config"
    assert identifier_words("get_peft_model") == "get peft model"


def test_first_sentence_stops_at_the_first_full_stop():
    assert first_sentence("Internal package providing a CRUD interface.  More words.\n\nNext") == \
        "Internal package providing a CRUD interface."
    assert first_sentence("No full stop here\n\nsecond paragraph") == "No full stop here"


def test_symbol_chunks_start_with_the_qualified_name_its_words_and_the_module_summary():
    chunks = chunk_document_by_symbol(doc(), 1000, 150)
    assert [heading for heading, _ in chunks] == [
        "mlflow.tracking.client",
        "mlflow.tracking.client > class MlflowClient",
        "mlflow.tracking.client > class MlflowClient > MlflowClient.set_registered_model_alias",
        "mlflow.tracking.client > search_runs()",
    ]
    alias = chunks[2][1]
    assert alias.splitlines()[:3] == [
        "mlflow.tracking.client.MlflowClient.set_registered_model_alias",
        "mlflow tracking client set registered model alias",
        "In mlflow.tracking.client: Internal package providing a Python CRUD interface to runs.",
    ]
    assert alias.endswith("Set a registered model alias pointing to a model version.")
    # the module's own section names the module without repeating its summary
    assert chunks[0][1].startswith("mlflow.tracking.client\nmlflow tracking client\n\nInternal package")


def test_symbol_chunks_keep_the_size_limit_and_the_default_chunker_is_unchanged():
    long = MODULE + "\n\n## big()\n\n" + "\n\n".join(f"Paragraph {i} " + "word " * 60 for i in range(10))
    bodies = [text.split("\n\n", 1)[1] for _, text in chunk_document_by_symbol(doc(long), 400, 0)]
    assert all(len(body) <= 400 for body in bodies)
    assert chunk_document_with(doc(), 1000, 150, "structure") == chunk_document(doc(), 1000, 150)
    with pytest.raises(ValueError, match="unknown chunker strategy 'tokens'"):
        chunk_document_with(doc(), 1000, 150, "tokens")


def test_strategy_changes_chunk_ids_but_the_default_keeps_the_old_ones():
    assert chunker_digest(1000, 150) == chunker_digest(1000, 150, "structure")
    assert chunker_digest(1000, 150, "symbol") != chunker_digest(1000, 150)
    from pipelines.rag.corpus import Corpus

    corpus = Corpus(root=None, documents=[doc()])  # type: ignore[arg-type]
    structure = {c.chunk_id for c in chunk_corpus(corpus, 1000, 150, "m@1")}
    symbol = {c.chunk_id for c in chunk_corpus(corpus, 1000, 150, "m@1", "symbol")}
    assert structure.isdisjoint(symbol)


def test_chunker_config_takes_only_known_strategies():
    assert ChunkerConfig().strategy == "structure"
    assert ChunkerConfig(strategy="symbol").strategy == "symbol"
    with pytest.raises(ValidationError, match="strategy"):
        ChunkerConfig(strategy="tokens")


def hit(chunk_id: str) -> SearchHit:
    return SearchHit(chunk_id, f"{chunk_id}.md", "", chunk_id, 0.0)


def test_reciprocal_rank_fusion_rewards_agreement_and_honours_weights():
    by_vector = [hit("a"), hit("b"), hit("c")]
    by_text = [hit("b"), hit("d"), hit("e")]
    fused = fuse_reciprocal_rank([(1.0, by_vector), (1.0, by_text)], k=3, rrf_k=60)
    assert [h.chunk_id for h in fused] == ["b", "a", "d"]  # b is in both lists
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    text_heavy = fuse_reciprocal_rank([(1.0, by_vector), (3.0, by_text)], k=3, rrf_k=60)
    assert [h.chunk_id for h in text_heavy] == ["b", "d", "e"]
    vector_only = fuse_reciprocal_rank([(1.0, by_vector), (0.0, by_text)], k=4)
    assert [h.chunk_id for h in vector_only][:3] == ["a", "b", "c"]
    assert fuse_reciprocal_rank([(1.0, [])], k=5) == []


def test_search_config_native_means_no_fusion():
    assert SearchConfig().fusion() is None
    fusion = SearchConfig(hybrid="weighted_rrf", text_weight=0.5, rrf_k=10, candidates=20).fusion()
    assert fusion == HybridFusion(rrf_k=10, text_weight=0.5, candidates=20)
    with pytest.raises(ValidationError):
        SearchConfig(hybrid="weighted_rrf", text_weight=-1)


def test_limit_per_document_keeps_the_best_chunks_of_more_documents():
    from pipelines.rag.stores.base import limit_per_document

    hits = [SearchHit(f"{d}{i}", f"{d}.md", "", "", 0.0) for d, i in
            [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("c", 1), ("b", 2), ("d", 1)]]
    assert [h.chunk_id for h in limit_per_document(hits, 3, 1)] == ["a1", "b1", "c1"]
    assert [h.chunk_id for h in limit_per_document(hits, 4, 2)] == ["a1", "a2", "b1", "c1"]
    assert [h.chunk_id for h in limit_per_document(hits, 10, 1)] == ["a1", "b1", "c1", "d1"]
    assert SearchConfig().max_chunks_per_document is None
    with pytest.raises(ValidationError):
        SearchConfig(max_chunks_per_document=0)
