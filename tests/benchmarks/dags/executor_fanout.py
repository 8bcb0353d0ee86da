"""Benchmark DAGs for ``bench_executors.py``: a fan-out (throughput) and a chain (latency) of small tasks.

The work per task is small on purpose: the benchmark measures what the executor adds (queueing,
starting a task process, reporting back), not the work.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

FANOUT = 24


@dag(schedule=None, start_date=datetime(2026, 11, 1), catchup=False, max_active_runs=4, tags=["benchmark"],
     doc_md=__doc__, default_args={"owner": "ml-platform", "retries": 0})
def executor_fanout():
    @task
    def start() -> int:
        """Start of the run."""
        return FANOUT

    @task
    def work(index: int) -> int:
        """About 10 ms of arithmetic."""
        return sum(range(200_000)) + index

    @task
    def finish(results: list[int]) -> int:
        """Joins the fan-out."""
        return len(results)

    started = start()
    finish([work.override(task_id=f"work_{i}")(i) for i in range(FANOUT)]) << started


executor_fanout()


CHAIN = 10


@dag(schedule=None, start_date=datetime(2026, 11, 1), catchup=False, tags=["benchmark"], doc_md=__doc__,
     default_args={"owner": "ml-platform", "retries": 0})
def executor_chain():
    """Ten small tasks one after the other: the gap between one's end and the next one's start is pure
    scheduling and executor latency (no task waits for a free slot)."""

    @task
    def step(index: int) -> int:
        """About 10 ms of arithmetic."""
        return sum(range(200_000)) + index

    previous = None
    for index in range(CHAIN):
        current = step.override(task_id=f"step_{index}")(index)
        if previous is not None:
            previous >> current
        previous = current


executor_chain()
