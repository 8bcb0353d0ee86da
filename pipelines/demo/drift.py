"""``make demo``'s closed loop: drift injected → churn_drift_check fires → churn_retrain → churn_training.

Call :func:`run_drift_loop` after the demo's first training run (a champion exists and the last
``FEATURE_DAYS`` days have features). It re-lands the last ``drift_days`` days with covariate drift,
rebuilds their features through ``churn_features``, triggers ``churn_drift_check`` on exactly those days,
waits for the ``churn_training`` run the scheduler starts for the Asset event (run type
``asset_triggered``), and prints the chain with the promotion decision and its reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

FEATURES_DAG = "churn_features"
DRIFT_DAG = "churn_drift_check"
TRAINING_DAG = "churn_training"
RETRAIN_ASSET = "churn_retrain"
CUSTOMERS = 3000


def demo_drift():
    """A shift a person would notice: fewer sessions, higher charges, bigger purchases."""
    from pipelines.demo.simulator import CovariateDrift

    return CovariateDrift(session_rate_factor=0.35, charges_shift=35.0, purchase_amount_factor=2.5)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def rerun_features_day(client, day: date) -> str:
    """Run churn_features again for ``day``: clear the run of that interval if there is one, else trigger it."""
    start = _midnight(day).isoformat().replace("+00:00", "Z")
    runs = client.get(f"/api/v2/dags/{FEATURES_DAG}/dagRuns?logical_date_gte={start}&logical_date_lte={start}")
    if runs["dag_runs"]:
        run_id = runs["dag_runs"][0]["dag_run_id"]
        client.clear_run(FEATURES_DAG, run_id)
        return run_id
    from pipelines.demo.run import trigger_day

    return trigger_day(client, day)


def wait_for_asset_triggered_run(client, dag_id: str, source_run_id: str, timeout_s: float = 600,
                                 poll_s: float = 3) -> dict:
    """The run of ``dag_id`` the scheduler created for the Asset event emitted by ``source_run_id``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns?run_type=asset_triggered&limit=20")["dag_runs"]
        for run in runs:
            events = client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/upstreamAssetEvents")
            if any(e["source_run_id"] == source_run_id for e in events["asset_events"]):
                return run
        time.sleep(poll_s)
    raise TimeoutError(f"no asset-triggered run of {dag_id} for the event of {source_run_id} within {timeout_s:.0f} s")


def _emitting_run(client, since: datetime) -> dict | None:
    """The newest churn_retrain event emitted by churn_drift_check since ``since``."""
    events = client.get(f"/api/v2/assets/events?source_dag_id={DRIFT_DAG}&limit=50&order_by=-timestamp")
    for event in events["asset_events"]:
        stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        if stamp >= since and event.get("source_task_id") == "emit_retrain":
            return event
    return None


def describe_check(evidence: dict | None, verdict: dict | None) -> list[str]:
    """Lines about one drift check: what drifted, the report, the verdict."""
    if not evidence:
        return ["  check_drift: no result (see the task log)"]
    lines = [f"  check_drift: window {evidence['window'][0]} … {evidence['window'][1]} (exclusive), "
             f"{evidence['current']['rows']} rows against churn v{evidence['reference']['version']}'s training set "
             f"({evidence['reference']['rows']} rows)",
             f"    data drift: {len(evidence['drifted_columns'])} of {evidence['columns']} columns "
             f"(share {evidence['drift_share']:.2f}): {', '.join(evidence['drifted_columns']) or '-'}",
             f"    prediction drift: score {evidence['prediction_drift']}; ROC AUC on late labels: "
             f"{evidence['roc_auc'] if evidence['roc_auc'] is not None else evidence.get('performance_note')}",
             f"    report: {evidence['report_path']} (MLflow run {evidence['mlflow_run_id']})"]
    if verdict:
        lines.append(f"  judge_drift: {'DRIFT' if verdict['drifted'] else 'no drift'}: "
                     + "; ".join(verdict["reasons"]))
    return lines


def run_drift_loop(client, today: date, *, drift_days: int = 3, log: Callable[[str], None] = print,
                   timeout_s: float = 1500) -> bool:
    """Inject drift into the last ``drift_days`` days and follow the loop through Airflow; print the chain.

    Args:
        client: an :class:`~pipelines.core.airflow_runtime.AirflowClient` of the running Airflow.
        today: the demo's today; the drifted days are ``today - drift_days`` … ``today - 1``.
        drift_days: days re-landed with drift and checked (the drift check's window).
        log: progress lines.

    Returns:
        Whether the loop closed: the check emitted ``churn_retrain`` and the triggered training succeeded.
    """
    started = datetime.now(UTC)
    if not rebuild_drifted_features(client, today, drift_days, log, timeout_s):
        return False
    event = run_drift_check(client, today, drift_days, started, log, timeout_s)
    if event is None:
        print("  nothing was emitted: the loop stops here")
        return False
    return follow_retraining(client, event, log, timeout_s)


def rebuild_drifted_features(client, today: date, drift_days: int, log: Callable[[str], None],
                             timeout_s: float) -> bool:
    """Re-land the last ``drift_days`` days with covariate drift and rebuild their features through Airflow."""
    from pipelines.core.settings import get_settings
    from pipelines.demo import simulator
    from pipelines.templates import load_named

    landing = get_settings().resolve(load_named(FEATURES_DAG).landing.path)
    first = today - timedelta(days=drift_days)
    drift = demo_drift()
    simulator.land_days(landing, first, drift_days, n_customers=CUSTOMERS, drift=drift, drift_start=first)
    log(f"Injected covariate drift ({drift}) into {first} … {today - timedelta(days=1)}; rebuilding their features")
    feature_runs = [rerun_features_day(client, first + timedelta(days=n)) for n in range(drift_days)]
    for run_id in feature_runs:
        state = client.wait_for_run(FEATURES_DAG, run_id, timeout_s=timeout_s, progress=log)
        if state != "success":
            log(f"{FEATURES_DAG} {run_id} ended {state}: the drift loop cannot go on")
            return False
    return True


def run_drift_check(client, today: date, drift_days: int, started: datetime, log: Callable[[str], None],
                    timeout_s: float) -> dict | None:
    """Trigger the drift check on the drifted days, print what it found; return the retrain event, if any."""
    first = today - timedelta(days=drift_days)
    client.unpause(DRIFT_DAG)
    drift_run = client.trigger_or_rerun(DRIFT_DAG, f"demo_drift__{today.isoformat()}",
                                        logical_date=datetime.now(UTC).isoformat(),
                                        conf={"window_end": today.isoformat(), "window_days": drift_days})
    log(f"Triggered {DRIFT_DAG} ({drift_run}) on [{first}, {today})")
    drift_state = client.wait_for_run(DRIFT_DAG, drift_run, timeout_s=timeout_s, progress=log)
    tis = {t["task_id"]: t for t in client.task_instances(DRIFT_DAG, drift_run)}
    evidence = client.xcom_or_none(DRIFT_DAG, drift_run, "check_drift")
    verdict = client.xcom_or_none(DRIFT_DAG, drift_run, "judge_drift")

    print(f"\n--- drift loop: {DRIFT_DAG} → Asset {RETRAIN_ASSET} → {TRAINING_DAG} ---")
    print(f"drift injected on {first} … {today - timedelta(days=1)}: {demo_drift()}")
    print(f"{DRIFT_DAG} run {drift_run}: {drift_state.upper()}")
    for line in describe_check(evidence, verdict):
        print(line)
    emit = tis.get("emit_retrain", {})
    event = _emitting_run(client, started)
    if emit.get("state") == "success":
        print(f"  emit_retrain: emitted {RETRAIN_ASSET}")
    else:
        print(f"  emit_retrain: {emit.get('state')} (the reason is in its log: "
              "no drift past the policy, or a guard rail)")
        if event:
            print(f"  {RETRAIN_ASSET} was emitted by {event['source_run_id']} instead (the daily cap allows one)")
    return event


def follow_retraining(client, event: dict, log: Callable[[str], None], timeout_s: float) -> bool:
    """Follow the training run the scheduler starts for the retrain event; print the promotion decision."""
    extra = event.get("extra") or {}
    print(f"  event extra: signals {extra.get('signals')}, drift share {extra.get('drift_share')}, "
          f"report {extra.get('report_uri')}, MLflow run {extra.get('mlflow_run_id')}")
    log(f"Waiting for the {TRAINING_DAG} run the scheduler starts for {RETRAIN_ASSET}")
    training = wait_for_asset_triggered_run(client, TRAINING_DAG, event["source_run_id"], timeout_s=timeout_s)
    state = client.wait_for_run(TRAINING_DAG, training["dag_run_id"], timeout_s=timeout_s, progress=log)
    training = client.dag_run(TRAINING_DAG, training["dag_run_id"])
    delay = (datetime.fromisoformat(training["start_date"].replace("Z", "+00:00"))
             - datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))).total_seconds()
    print(f"{TRAINING_DAG} run {training['dag_run_id']} (run type {training['run_type']}, started {delay:.0f} s "
          f"after the event): {state.upper()}")
    trained = client.xcom_or_none(TRAINING_DAG, training["dag_run_id"], "train_and_register") or {}
    decision = client.xcom_or_none(TRAINING_DAG, training["dag_run_id"], "evaluate_and_promote") or {}
    if trained:
        print(f"  challenger: churn version {trained.get('version')}"
              + (" (same inputs as before: reused)" if trained.get("reused") else ""))
    if decision:
        print(f"  promotion: {'PROMOTED' if decision.get('promoted') else 'kept the champion'}: "
              f"{decision.get('reason')}")
        print(f"  champion now: churn v{decision.get('champion')}")
    return state == "success"
