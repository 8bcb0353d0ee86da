"""The real thing: ``airflow standalone`` schedules churn_features by itself and the features go online.

Slow (about a minute): Airflow's api-server, scheduler, dag-processor and triggerer start in their own
data home, the DAG is unpaused through the authenticated REST API, and the scheduler creates and runs
yesterday's interval with the LocalExecutor.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.core.airflow_runtime import standalone, wait_for_dags
from pipelines.core.settings import LooplineSettings
from pipelines.demo import simulator
from pipelines.demo.run import scheduled_run_id
from pipelines.features.feast_store import read_online

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_scheduler_runs_yesterday_and_serves_its_features(tmp_path):
    settings = LooplineSettings(home=tmp_path / "home", airflow_port=8281)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    simulator.land_day(settings.path("landing", "churn"), yesterday, n_customers=40)

    with standalone(settings, log=lambda message: None) as client:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{client.base_url}/api/v2/dags", timeout=10)
        assert refused.value.code == 401

        wait_for_dags(client, ["churn_features"])
        assert client.import_errors() == []
        client.unpause("churn_features")
        run_id = scheduled_run_id(client, yesterday)
        assert client.wait_for_run("churn_features", run_id, timeout_s=600) == "success"

        run = client.dag_run("churn_features", run_id)
        assert run["run_type"] == "scheduled"
        states = {t["task_id"]: t["state"] for t in client.task_instances("churn_features", run_id)}
        assert set(states.values()) == {"success"} and len(states) == 8  # the 7 steps and check_start_date
        events = client.get("/api/v2/assets/events?limit=50")["asset_events"]
        assert any(e["source_dag_id"] == "churn_features" and e["source_run_id"] == run_id for e in events)

    expected = simulator.expected_customer_daily_features(settings.path("landing", "churn"), yesterday)
    online = read_online("churn", "churn_model_v1", "customer_id", expected["customer_id"].tolist(), settings=settings)
    assert online.sort_values("customer_id")["sessions_30d"].tolist() == expected["sessions_30d"].tolist()
