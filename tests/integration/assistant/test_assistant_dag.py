"""The assistant template through Airflow (``dag.test()``) on the toy index: prepare, seed, check; and a check
that fails without retry when the answerable question is declined."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

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
        "prepare_generator": "success", "seed_prompt": "success", "check_answers": "success"}
    generator = xcom(run, "prepare_generator")
    assert generator["converted"] is False and generator["digest"] == assistant_world.generator["digest"]
    seeded = xcom(run, "seed_prompt")
    assert (seeded["registered"], seeded["alias_set"]) == (False, False)
    checks = xcom(run, "check_answers")
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
