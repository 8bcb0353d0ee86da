"""``make demo``: the churn feature pipeline run by a real Airflow scheduler on embedded defaults.

1. Lands simulated raw data: 30 days of history, plus one day with a burst of nulls.
2. Starts Airflow (api-server, scheduler, dag-processor, triggerer) with its state under the data home.
3. Unpauses ``churn_features``: the scheduler runs yesterday's interval on its own; two earlier days are
   triggered through the REST API, and so is the faulty day, which validation must quarantine.
4. Waits for every run and prints what ran, row counts, validation verdicts and the features online.

Exits non-zero when a run that should succeed fails, or the faulty day is not caught.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from pipelines.airflow_runtime import ADMIN_USER, AirflowClient, standalone, wait_for_dags
from pipelines.config import load_config
from pipelines.settings import REPO_ROOT, get_settings

DAG_ID = "churn_features"
HISTORY_DAYS = 30
FAULT = "null_burst"
TASK_ORDER = ["wait_for_partition", "check_landing", "build_mart", "validate_mart", "publish_features",
              "apply_definitions", "materialize_interval"]


def say(message: str) -> None:
    print(f"[demo {datetime.now():%H:%M:%S}] {message}", flush=True)


@dataclass
class DemoRun:
    ds: date
    run_id: str
    expect_failure: bool = False
    state: str = "queued"


def land_data(today: date) -> tuple[list[date], date]:
    """Land 30 days of history ending yesterday, and a faulty day before the days the demo runs."""
    from pipelines import simulator

    config = load_config(REPO_ROOT / "dags" / "configs" / f"{DAG_ID}.yaml")
    landing = get_settings().resolve(config.landing.path)
    first = today - timedelta(days=HISTORY_DAYS)
    simulator.land_days(landing, first, HISTORY_DAYS)
    run_days = [today - timedelta(days=n) for n in (3, 2, 1)]
    faulty_day = today - timedelta(days=4)
    simulator.land_day(landing, faulty_day, faults=[FAULT])
    say(f"Landed {HISTORY_DAYS} days of raw churn data ({first} → {today - timedelta(days=1)}) in {landing}; "
        f"{faulty_day} carries a '{FAULT}' fault")
    return run_days, faulty_day


def trigger_day(client: AirflowClient, ds: date) -> str:
    start = datetime(ds.year, ds.month, ds.day, tzinfo=timezone.utc)
    run_id = f"demo__{ds.isoformat()}"
    try:
        client.trigger(DAG_ID, logical_date=start.isoformat(), run_id=run_id,
                       data_interval=(start.isoformat(), (start + timedelta(days=1)).isoformat()))
    except Exception as exc:  # a re-run of the demo finds the run from last time: run it again
        if "409" not in str(exc):
            raise
        client.post(f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
                    {"dag_run_id": run_id, "dry_run": False, "reset_dag_runs": True, "only_failed": False})
    return run_id


def scheduled_run_id(client: AirflowClient, ds: date, timeout_s: float = 120) -> str:
    """The run the scheduler creates by itself for yesterday's interval once the DAG is unpaused."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=scheduled&limit=50")["dag_runs"]
        for run in runs:
            if run["data_interval_start"].startswith(ds.isoformat()):
                if run["state"] in ("success", "failed"):  # from an earlier demo: run it again
                    client.post(f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
                                {"dag_run_id": run["dag_run_id"], "dry_run": False, "reset_dag_runs": True,
                                 "only_failed": False})
                return run["dag_run_id"]
        time.sleep(2)
    raise TimeoutError(f"the scheduler did not create the scheduled run for {ds} within {timeout_s:.0f} s")


def task_result(client: AirflowClient, run_id: str, task_id: str) -> dict:
    try:
        return client.xcom(DAG_ID, run_id, task_id) or {}
    except Exception:
        return {}


def summarize(client: AirflowClient, runs: list[DemoRun]) -> bool:
    """Print one block per run; return whether every run ended as expected."""
    from pipelines.features import read_online

    ok = True
    print("\n" + "=" * 78)
    print(f"Loopline demo: {DAG_ID}, run by the Airflow scheduler (LocalExecutor, SQLite)")
    print("=" * 78)
    for run in sorted(runs, key=lambda r: r.ds):
        as_expected = (run.state == "failed") if run.expect_failure else (run.state == "success")
        ok &= as_expected
        print(f"\n{run.ds}  run {run.run_id}: {run.state.upper()}{'' if as_expected else '  <-- unexpected'}")
        tis = {t["task_id"]: t["state"] for t in client.task_instances(DAG_ID, run.run_id)}
        print("  tasks: " + ", ".join(f"{t}={tis[t]}" for t in TASK_ORDER if t in tis))
        rows = task_result(client, run.run_id, "check_landing")
        if rows:
            print("  raw rows: " + ", ".join(f"{t} {n}" for t, n in rows.items()))
        mart = task_result(client, run.run_id, "build_mart")
        if mart:
            print(f"  dbt build: {mart.get('models_built')} models, {mart.get('tests_passed')} tests passed, "
                  f"{mart.get('mart_rows')} mart rows")
        verdict = task_result(client, run.run_id, "validate_mart")
        if verdict:
            print(f"  Great Expectations: PASSED {verdict['expectations']} expectations on {verdict['rows']} rows")
        elif run.state == "failed":
            print(f"  Great Expectations / contract: FAILED, {_failure_reason(run.ds)}")
        online = task_result(client, run.run_id, "materialize_interval")
        if online:
            print(f"  Feast: {online['rows']} rows of {', '.join(online['feature_views'])} materialized "
                  f"for [{online['start'][:10]}, {online['end'][:10]})")
    config = load_config(REPO_ROOT / "dags" / "configs" / f"{DAG_ID}.yaml")
    sample = read_online(config.feast.project, config.feast.feature_service, config.feast.entity_key, [1, 2, 3])
    print("\nOnline features now served by Feast (churn_model_v1, customers 1-3):")
    print(sample.to_string(index=False))
    return ok


def _failure_reason(ds: date) -> str:
    import json

    reason = get_settings().quarantine_dir / "churn" / f"ds={ds.isoformat()}" / "reason.json"
    if reason.exists():
        return f"{json.loads(reason.read_text())['reason']}; quarantined to {reason.parent}"
    return "see the task log"


def main() -> int:
    settings = get_settings()
    today = datetime.now(timezone.utc).date()
    say(f"Data home: {settings.data_home}")
    run_days, faulty_day = land_data(today)
    with standalone(settings, log=say) as client:
        wait_for_dags(client, [DAG_ID])
        say(f"{DAG_ID} parsed; triggering {run_days[0]}, {run_days[1]} and the faulty {faulty_day}, "
            "then unpausing so the scheduler runs yesterday on its own")
        runs = [DemoRun(faulty_day, trigger_day(client, faulty_day), expect_failure=True)]
        runs += [DemoRun(ds, trigger_day(client, ds)) for ds in run_days[:2]]
        client.unpause(DAG_ID)
        runs.append(DemoRun(run_days[2], scheduled_run_id(client, run_days[2])))
        for run in runs:
            run.state = client.wait_for_run(DAG_ID, run.run_id, timeout_s=1200, progress=say)
        ok = summarize(client, runs)
        print(f"\nAirflow UI: {client.base_url.replace('127.0.0.1', 'localhost')} (stopped now; `make up` "
              f"starts it again). Log in as '{ADMIN_USER}' with the password in "
              f"{settings.airflow_home / 'simple_auth_manager_passwords.json.generated'}.")
        print(f"State: {settings.data_home}")
    print("\nDemo " + ("succeeded." if ok else "FAILED: a run did not end as expected."))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
