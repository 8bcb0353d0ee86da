"""History through Airflow 3's own backfill: ``POST /api/v2/backfills`` over three landed days of churn_features.

Slow (about 2 minutes): ``airflow standalone`` in a data home of its own; the scheduler runs the backfill's
runs one day after the other (the first before the DAG's start_date), and the online store ends holding the
last day.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from pipelines.core.airflow_runtime import standalone, wait_for_dags
from pipelines.core.settings import LooplineSettings
from pipelines.demo import simulator
from pipelines.features.feast_store import materialized_days, read_online

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The day before churn_features' start_date (2026-11-01) too: Airflow creates every task of a backfill's run
# whatever their start date, so check_start_date lets it pass and the day is done like the others.
FIRST = date(2026, 10, 31)
DAYS = [FIRST + timedelta(days=n) for n in range(3)]


def test_a_backfill_runs_each_day_in_order_and_serves_the_last(tmp_path):
    settings = LooplineSettings(home=tmp_path / "home", airflow_port=8321)
    landing = settings.path("landing", "churn")
    simulator.land_days(landing, FIRST, len(DAYS), n_customers=30)

    with standalone(settings, log=lambda message: None) as client:
        wait_for_dags(client, ["churn_features"])
        client.unpause("churn_features")  # the scheduler runs no run of a paused DAG, a backfill's included
        backfill = client.backfill("churn_features", f"{DAYS[0]}T00:00:00Z", f"{DAYS[-1]}T00:00:00Z",
                                   max_active_runs=1)
        assert backfill["max_active_runs"] == 1
        runs = client.wait_for_backfill_runs("churn_features", len(DAYS), timeout_s=600)

        assert [(run["logical_date"][:10], run["run_type"], run["state"]) for run in runs] == \
            [(str(day), "backfill", "success") for day in DAYS]
        assert [run["data_interval_start"][:10] for run in runs] == [str(day) for day in DAYS]
        # One day after the other: each run started once the one before had ended.
        assert all(later["start_date"] >= earlier["end_date"] for earlier, later in zip(runs, runs[1:]))
        for run in runs:
            states = {t["task_id"]: t["state"] for t in client.task_instances("churn_features", run["dag_run_id"])}
            assert set(states.values()) == {"success"} and len(states) == 8

    assert materialized_days("churn", ["customer_daily_activity", "customer_daily_profile"], settings) == set(DAYS)
    expected = simulator.expected_customer_daily_features(landing, DAYS[-1])
    online = read_online("churn", "churn_model_v1", "customer_id", expected["customer_id"].tolist(), settings=settings)
    assert online.sort_values("customer_id")["sessions_30d"].tolist() == expected["sessions_30d"].tolist()
