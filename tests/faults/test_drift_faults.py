"""Faults around the drift trigger: the emit task killed after it claimed the emission, then retried.

The world (``support.churn_world``): simulated customers whose behaviour shifts on day 24, a champion trained
before the shift, in a data home of its own; the drift check runs through ``dag.test()`` on the session's
Airflow database, as its own instance (``faultdrift``) so its runs and events are its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from support.airflow_helpers import build_and_register
from support.churn_world import land, own_data_home, publish, train_champion

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]
T0 = date(2026, 11, 1)
DRIFT_START = T0 + timedelta(days=24)
CHECKED_END = T0 + timedelta(days=36)  # the check's window: the 7 drifted days before it
LOGICAL = datetime.combine(CHECKED_END + timedelta(days=30), time(3), tzinfo=UTC)
RUN_CONF = {"window_end": str(CHECKED_END)}
DAG_ID = "faultdrift_drift_check"


def raw_config() -> dict:
    """churn_drift_check.yaml as instance ``faultdrift``."""
    import yaml

    raw = yaml.safe_load((REPO / "dags" / "configs" / "churn_drift_check.yaml").read_text())
    return {**raw, "instance": "faultdrift"}


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_db):
    home = tmp_path_factory.mktemp("drift-fault-home")
    with own_data_home(home) as settings:
        land(settings, T0, 37, drift_start=DRIFT_START)
        publish(settings, [T0 + timedelta(days=n) for n in range(28, 37)])
        train_champion(settings, T0 + timedelta(days=21), 14)
        yield settings


def asset_events(name: str, dag_id: str) -> list[tuple[str, str]]:
    """(source task, source run) of every Airflow event of Asset ``name`` emitted by ``dag_id``."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                 .where(AssetModel.name == name, AssetEvent.source_dag_id == dag_id))
        return [(e.source_task_id, e.source_run_id) for e in session.scalars(query)]


def test_emit_killed_after_its_claim_is_completed_by_the_retry_exactly_once(world, tmp_path):
    """Fault: the worker running ``emit_retrain`` dies (os._exit 137) right after the emission is claimed in the
    drift history, before the task returns and Airflow records the Asset event.
    Where: ``pipelines.drift.steps.emit_trigger``, crash point ``drift:after_claim``, in a child process running
    the DAG through ``dag.test()``.
    Invariant: after the crash the history holds the claim and Airflow no event; the retry (the run cleared and
    run again) emits exactly one ``churn_retrain`` event carrying the claimed evidence; a further clear of the
    finished run emits nothing more (dedupe), and the history holds one emission throughout."""
    from pipelines.drift.config import DriftCheckConfig
    from pipelines.drift.history import open_history

    config = DriftCheckConfig.model_validate(raw_config())
    build_and_register(config)
    payload = tmp_path / "config.json"
    payload.write_text(json.dumps(raw_config(), default=str))
    code = textwrap.dedent(f"""
        import json, sys
        from datetime import datetime
        sys.path.insert(0, {str(REPO / 'dags')!r})
        from loopline_templates.drift_check import build_dag
        from pipelines.drift.config import DriftCheckConfig
        config = DriftCheckConfig.model_validate(json.load(open({str(payload)!r})))
        at = datetime.fromisoformat({LOGICAL.isoformat()!r})
        build_dag(config).test(run_after=at, logical_date=at, run_conf={RUN_CONF!r})
    """)
    child = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=400,
        env={**os.environ, "LOOPLINE_FAULT_CRASH_AT": "drift:after_claim",
             "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"})
    assert child.returncode == 137, child.stderr[-3000:]

    history = open_history(world)
    claims = history.emissions("churn_retrain")
    assert len(claims) == 1
    run_id = claims[0]["dag_run_id"]
    assert asset_events("churn_retrain", DAG_ID) == [], "the worker died before Airflow recorded the event"

    dag = build_and_register(config)
    retry = dag.test(run_after=LOGICAL, logical_date=LOGICAL, run_conf=RUN_CONF)
    assert retry.run_id == run_id and retry.state == "success"
    assert {ti.task_id: ti.state for ti in retry.get_task_instances()}["emit_retrain"] == "success"
    assert asset_events("churn_retrain", DAG_ID) == [("emit_retrain", run_id)]
    assert len(history.emissions("churn_retrain")) == 1
    assert history.check("faultdrift", run_id)["action"] == "emitted churn_retrain → churn_training"

    cleared = dag.test(run_after=LOGICAL, logical_date=LOGICAL, run_conf=RUN_CONF)
    assert {ti.task_id: ti.state for ti in cleared.get_task_instances()}["emit_retrain"] == "skipped"
    assert asset_events("churn_retrain", DAG_ID) == [("emit_retrain", run_id)]
    assert len(history.emissions("churn_retrain")) == 1
    assert json.loads(json.dumps(claims[0]["extra"]))["run_id"] == run_id
