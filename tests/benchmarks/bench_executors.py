"""Executor benchmark (``make bench``): two Celery workers against the LocalExecutor, same DAG, one run.

The DAG is ``tests/benchmarks/dags/executor_fanout.py``: a start task, 24 small parallel tasks, a finish
task; ``--runs`` runs of it are triggered at once. Both stacks get the same number of task slots
(``--slots``, default 2: two Celery workers with one slot each, against ``parallelism`` 2 for the
LocalExecutor) so the figures compare what each executor adds, not how many tasks run side by side.

1. **LocalExecutor**: ``airflow standalone`` on SQLite (the embedded default).
2. **CeleryExecutor**: the production profile (``pipelines.core.production.production_stack``): Postgres
   metadata database, Redis broker, two ``airflow celery worker`` processes. Needs this machine's
   PostgreSQL and Redis; its databases (prefix ``loopline_bench``) are dropped afterwards.

Figures, from the task instances Airflow recorded: task throughput of the fan-out runs (task instances
per minute from the first task's start to the last task's end; the median task duration shows the task
process's own start-up), and scheduling latency from one run of ``executor_chain``, ten small tasks one
after the other: the gap from one task's end to the next one's start (median and max of 9 gaps), where no
task waits for a free slot.

Run: ``python tests/benchmarks/bench_executors.py [--runs 3] [--slots 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DAGS = Path(__file__).resolve().parent / "dags"
DAG_ID = "executor_fanout"
CHAIN_DAG_ID = "executor_chain"


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _run_and_collect(client, dag_id: str, runs: int) -> list[dict]:
    client.unpause(dag_id)
    now = datetime.now(UTC)
    run_ids = []
    for index in range(runs):
        run_id = f"bench_{now:%H%M%S}_{index}"
        client.trigger(dag_id, logical_date=now.replace(microsecond=index).isoformat(), run_id=run_id)
        run_ids.append(run_id)
    states = [client.wait_for_run(dag_id, run_id, timeout_s=900, poll_s=1) for run_id in run_ids]
    if set(states) != {"success"}:
        raise RuntimeError(f"{dag_id} benchmark runs ended {states}")
    return [ti for run_id in run_ids for ti in client.task_instances(dag_id, run_id)]


def measure(client, runs: int) -> dict[str, float]:
    from pipelines.core.airflow_runtime import wait_for_dags

    wait_for_dags(client, [DAG_ID, CHAIN_DAG_ID])
    instances = _run_and_collect(client, DAG_ID, runs)
    starts = [_parse(ti["start_date"]) for ti in instances]
    ends = [_parse(ti["end_date"]) for ti in instances]
    span = (max(ends) - min(starts)).total_seconds()
    chain = sorted(_run_and_collect(client, CHAIN_DAG_ID, 1), key=lambda ti: _parse(ti["start_date"]))
    gaps = sorted((_parse(b["start_date"]) - _parse(a["end_date"])).total_seconds() for a, b in zip(chain, chain[1:]))
    return {
        "tasks": len(instances),
        "span_s": span,
        "tasks_per_min": len(instances) / span * 60,
        "task_s": statistics.median(float(ti["duration"]) for ti in instances),
        "latency_p50_s": statistics.median(gaps),
        "latency_max_s": gaps[-1],
        "hosts": len({ti["hostname"] for ti in instances}),
    }


def bench_local(runs: int, slots: int) -> dict[str, float]:
    from pipelines.core.airflow_runtime import standalone
    from pipelines.core.settings import LooplineSettings

    with tempfile.TemporaryDirectory(prefix="loopline-bench-local-") as home:
        settings = LooplineSettings(home=Path(home), airflow_port=8291)
        with standalone(settings, log=lambda message: None, dags_folder=DAGS,
                        extra_env={"AIRFLOW__CORE__PARALLELISM": str(slots)}) as client:
            return measure(client, runs)


def bench_celery(runs: int, slots: int) -> dict[str, float]:
    from pipelines.core.production import drop_databases, production_stack
    from pipelines.core.settings import LooplineSettings

    with tempfile.TemporaryDirectory(prefix="loopline-bench-celery-") as home:
        settings = LooplineSettings(home=Path(home), profile="production", database_prefix="loopline_bench",
                                    redis_url="redis://127.0.0.1:6379/10", mlflow_port=5072, airflow_port=8292,
                                    celery_worker_concurrency=max(1, slots // 2))
        drop_databases(settings)
        try:
            with production_stack(settings, workers=2, log=lambda message: None, dags_folder=DAGS) as stack:
                return measure(stack.client, runs)
        finally:
            drop_databases(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()
    print(f"Executors: {args.runs} runs of {DAG_ID} (1 + 24 + 1 tasks) triggered at once, {args.slots} task slots")
    local = bench_local(args.runs, args.slots)
    celery = bench_celery(args.runs, args.slots)
    for name, figures in (("LocalExecutor (SQLite)", local), ("CeleryExecutor, 2 workers (Postgres, Redis)", celery)):
        print(f"  {name:44s} {figures['tasks_per_min']:6.1f} tasks/min ({figures['tasks']} tasks in "
              f"{figures['span_s']:.1f} s, median task {figures['task_s']:.2f} s, on {figures['hosts']} host(s)); "
              f"scheduling latency p50 {figures['latency_p50_s']:.2f} s, max {figures['latency_max_s']:.2f} s")
    print(f"  ratio Celery / Local: throughput {celery['tasks_per_min'] / local['tasks_per_min']:.2f}, "
          f"latency p50 {celery['latency_p50_s'] / max(local['latency_p50_s'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
