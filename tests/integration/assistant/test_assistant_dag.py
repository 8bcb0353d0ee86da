"""The assistant template through Airflow (``dag.test()``) on the toy index: prepare, seed, check, announce a
new prompt version; and a check that fails without retry when the answerable question is declined."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipelines.core import tracking
from support.airflow_helpers import build_and_register, xcom
from support.assistant_world import assistant_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def task_states(run) -> dict[str, tuple[str, int]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(TaskInstance.task_id, TaskInstance.state, TaskInstance.try_number).where(
            TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)).all()
    return {task_id: (str(state), tries) for task_id, state, tries in rows}


def test_the_dag_prepares_seeds_and_checks_its_answers(airflow_db, assistant_world):
    dag = build_and_register(assistant_world.config)
    run = dag.test(logical_date=datetime(2026, 11, 20, 6, tzinfo=UTC))
    assert run.state == "success", task_states(run)
    assert {t: s for t, (s, _) in task_states(run).items()} == {
        "prepare_generator": "success", "seed_prompt": "success", "check_answers": "success",
        "announce_prompt_candidate": "skipped"}  # the prompt file's content is the champion's
    generator = xcom(run, "prepare_generator")
    assert generator["converted"] is False and generator["digest"] == assistant_world.generator["digest"]
    seeded = xcom(run, "seed_prompt")
    assert (seeded["registered"], seeded["alias_set"]) == (False, False)
    # Lineage (OpenLineage events): the prompt version the assistant serves was seeded from its file by this run.
    from pipelines.lineage import uris
    from pipelines.lineage.graph import lineage_of

    graph = lineage_of(uris.prompt_version(seeded["name"], seeded["version"]))
    assert (graph.made_by.job, graph.made_by.dag_run_id) == (f"{dag.dag_id}.seed_prompt", run.run_id)
    prompt_file = assistant_world.settings.resolve(assistant_world.config.prompt.template_file)
    assert [node.uri for node in graph.inputs] == [uris.file(prompt_file)]
    checks = xcom(run, "check_answers")
    served = lineage_of(f"assistant://{assistant_world.config.instance}/{dag.dag_id}")
    assert {node.uri for node in served.inputs} >= {uris.index_version("asktoy", checks["index_version"]),
                                                    uris.prompt_version(seeded["name"], checks["prompt_version"])}
    assert not checks["answerable"]["refused"] and checks["off_corpus"]["refused"]
    assert "kites.md" in {s["doc_id"] for s in checks["answerable"]["sources"]}
    assert checks["index_version"] == "asktoy_v1"


def test_a_declined_answerable_question_fails_the_run_without_retry(airflow_db, assistant_world):
    config = assistant_config(assistant_world.rag_yaml, instance="askfail",
                              check={"answerable": "What is the capital of France?",
                                     "off_corpus": "Who won the football world cup in 2018?"})
    run = build_and_register(config).test(logical_date=datetime(2026, 11, 20, 7, tzinfo=UTC))
    assert run.state == "failed"
    assert task_states(run)["check_answers"] == ("failed", 1), "a failed check is not retried"


def test_a_new_prompt_file_becomes_the_challenger_and_announces_itself(airflow_db, assistant_world, tmp_path):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from pipelines.assistant import prompts

    source = assistant_world.settings.resolve(assistant_world.config.prompt.template_file)
    edited = tmp_path / "edited_prompt.yaml"
    edited.write_text(source.read_text().replace("Answer only from the context;", "Answer briefly, only from the "
                                                                                   "context;"))
    config = assistant_config(assistant_world.rag_yaml, instance="askcand",
                              prompt={"name": "askcand_answer", "template_file": str(source)})
    first = prompts.seed_prompt(config, assistant_world.settings)
    assert first["alias_set"] and not first["challenger_set"]
    config = assistant_config(assistant_world.rag_yaml, instance="askcand",
                              prompt={"name": "askcand_answer", "template_file": str(edited)})
    run = build_and_register(config).test(logical_date=datetime(2026, 11, 20, 8, tzinfo=UTC))
    assert task_states(run)["announce_prompt_candidate"] == ("success", 1), task_states(run)
    seeded = xcom(run, "seed_prompt")
    assert seeded["registered"] and seeded["challenger_set"] and not seeded["alias_set"]
    assert seeded["alias_version"] == first["version"], "the champion stays until the gate promotes"
    client = tracking.client(assistant_world.settings)
    assert int(client.get_prompt_version_by_alias("askcand_answer", "challenger").version) == seeded["version"]
    with create_session() as session:
        extras = session.scalars(select(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                                 .where(AssetModel.name == "askcand_prompt_candidate")).all()
    assert extras == [{"prompt": "askcand_answer", "version": seeded["version"], "champion": first["version"]}]
