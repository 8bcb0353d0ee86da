"""rag_index through Airflow (``dag.test()``): a build, an unchanged re-run, bad input, and the docs instance.

The ``ragdag`` instance indexes a four-document corpus built here; ``docs_rag_index`` indexes this
repository's docs/ with its real question set, as ``make demo`` does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.core import tracking
from pipelines.rag.config import RagIndexConfig
from pipelines.rag.versions import load_rag_config
from support.airflow_helpers import build_and_register, xcom
from support.toy_corpus import CORPUS, QUESTIONS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DOCS_CONFIG = REPO / "dags" / "configs" / "docs_rag_index.yaml"




def docs_dag():
    """The registered docs_rag_index from the DAG folder; the template's own build until it is registered."""
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=str(REPO / "dags"), bundle_path=REPO / "dags")
    if "docs_rag_index" in bag.dags:
        assert bag.import_errors == {}
        return bag.dags["docs_rag_index"]
    return build_and_register(load_rag_config(DOCS_CONFIG))


def run_at(dag, day: int):
    return dag.test(logical_date=datetime(2026, 11, day, 6, tzinfo=UTC))


def task_states(run) -> dict[str, tuple[str, int]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(TaskInstance.task_id, TaskInstance.state, TaskInstance.try_number).where(
            TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)
        rows = session.execute(query).all()
    return {task_id: (str(state), tries) for task_id, state, tries in rows}




def asset_events(name: str) -> list:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                 .where(AssetModel.name == name))
        return [(e.source_task_id, e.source_run_id, e.extra) for e in session.scalars(query)]


@pytest.fixture(scope="module")
def ragdag(airflow_db, tmp_path_factory):
    root = tmp_path_factory.mktemp("ragdag")
    corpus = root / "corpus"
    corpus.mkdir()
    for name, text in CORPUS.items():
        (corpus / name).write_text(text)
    questions = root / "questions.yaml"
    questions.write_text("questions:\n" + "".join(f"  - question: {q}\n    source: {s}\n"
                                                  for q, s in QUESTIONS))
    config = RagIndexConfig.model_validate({
        "template": "rag_index", "instance": "ragdag", "retry_delay_minutes": 0,
        "corpus": {"path": str(corpus)}, "chunker": {"size_chars": 200, "overlap_chars": 40},
        "evaluation": {"questions": str(questions), "k": 2, "min_hit_rate": 0.75},
    })
    dag = build_and_register(config)
    return config, dag, [run_at(dag, 2), run_at(dag, 3)], root


def test_the_first_run_builds_and_publishes_the_index(ragdag):
    config, _, (first, _), _ = ragdag
    assert first.state == "success"
    tasks = ("plan_index", "embed_chunks", "evaluate_index", "publish_index", "record_index")
    assert {t: s for t, (s, _) in task_states(first).items()} == {t: "success" for t in tasks}
    summary = xcom(first, "record_index")
    assert (summary["mode"], summary["action"], summary["live_version"]) == ("full", "switched", "ragdag_v1")
    assert summary["embedded"] == summary["chunks"] > 4 and summary["deleted"] == 0
    assert summary["metrics"]["vector"]["hit_rate"] == 1.0


def test_an_unchanged_rerun_skips_publishing_and_emits_no_asset_event(ragdag):
    _, _, (first, second), _ = ragdag
    assert second.state == "success"
    assert task_states(second)["publish_index"][0] == "skipped"
    assert task_states(second)["record_index"][0] == "success"
    summary = xcom(second, "record_index")
    assert (summary["mode"], summary["embedded"], summary["deleted"]) == ("unchanged", 0, 0)
    assert summary["skipped_unchanged"] == summary["chunks"]
    assert summary["metrics"] == xcom(first, "record_index")["metrics"]
    events = asset_events("ragdag_index")
    assert [(task, run) for task, run, _ in events] == [("publish_index", first.run_id)]
    assert events[0][2]["version"] == "ragdag_v1" and events[0][2]["mode"] == "full"


def test_each_run_is_one_mlflow_run_with_lineage(ragdag):
    _, _, (first, second), _ = ragdag
    runs = tracking.client().search_runs([tracking.experiment_id("ragdag_rag_index")])
    keys = sorted(r.data.tags["loopline.run_key"].rsplit(":", 1)[0] for r in runs)
    assert keys == sorted([first.run_id, second.run_id])
    for run in runs:
        lineage = {"corpus_digest", "model_id", "chunker_size_chars", "chunker_overlap_chars", "index_version"}
        assert lineage <= set(run.data.params)
        assert "hit_at_2_vector" in run.data.metrics and "mrr_at_2_hybrid" in run.data.metrics


def test_the_index_versions_lineage_names_its_corpus_digest_files_and_embedding_model(ragdag):
    from pipelines.lineage import uris
    from pipelines.lineage.graph import lineage_of

    config, _, (first, _), root = ragdag
    summary = xcom(first, "record_index")
    graph = lineage_of(uris.index_version("ragdag", summary["live_version"]))
    assert graph.made_by is not None and graph.made_by.job == "ragdag_rag_index.publish_index"
    assert graph.made_by.dag_run_id == first.run_id
    corpus = uris.corpus("ragdag", summary["corpus_digest"])
    assert {node.uri for node in graph.inputs} == {corpus, uris.embedding_model(summary["model_id"])}
    [corpus_node] = [node for node in graph.inputs if node.uri == corpus]
    assert corpus_node.made_by.job == "ragdag_rag_index.plan_index"
    assert {node.uri for node in corpus_node.inputs} == {uris.file(root / "corpus" / name) for name in CORPUS}


def test_rebuilding_the_index_from_its_promotion_record_reproduces_its_evaluation(ragdag):
    from datetime import timedelta

    from pipelines.audit import records
    from pipelines.audit.rebuild import INDEX_TOLERANCE, rebuild

    _, _, (first, _), _ = ragdag
    summary = xcom(first, "record_index")
    [record] = [e for e in records.events(datetime.now(UTC) - timedelta(hours=2))
                if e.subject == "index ragdag" and e.version == summary["live_version"]]
    assert (record.kind, record.decision, record.previous) == ("promotion", "promoted", None)
    assert record.provenance["corpus_digest"] == summary["corpus_digest"]
    assert record.provenance["embedding_model"] == summary["model_id"]
    result = rebuild(record)
    assert set(result.figures) == {f"{mode} {name}" for mode in summary["metrics"] for name in ("hit_rate", "mrr")}
    for recorded, rebuilt in result.figures.values():
        assert abs(recorded - rebuilt) <= INDEX_TOLERANCE, result.describe()
    import mlflow

    from pipelines.core.settings import get_settings

    assert mlflow.get_tracking_uri() == get_settings().mlflow_uri  # the scratch build's MLflow is not left behind


def test_an_empty_corpus_fails_the_run_without_retry_and_changes_nothing(ragdag):
    config, _, _, root = ragdag
    (root / "empty").mkdir()
    empty_corpus = config.corpus.model_copy(update={"path": str(root / "empty")})
    broken = build_and_register(config.model_copy(update={"corpus": empty_corpus}))
    run = run_at(broken, 4)
    assert run.state == "failed"
    states = task_states(run)
    assert states["plan_index"] == ("failed", 1), "bad input is not retried"
    assert states["publish_index"][0] == "upstream_failed"
    assert len(asset_events("ragdag_index")) == 1


def test_the_docs_instance_indexes_the_repository_docs_and_passes_its_gate(airflow_db):
    dag = docs_dag()
    run = run_at(dag, 5)
    assert run.state == "success"
    summary = xcom(run, "record_index")
    config = load_rag_config(DOCS_CONFIG)
    assert summary["live_version"] and summary["documents"] >= 5
    for mode in config.evaluation.modes:
        assert summary["metrics"][mode]["hit_rate"] >= config.evaluation.min_hit_rate, summary["metrics"]
