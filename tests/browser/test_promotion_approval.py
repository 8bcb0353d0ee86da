"""Human approval of a promotion, in the Airflow UI: ``churnapproval_training`` (churn_training's YAML with
``promotion.approval: required``) trains a first model the gate would promote; the run waits in approve_promotion
(Required Actions) without moving the alias; a person opens the request, sees the evidence and clicks Approve; the
alias moves and the audit record names the approver. A second run nobody answers is rejected by the timeout and
the champion stays.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from browser.conftest import APPROVAL_DAG, APPROVAL_MODEL, APPROVAL_TIMEOUT_HOURS, WINDOW_DAYS

from pipelines.audit import records
from pipelines.core import tracking

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TASK = "approve_promotion"


def wait_for_task_state(airflow, run_id: str, task_id: str, states: set[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        ti = {t["task_id"]: t for t in airflow.client.task_instances(APPROVAL_DAG, run_id)}.get(task_id, {})
        state = ti.get("state")
        if state in states:
            return state
        run_state = airflow.client.dag_run(APPROVAL_DAG, run_id)["state"]
        assert run_state != "failed", f"{APPROVAL_DAG} {run_id} failed before {task_id} reached {states}"
        assert time.monotonic() < deadline, f"{task_id} of {run_id} still {state} after {timeout_s:.0f} s"
        time.sleep(2)


def trigger(airflow, conf: dict) -> str:
    run_id = f"approval_{len(conf)}_{int(time.time())}"
    airflow.client.trigger(APPROVAL_DAG, logical_date=datetime.now(UTC).isoformat(), run_id=run_id, conf=conf)
    return run_id


def model_tags(version: str, settings) -> dict[str, str]:
    return tracking.client(settings).get_model_version(APPROVAL_MODEL, version).tags


@pytest.fixture(scope="module")
def mlflow_of(airflow):
    """The Airflow's data home (whose MLflow the tasks wrote to); this process's MLflow points back after."""
    yield airflow.settings
    from pipelines.core.settings import get_settings

    tracking.configure_mlflow(get_settings())


@pytest.fixture(scope="module")
def first_run(airflow):
    airflow.client.unpause(APPROVAL_DAG)
    airflow.client.set_scheduled_runs_aside(APPROVAL_DAG)
    return trigger(airflow, {"window_days": WINDOW_DAYS})


def test_a_promotion_waits_for_approval_is_approved_in_the_ui_and_recorded(page, airflow, login, shoot, first_run,
                                                                          mlflow_of):
    wait_for_task_state(airflow, first_run, TASK, {"awaiting_input"}, timeout_s=420)
    decision = airflow.client.xcom(APPROVAL_DAG, first_run, "evaluate_and_promote")
    version = decision["version"]
    assert decision["awaiting_approval"] and tracking.champion(APPROVAL_MODEL, mlflow_of) is None
    assert model_tags(version, mlflow_of)["loopline.promotion"] == "awaiting_approval"

    login(page, airflow, f"/dags/{APPROVAL_DAG}/runs/{first_run}/tasks/{TASK}/required_actions")
    page.get_by_text(f"Promote {APPROVAL_MODEL} v{version} to champion?").first.wait_for()
    page.get_by_text("The gate says").first.wait_for()  # the evidence, rendered from the body's Markdown
    shoot(page, "20-approval-request")
    page.get_by_role("button", name="Approve").click()

    airflow.client.wait_for_run(APPROVAL_DAG, first_run, timeout_s=300)
    assert airflow.client.dag_run(APPROVAL_DAG, first_run)["state"] == "success"
    page.reload()
    shoot(page, "21-approval-answered")
    finalized = airflow.client.xcom(APPROVAL_DAG, first_run, "finalize_promotion")
    assert finalized["promoted"] and finalized["champion"] == version
    assert str(tracking.champion(APPROVAL_MODEL, mlflow_of).version) == version
    assert model_tags(version, mlflow_of)["loopline.approved_by"] == "admin"
    found = [e for e in records.events(datetime.now(UTC) - timedelta(hours=1), settings=mlflow_of)
             if e.subject == f"model {APPROVAL_MODEL}"]
    assert [(e.kind, e.decision, e.approved_by) for e in found] == [("approval", "approved", "admin"),
                                                                   ("promotion", "promoted", "admin")]


def test_a_request_nobody_answers_is_rejected_by_the_timeout_and_the_champion_stays(airflow, first_run, mlflow_of):
    champion = str(tracking.champion(APPROVAL_MODEL, mlflow_of).version)
    # Other hyperparameters (a new version), forced past the gate: it still needs a person's approval.
    run_id = trigger(airflow, {"window_days": WINDOW_DAYS, "max_iter": 60, "force_promote": True})
    wait_for_task_state(airflow, run_id, TASK, {"awaiting_input"}, timeout_s=420)
    decision = airflow.client.xcom(APPROVAL_DAG, run_id, "evaluate_and_promote")
    assert decision["awaiting_approval"] and decision["version"] != champion
    airflow.client.wait_for_run(APPROVAL_DAG, run_id, timeout_s=APPROVAL_TIMEOUT_HOURS * 3600 + 240)
    assert airflow.client.dag_run(APPROVAL_DAG, run_id)["state"] == "success"
    answer = airflow.client.xcom(APPROVAL_DAG, run_id, TASK)
    assert answer["chosen_options"] == ["Reject"] and answer["responded_by_user"] is None
    assert str(tracking.champion(APPROVAL_MODEL, mlflow_of).version) == champion
    tags = model_tags(decision["version"], mlflow_of)
    assert tags["loopline.promotion"] == "rejected" and tags["loopline.approval"] == "timed_out"
