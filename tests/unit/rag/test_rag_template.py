"""The rag_index config and DAG: validation, graph shape, schedule, Assets, house rules, light parsing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines.rag.config import RagIndexConfig
from pipelines.rag.versions import load_rag_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
DOCS_CONFIG = REPO / "dags" / "configs" / "docs_rag_index.yaml"
HEAVY = ["pandas", "numpy", "pyarrow", "torch", "transformers", "sentence_transformers", "lancedb",
         "weaviate", "mlflow", "sklearn"]
MINIMAL = {"template": "rag_index", "instance": "handbook", "evaluation": {"questions": "q.yaml"}}


def build(config: RagIndexConfig):
    if str(REPO / "dags") not in sys.path:
        sys.path.insert(0, str(REPO / "dags"))
    from loopline_templates.rag_index import build_dag

    return build_dag(config)


def test_the_docs_instance_validates_with_its_defaults():
    config = load_rag_config(DOCS_CONFIG)
    assert config.dag_id == "docs_rag_index"
    assert config.corpus.path == "docs" and config.index.backend == "lancedb"
    assert config.embedding.model is None, "the bundled model is found at run time, not in the config"
    assert (config.index_asset.name, config.index_asset.uri) == ("docs_index", "loopline://rag/docs")
    assert (config.reindex_request.name, config.reindex_request.uri) == (
        "docs_reindex", "loopline://reindex/docs")
    assert (REPO / config.evaluation.questions).is_file()


def test_defaults_fill_everything_but_the_question_set():
    config = RagIndexConfig.model_validate(MINIMAL)
    assert (config.chunker.size_chars, config.chunker.overlap_chars) == (1000, 150)
    assert config.evaluation.modes == ["vector", "hybrid"] and config.index.previous_versions_kept == 1


@pytest.mark.parametrize("patch,message", [
    ({"chunker": {"size_chars": 200, "overlap_chars": 150}},
     r"overlap_chars \(150\) must be at most half of size_chars \(200\)"),
    ({"index": {"backend": "pinecone"}}, "Input should be 'lancedb' or 'weaviate'"),
    ({"corpus": {"path": "docs", "inclde": ["*.md"]}}, "Extra inputs are not permitted"),
    ({"evaluation": {"questions": "q.yaml", "k": 0}}, "greater than or equal to 1"),
])
def test_bad_configs_are_refused(patch, message):
    with pytest.raises(ValidationError, match=message):
        RagIndexConfig.model_validate({**MINIMAL, **patch})


def test_the_dag_wires_five_thin_tasks_in_order():
    dag = build(load_rag_config(DOCS_CONFIG))
    chain = ["plan_index", "embed_chunks", "evaluate_index", "publish_index", "record_index"]
    assert sorted(dag.task_dict) == sorted(chain)
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        assert downstream in dag.task_dict[upstream].downstream_task_ids
    assert [o.name for o in dag.task_dict["publish_index"].outlets] == ["docs_index"]
    assert [o.uri for o in dag.task_dict["publish_index"].outlets] == ["loopline://rag/docs"]
    assert dag.task_dict["record_index"].trigger_rule == "none_failed", "it runs when publish is skipped"
    assert dag.max_active_runs == 1


def test_the_dag_runs_on_its_cron_or_when_drift_asks():
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    dag = build(load_rag_config(DOCS_CONFIG))
    timetable = dag.timetable
    assert isinstance(timetable, AssetOrTimeSchedule)
    assert isinstance(timetable.timetable, CronTriggerTimetable)
    assets = [(a.name, a.uri) for a in timetable.asset_condition.objects]
    assert assets == [("docs_reindex", "loopline://reindex/docs")]
    assert "docs_reindex" in dag.doc_md and "drift" in dag.doc_md


def test_the_dag_follows_the_house_rules():
    dag = build(load_rag_config(DOCS_CONFIG))
    assert dag.catchup is False
    assert {"loopline", "template:rag_index"} <= set(dag.tags)
    assert dag.doc_md and len(dag.doc_md) > 200
    for t in dag.tasks:
        assert t.owner == "ml-platform" and t.retries >= 1
        doc = (t.doc_md or getattr(t, "doc", None) or t.python_callable.__doc__ or "").strip()
        assert doc and "\n" not in doc, f"{t.task_id} needs a one-line docstring"


def test_building_the_dag_imports_nothing_heavy():
    code = (
        "import sys, json; from pathlib import Path;"
        f"sys.path.insert(0, {str(REPO / 'dags')!r});"
        "from loopline_templates.rag_index import build_dag;"
        "from pipelines.rag.versions import load_rag_config;"
        f"dag = build_dag(load_rag_config(Path({str(DOCS_CONFIG)!r})));"
        f"print(json.dumps({{'dag': dag.dag_id, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(),
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"dag": "docs_rag_index", "heavy": []}


def test_weaviate_collections_are_defined_for_self_provided_cosine_vectors():
    """Client-side only: the definition weaviate-client would send (no server is contacted)."""
    from weaviate.collections.classes.config import _CollectionConfigCreate

    from pipelines.rag.stores.weaviate_store import collection_definition

    body = _CollectionConfigCreate(**collection_definition("Loopline_docs_v3", "docs", 384))._to_dict()
    assert body["class"] == "Loopline_docs_v3"
    assert body["vectorConfig"] == {"default": {"vectorizer": {"none": {}}, "vectorIndexType": "hnsw",
                                                "vectorIndexConfig": {"distance": "cosine"}}}
    props = {p["name"]: p for p in body["properties"]}
    assert props["text"]["tokenization"] == "word" and props["chunk_id"]["indexSearchable"] is False
