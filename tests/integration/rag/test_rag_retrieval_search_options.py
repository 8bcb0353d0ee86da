"""Chunking by symbol and weighted fusion through the real rag_index steps, model and LanceDB.

A three-module docstring corpus is indexed with the default chunker, then the YAML switches to
``chunker.strategy: symbol``: the next run must build a new version beside the live one (blue/green), gate
it, and readers must get symbol-headed chunks; ``search.hybrid: weighted_rrf`` must answer through the same
``steps.search`` readers call.
"""

from __future__ import annotations

import pytest

from pipelines.rag import steps as rag_steps
from pipelines.rag.config import RagIndexConfig

pytestmark = pytest.mark.integration

INSTANCE = "ragsymbols"
MODULES = {
    "mlflow/tracking/client.md": """\
# mlflow.tracking.client

Internal package providing a Python CRUD interface to MLflow experiments, runs and registered models.

## class MlflowClient

Client of an MLflow Tracking Server that creates and manages experiments and runs.

### MlflowClient.set_registered_model_alias

Set a registered model alias pointing to a model version.
""",
    "feast/entity.md": """\
# feast.entity

## class Entity

An entity defines a collection of entities for which features can be defined.
""",
    "peft/utils/hotswap.md": """\
# peft.utils.hotswap

## hotswap_adapter()

Substitute old adapter data with new adapter data, keeping the rest the same.
""",
}
QUESTIONS = [
    ("How do I give a model version a nickname?", "mlflow/tracking/client.md"),
    ("How do I declare the key my features are attached to?", "feast/entity.md"),
    ("How can I swap a loaded adapter for another one?", "peft/utils/hotswap.md"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("symbols")
    corpus = root / "corpus"
    for doc_id, text in MODULES.items():
        (corpus / doc_id).parent.mkdir(parents=True, exist_ok=True)
        (corpus / doc_id).write_text(text)
    questions = root / "questions.yaml"
    questions.write_text("questions:\n" + "".join(f"  - question: {q}\n    source: {s}\n" for q, s in QUESTIONS))
    return {"corpus": corpus, "questions": questions}


def config_for(world, **overrides) -> RagIndexConfig:
    raw = {
        "template": "rag_index", "instance": INSTANCE,
        "corpus": {"path": str(world["corpus"]), "include": ["**/*.md"]},
        "embedding": {"batch_size": 8},
        "evaluation": {"questions": str(world["questions"]), "k": 3, "min_hit_rate": 0.6,
                       "max_hit_rate_drop": 0.34, "max_mrr_drop": 0.5},
        **overrides,
    }
    return RagIndexConfig.model_validate(raw)


def run(config: RagIndexConfig, run_id: str) -> dict:
    plan = rag_steps.plan_index(config, run_id)
    embedded = rag_steps.embed_chunks(config, plan)
    verdict = rag_steps.evaluate_index(config, plan, run_id)
    rag_steps.publish_index(config, plan, run_id)
    rag_steps.record_index(config, plan, embedded, verdict, run_id)
    return plan


def test_switching_to_symbol_chunks_builds_a_new_version_and_readers_see_symbol_names(world, loopline_home):
    first = run(config_for(world), "structure-1")
    assert first["mode"] == "full" and first["chunker"]["strategy"] == "structure"
    hit = rag_steps.search(config_for(world), "registered model alias", k=1, mode="vector")[0]
    assert hit.text.startswith("mlflow.tracking.client > class MlflowClient > ")

    symbol = config_for(world, chunker={"strategy": "symbol"})
    second = run(symbol, "symbol-1")
    assert second["mode"] == "full", "another chunker strategy must be a new version, not an in-place update"
    assert second["target_version"] == f"{INSTANCE}_v2"
    assert second["chunker"]["digest"] != first["chunker"]["digest"]
    hit = rag_steps.search(symbol, "registered model alias", k=1, mode="vector")[0]
    assert hit.doc_id == "mlflow/tracking/client.md"
    assert hit.text.startswith("mlflow.tracking.client.MlflowClient.set_registered_model_alias\n"
                               "mlflow tracking client set registered model alias\n")
    assert run(symbol, "symbol-2")["mode"] == "unchanged"  # same corpus, same strategy: nothing to do


@pytest.mark.parametrize("text_weight", [0.0, 0.5, 2.0])
def test_weighted_rrf_hybrid_answers_through_steps_search(world, text_weight):
    config = config_for(world, chunker={"strategy": "symbol"},
                        search={"hybrid": "weighted_rrf", "text_weight": text_weight, "candidates": 5})
    hits = rag_steps.search(config, "hotswap adapter weights", k=3, mode="hybrid")
    assert hits[0].doc_id == "peft/utils/hotswap.md"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len({h.chunk_id for h in hits}) == len(hits)
    if text_weight == 0.0:  # BM25 weighted out: the ranking is the vector ranking
        vector = rag_steps.search(config, "hotswap adapter weights", k=3, mode="vector")
        assert [h.chunk_id for h in hits] == [h.chunk_id for h in vector]


def test_one_chunk_per_document_spreads_the_results(world):
    config = config_for(world, chunker={"strategy": "symbol"}, search={"max_chunks_per_document": 1})
    plain = rag_steps.search(config_for(world, chunker={"strategy": "symbol"}), "MLflow client runs", k=3,
                             mode="vector")
    spread = rag_steps.search(config, "MLflow client runs", k=3, mode="vector")
    assert [h.doc_id for h in plain].count("mlflow/tracking/client.md") > 1  # the module has three chunks
    assert len({h.doc_id for h in spread}) == len(spread) == 3
    assert spread[0].chunk_id == plain[0].chunk_id
