"""``make demo``: Loopline's pipelines run by a real Airflow scheduler on embedded defaults.

1. Lands simulated raw churn data: 30 days of history for 3,000 customers, one day with a burst of nulls.
2. Starts Airflow (api-server, scheduler, dag-processor, triggerer) with its state under the data home.
3. Features: unpauses ``churn_features``; the scheduler runs yesterday's interval on its own, five earlier
   days and the faulty day are triggered through the REST API. Validation must quarantine the faulty day.
4. Training: triggers ``churn_training`` on the days just built; it trains, registers in MLflow, promotes
   by the ``champion`` alias and scores the newest features.
5. RAG and LoRA: builds the docs index (``docs_rag_index``), re-runs it on the unchanged corpus; the index
   Asset starts ``assistant_lora_tune`` by itself, which tunes a LoRA adapter on the docs.
6. The closed loop: drift is injected into the last days, ``churn_drift_check`` fires, its ``churn_retrain``
   Asset event starts ``churn_training``, and the challenger is promoted or not, with the reason.

Each step prints what ran: row counts, validation verdicts, features online, the champion and its metrics,
the index counts and retrieval metrics, base and tuned perplexity, the drift evidence.

Exits non-zero when a run that should succeed fails, or the faulty day is not caught.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pipelines.core.airflow_runtime import ADMIN_USER, AirflowClient, standalone, wait_for_dags
from pipelines.core.home import DataHome
from pipelines.core.settings import get_settings
from pipelines.templates import load_named

FEATURES_DAG = "churn_features"
TRAINING_DAG = "churn_training"
HISTORY_DAYS = 30
FEATURE_DAYS = 6  # days the demo builds features for: enough labelled rows to train on
CUSTOMERS = 3000
FAULT = "null_burst"
RAG_DAG = "docs_rag_index"
LORA_DAG = "assistant_lora_tune"
DRIFT_DAYS = 3
FEATURE_TASKS = ["wait_for_partition", "check_landing", "build_mart", "validate_mart", "publish_features",
                 "apply_definitions", "materialize_interval"]


def say(message: str) -> None:
    print(f"[demo {datetime.now():%H:%M:%S}] {message}", flush=True)


@dataclass
class DemoRun:
    dag_id: str
    label: str
    run_id: str
    expect_failure: bool = False
    state: str = "queued"

    @property
    def as_expected(self) -> bool:
        return self.state == ("failed" if self.expect_failure else "success")


def land_data(today: date) -> tuple[list[date], date]:
    """30 days of history ending yesterday; the day before the feature days carries a fault."""
    from pipelines.demo import simulator
    config = load_named(FEATURES_DAG)
    landing = get_settings().resolve(config.landing.path)
    first = today - timedelta(days=HISTORY_DAYS)
    simulator.land_days(landing, first, HISTORY_DAYS, n_customers=CUSTOMERS)
    feature_days = [today - timedelta(days=n) for n in range(FEATURE_DAYS, 0, -1)]
    faulty_day = today - timedelta(days=FEATURE_DAYS + 1)
    simulator.land_day(landing, faulty_day, n_customers=CUSTOMERS, faults=[FAULT])
    say(f"Landed {HISTORY_DAYS} days of raw churn data for {CUSTOMERS:,} customers ({first} → "
        f"{today - timedelta(days=1)}) in {landing}; {faulty_day} carries a '{FAULT}' fault")
    return feature_days, faulty_day


def trigger_day(client: AirflowClient, ds: date) -> str:
    """Run ``churn_features`` for the day ``ds`` (again, if an earlier demo ran it)."""
    start = datetime(ds.year, ds.month, ds.day, tzinfo=UTC)
    return client.trigger_or_rerun(FEATURES_DAG, f"demo__{ds.isoformat()}", logical_date=start.isoformat(),
                                   data_interval=(start.isoformat(), (start + timedelta(days=1)).isoformat()))


def scheduled_run_id(client: AirflowClient, ds: date, dag_id: str = FEATURES_DAG, timeout_s: float = 120) -> str:
    """The run the scheduler creates by itself for yesterday's interval once the DAG is unpaused."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns?run_type=scheduled&limit=50")["dag_runs"]
        for run in runs:
            if run["data_interval_start"].startswith(ds.isoformat()):
                if run["state"] in ("success", "failed"):  # from an earlier demo: run it again
                    client.clear_run(dag_id, run["dag_run_id"])
                return run["dag_run_id"]
        time.sleep(2)
    raise TimeoutError(f"the scheduler did not create the scheduled run of {dag_id} for {ds} within {timeout_s:.0f} s")


def trigger_now(client: AirflowClient, dag_id: str, run_id: str, conf: dict | None = None) -> str:
    """Trigger a run of ``dag_id`` now (again, if an earlier demo made ``run_id``)."""
    return client.trigger_or_rerun(dag_id, run_id, logical_date=datetime.now(UTC).isoformat(), conf=conf)


def trigger_training(client: AirflowClient, today: date) -> str:
    conf = {"window_end": today.isoformat(), "window_days": FEATURE_DAYS + 1}
    return trigger_now(client, TRAINING_DAG, f"demo__{today.isoformat()}", conf)


def result(client: AirflowClient, run: DemoRun, task_id: str) -> dict:
    return client.xcom_or_none(run.dag_id, run.run_id, task_id) or {}


def _failure_reason(ds: date) -> str:
    reason = DataHome().quarantine("churn") / f"ds={ds.isoformat()}" / "reason.json"
    if reason.exists():
        return f"{json.loads(reason.read_text())['reason']}; quarantined to {reason.parent}"
    return "see the task log"


def print_features(client: AirflowClient, runs: list[DemoRun]) -> None:
    from pipelines.features.feast_store import read_online

    print(f"\n--- {FEATURES_DAG}: landing → dbt → Great Expectations → Feast ---")
    for run in sorted(runs, key=lambda r: r.label):
        print(f"\n{run.label}  run {run.run_id}: {run.state.upper()}{'' if run.as_expected else '  <-- unexpected'}")
        tis = {t["task_id"]: t["state"] for t in client.task_instances(run.dag_id, run.run_id)}
        print("  tasks: " + ", ".join(f"{t}={tis[t]}" for t in FEATURE_TASKS if t in tis))
        if rows := result(client, run, "check_landing"):
            print("  raw rows: " + ", ".join(f"{t} {n}" for t, n in rows.items()))
        if mart := result(client, run, "build_mart"):
            print(f"  dbt build: {mart.get('models_built')} models, {mart.get('tests_passed')} tests passed, "
                  f"{mart.get('mart_rows')} mart rows")
        if verdict := result(client, run, "validate_mart"):
            print(f"  Great Expectations: PASSED {verdict['expectations']} expectations on {verdict['rows']} rows")
        elif run.state == "failed":
            print(f"  Great Expectations / contract: FAILED, {_failure_reason(date.fromisoformat(run.label))}")
        if online := result(client, run, "materialize_interval"):
            print(f"  Feast: {online['rows']} rows of {', '.join(online['feature_views'])} materialized "
                  f"for [{online['start'][:10]}, {online['end'][:10]})")
    config = load_named(FEATURES_DAG)
    sample = read_online(config.feast.project, config.feast.feature_service, config.feast.entity_key, [1, 2, 3])
    print("\nOnline features now served by Feast (churn_model_v1, customers 1-3):")
    print(sample.to_string(index=False))


def print_training(client: AirflowClient, run: DemoRun) -> None:
    from pipelines.core import tracking
    print(f"\n--- {TRAINING_DAG}: Feast training set → MLflow → champion alias → scoring ---")
    print(f"run {run.run_id}: {run.state.upper()}{'' if run.as_expected else '  <-- unexpected'}")
    if info := result(client, run, "build_training_set"):
        print(f"  training set [{info['window_start']}, {info['window_end']}): {info['rows']} rows "
              f"({info['train_rows']} train, {info['holdout_rows']} holdout), label rate {info['label_rate']}, "
              f"{info['labels_without_features']} labels without features left out")
    if checked := result(client, run, "validate_training_set"):
        print(f"  Great Expectations: PASSED {checked['expectations']} expectations")
    if trained := result(client, run, "train_and_register"):
        note = (" (these inputs were trained before, e.g. by the weekly run the scheduler starts when the DAG is "
                "unpaused: that version is reused)" if trained.get("reused") else "")
        print(f"  registered churn version {trained['version']}{note}")
    if decision := result(client, run, "evaluate_and_promote"):
        print(f"  promotion: {'PROMOTED' if decision['promoted'] else 'kept the champion'}: {decision['reason']}")
    champion = tracking.champion("churn")
    if champion is not None:
        metrics = tracking.client().get_run(champion.run_id).data.metrics
        shown = ", ".join(f"{k.removeprefix('holdout_')} {v:.3f}" for k, v in sorted(metrics.items())
                          if k in ("holdout_roc_auc", "holdout_pr_auc", "holdout_log_loss", "holdout_brier"))
        print(f"  champion: churn v{champion.version} ({champion.tags.get('family')}): {shown}")
    if scored := result(client, run, "score_batch"):
        print(f"  batch scoring: {scored['rows']} customers of {scored['ds']} scored with v{scored['model_version']}, "
              f"mean {scored['prediction_column']} {scored['mean_prediction']} → {scored['path']}")


def runs_since(client: AirflowClient, dag_id: str, since: datetime) -> list[dict]:
    def created(run: dict) -> datetime:
        # A scheduled run's run_after is its cron time, maybe hours ago; queued_at is when it was made.
        stamp = run.get("queued_at") or run["run_after"]
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]
    return sorted((r for r in runs if created(r) >= since), key=created)


def asset_triggered_runs(client: AirflowClient, dag_id: str, since: datetime) -> list[dict]:
    return [r for r in runs_since(client, dag_id, since) if r["run_type"] == "asset_triggered"]


def run_rag_and_lora(client: AirflowClient, today: date) -> bool:
    """Build the docs index twice (the second time unchanged); follow the LoRA run its Asset starts."""
    from pipelines.demo.lora import summarize_run as summarize_lora
    from pipelines.demo.lora import unexpected as lora_problems
    from pipelines.demo.rag import summarize_run, summarize_runs, unexpected

    started = datetime.now(UTC)
    client.unpause(LORA_DAG)
    client.unpause(RAG_DAG)
    rag_runs = []
    for n in (1, 2):
        run = DemoRun(RAG_DAG, f"rag {n}", trigger_now(client, RAG_DAG, f"demo__{today.isoformat()}__{n}"))
        say(f"Triggered {RAG_DAG} ({run.run_id})")
        run.state = client.wait_for_run(run.dag_id, run.run_id, timeout_s=1800, progress=say)
        rag_runs.append(run)
    # Unpausing also lets the scheduler start the DAG's own cron run: show every run since, in order.
    scheduled = [DemoRun(RAG_DAG, "scheduled", r["dag_run_id"], state=r["state"])
                 for r in runs_since(client, RAG_DAG, started) if r["run_type"] == "scheduled"]
    for run in scheduled:
        run.state = client.wait_for_run(RAG_DAG, run.run_id, timeout_s=1800, progress=say)
    summaries = [result(client, run, "record_index") for run in rag_runs]
    print(f"\n--- {RAG_DAG}: docs → chunks → embeddings → blue/green index, evaluated ---")
    problems = [f"{r.run_id} ended {r.state}" for r in [*scheduled, *rag_runs] if not r.as_expected]
    for run in scheduled:
        if summary := result(client, run, "record_index"):
            print("\n".join(summarize_run(f"{run.run_id} (started by the scheduler at unpause)", summary)))
    if all(summaries):
        print(summarize_runs(*summaries))
        problems += unexpected(*summaries)

    published = [s for s in (result(client, r, "record_index") for r in [*scheduled, *rag_runs])
                 if s and s.get("mode") != "unchanged"]
    lora_runs = asset_triggered_runs(client, LORA_DAG, started)
    if published:
        say(f"Waiting for the {LORA_DAG} run(s) the docs index Asset started")
        deadline = time.monotonic() + 1800
        while not lora_runs and time.monotonic() < deadline:
            time.sleep(3)
            lora_runs = asset_triggered_runs(client, LORA_DAG, started)
    elif not lora_runs:
        # A data home from an earlier demo: the docs did not change, so no index event starts the tuning.
        say(f"The docs index did not change since the last demo (no Asset event): triggering {LORA_DAG} by hand")
        run_id = trigger_now(client, LORA_DAG, f"demo__{today.isoformat()}")
        lora_runs = [client.dag_run(LORA_DAG, run_id)]
    states = [client.wait_for_run(LORA_DAG, r["dag_run_id"], timeout_s=1800, progress=say) for r in lora_runs]
    print(f"\n--- {LORA_DAG}: {len(lora_runs)} run(s) ---")
    if not lora_runs:
        problems.append(f"the docs index Asset started no {LORA_DAG} run")
    for run, state in zip(lora_runs, states):
        summary = result(client, DemoRun(LORA_DAG, "lora", run["dag_run_id"]), "register_adapter")
        print(f"run {run['dag_run_id']} ({run['run_type']}): {state.upper()}")
        if summary:
            print(summarize_lora(summary))
            problems += lora_problems(summary)
        if state != "success":
            problems.append(f"{LORA_DAG} {run['dag_run_id']} ended {state}")
    for problem in problems:
        print(f"  <-- unexpected: {problem}")
    return not problems


def main() -> int:
    settings = get_settings()
    today = datetime.now(UTC).date()
    say(f"Data home: {settings.data_home}")
    feature_days, faulty_day = land_data(today)
    with standalone(settings, log=say) as client:
        wait_for_dags(client, [FEATURES_DAG, TRAINING_DAG, RAG_DAG, LORA_DAG, "churn_drift_check"])
        say(f"DAGs parsed; triggering {FEATURES_DAG} for {feature_days[0]} … {feature_days[-2]} and the faulty "
            f"{faulty_day}, then unpausing it so the scheduler runs {feature_days[-1]} on its own")
        runs = [DemoRun(FEATURES_DAG, str(faulty_day), trigger_day(client, faulty_day), expect_failure=True)]
        runs += [DemoRun(FEATURES_DAG, str(ds), trigger_day(client, ds)) for ds in feature_days[:-1]]
        client.unpause(FEATURES_DAG)
        runs.append(DemoRun(FEATURES_DAG, str(feature_days[-1]), scheduled_run_id(client, feature_days[-1])))
        for run in runs:
            run.state = client.wait_for_run(run.dag_id, run.run_id, timeout_s=1200, progress=say)

        say(f"Features done; triggering {TRAINING_DAG} on the labels of the last {FEATURE_DAYS + 1} days")
        client.unpause(TRAINING_DAG)
        for run_id in client.set_scheduled_runs_aside(TRAINING_DAG):
            say(f"Set aside {TRAINING_DAG} {run_id} (marked failed), the weekly run unpausing started: its window "
                "needs feature days this demo did not build, and it would hold the demo's run in the queue")
        training = DemoRun(TRAINING_DAG, "training", trigger_training(client, today))
        training.state = client.wait_for_run(training.dag_id, training.run_id, timeout_s=1200, progress=say)

        print("\n" + "=" * 78)
        print("Loopline demo, run by the Airflow scheduler (LocalExecutor, SQLite, embedded stores)")
        print("=" * 78)
        print_features(client, runs)
        print_training(client, training)

        say(f"Building the docs index with {RAG_DAG}; its Asset starts {LORA_DAG}")
        rag_and_lora_ok = run_rag_and_lora(client, today)

        from pipelines.demo.drift import run_drift_loop

        say("Closing the loop: injecting drift into the last days")
        loop_ok = run_drift_loop(client, today, drift_days=DRIFT_DAYS, log=say)
        print(f"\nAirflow UI: {client.base_url.replace('127.0.0.1', 'localhost')} (stopped now; `make up` "
              f"starts it again). Log in as '{ADMIN_USER}' with the password in "
              f"{settings.airflow_home / 'simple_auth_manager_passwords.json.generated'}.")
        print(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_uri}")
        print(f"State: {settings.data_home}")
    ok = all(run.as_expected for run in [*runs, training]) and rag_and_lora_ok and loop_ok
    print("\nDemo " + ("succeeded." if ok else "FAILED: a run did not end as expected."))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
