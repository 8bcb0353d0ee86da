"""A run whose logical date is before the DAG's start_date fails loudly instead of succeeding with no task run
(Airflow creates no task instance before a task's start date; a copied YAML keeps another use case's start_date)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.templates import load_named

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def run_before_start_message(*args):
    if str(REPO / "dags") not in sys.path:
        sys.path.insert(0, str(REPO / "dags"))
    from loopline_templates.common import run_before_start_message

    return run_before_start_message(*args)


def test_the_message_names_the_start_date_key_and_what_to_do():
    config = load_named("churn_training")
    assert run_before_start_message(config, datetime(2026, 11, 1, tzinfo=UTC)) is None
    assert run_before_start_message(config, None) is None  # a manual run without a logical date
    # Airflow creates every task of a backfill's run, whatever their start date: such a run does its work.
    assert run_before_start_message(config, datetime(2019, 6, 2, tzinfo=UTC), (None, None), "backfill") is None
    message = run_before_start_message(config, datetime(2019, 6, 2, tzinfo=UTC),
                                       (datetime(2019, 6, 1, tzinfo=UTC), datetime(2019, 6, 2, tzinfo=UTC)))
    assert message == (
        "churn_training: this run's logical date 2019-06-02T00:00:00+00:00 (data interval [2019-06-01, "
        "2019-06-02)) is before the DAG's start_date 2026-11-01T00:00:00+00:00 (start_date in "
        "dags/configs/churn_training.yaml), so Airflow would run none of its tasks and mark the run a success "
        "having done nothing. Set start_date in the YAML on or before 2019-06-02 (the first day of your data), "
        "or run a later interval")


def test_a_training_run_before_start_date_fails_at_its_guard(airflow_db):
    from support.airflow_helpers import load_dags

    dag = load_dags()["churn_training"]
    guard = dag.task_dict["check_start_date"]
    assert guard.start_date == datetime(1970, 1, 1, tzinfo=UTC)
    assert guard.downstream_task_ids == guard.upstream_task_ids == set()  # a leaf: the run's state follows it
    assert dag.task_dict["wait_for_features"].start_date == dag.start_date

    run = dag.test(logical_date=datetime(2026, 10, 1, tzinfo=UTC))

    assert run.state == "failed"  # without the guard: "success", and no task would have run
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {"check_start_date": "failed"}
