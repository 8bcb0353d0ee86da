"""Backfilling history with Airflow 3's own backfill, against ``dag.test()``, and where a day's time goes.

In one run, in a fresh data home with simulated churn days landed (``--customers`` per day, small: the costs
measured are the fixed ones):

1. **Backfill**: ``airflow standalone`` (LocalExecutor), ``POST /api/v2/backfills`` for ``churn_features``
   over ``--days`` days, polled until the backfill completes. Per day: wall time, then, from the task
   instances' ``queued_when``/``start_date``/``end_date`` in the REST API, the run's critical path
   (``wait_for_partition`` → … → ``materialize_interval``) split into the tasks' own run time, the
   scheduler's decisions (upstream end → queued) and the executor's pickup (queued → running), plus the
   gap between one run's end and the next one's start.
2. **Loopline's own cost per task**: each step function called in a fresh interpreter, the way a task
   process calls it, on a day the backfill already did (idempotent): importing ``pipelines.features.steps``
   and the config, the first call (the libraries it imports, then the work), and a second call in the same
   process (the work alone).
3. **dag.test()**: two more days run in one process through ``dag.test()``; the first pays the imports.

Run: ``python tests/benchmarks/bench_backfill.py`` (about 5 minutes for 5 days here);
``--max-active-runs 2`` lets the backfill run two days at once; ``--json PATH`` keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

DAG_ID = "churn_features"
FIRST = date(2026, 11, 1)  # the churn instance's start_date
CHAIN = ["wait_for_partition", "check_landing", "build_mart", "validate_mart", "publish_features",
         "materialize_interval"]
BESIDE = ["apply_definitions", "check_start_date"]

STEP_PROBE = """
import json, sys, time
from datetime import date
started = time.perf_counter()
from pipelines.features import steps
from pipelines.templates import load_config
config = load_config(sys.argv[1])
imported = time.perf_counter()
ds = date.fromisoformat(sys.argv[3])
calls = {
    "wait_for_partition": lambda: steps.partition_ready(config, ds),
    "check_landing": lambda: steps.check_landing(config, ds),
    "build_mart": lambda: steps.build_mart(config, ds),
    "validate_mart": lambda: steps.validate_mart(config, ds),
    "publish_features": lambda: steps.publish_features(config, ds),
    "apply_definitions": lambda: steps.apply_definitions(config),
    "materialize_interval": lambda: steps.materialize_day(config, ds, 0),
}
call = calls[sys.argv[2]]
call()
first = time.perf_counter()
call()
second = time.perf_counter()
print(json.dumps({"import": imported - started, "first": first - imported, "second": second - first}))
"""

DAG_TEST_PROBE = """
import json, sys, time
from datetime import UTC, date, datetime, time as clock, timedelta
from pathlib import Path
started = time.perf_counter()
from airflow.dag_processing.dagbag import BundleDagBag
dags = Path(sys.argv[1])
dag = BundleDagBag(dag_folder=str(dags / "churn_features.py"), bundle_path=dags).dags["churn_features"]
loaded = time.perf_counter()
days = []
for ds in sys.argv[2:]:
    ds = date.fromisoformat(ds)
    t0 = time.perf_counter()
    run = dag.test(logical_date=datetime.combine(ds + timedelta(days=1), clock(), tzinfo=UTC))
    days.append({"ds": str(ds), "seconds": time.perf_counter() - t0, "state": str(run.state),
                 "tasks": len(run.get_task_instances())})
print(json.dumps({"load": loaded - started, "days": days}))
"""


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _seconds(later: datetime | None, earlier: datetime | None) -> float:
    return (later - earlier).total_seconds() if later and earlier else float("nan")


def run_backfill(client, days: list[date], max_active_runs: int, log) -> dict:
    """Post the backfill and wait for its runs; return its wall time (created → last run's end) and its runs
    with their task instances."""
    backfill = client.backfill(DAG_ID, f"{days[0]}T00:00:00Z", f"{days[-1]}T00:00:00Z",
                               max_active_runs=max_active_runs)
    log(f"backfill {backfill['id']}: {days[0]} … {days[-1]}, max_active_runs {max_active_runs}")
    runs = client.wait_for_backfill_runs(DAG_ID, len(days), timeout_s=60 * 30, poll_s=1)
    wall = _seconds(max(_ts(r["end_date"]) for r in runs), _ts(backfill["created_at"]))
    for run in runs:
        run["tasks"] = {t["task_id"]: t for t in client.task_instances(DAG_ID, run["dag_run_id"])}
    return {"wall": wall, "backfill": backfill, "runs": runs}


def analyse_runs(runs: list[dict]) -> dict:
    """Per run: the critical path split into task run time, scheduler decision and executor pickup."""
    per_run = []
    previous_end = None
    for run in sorted(runs, key=lambda r: r["logical_date"]):
        tasks = run["tasks"]
        run_start, run_end = _ts(run["start_date"]), _ts(run["end_date"])
        running = decide = pickup = 0.0
        upstream_end = run_start
        for task_id in CHAIN:
            ti = tasks[task_id]
            queued, start, end = _ts(ti.get("queued_when")), _ts(ti["start_date"]), _ts(ti["end_date"])
            if task_id == "materialize_interval":  # it also waits for apply_definitions
                upstream_end = max(upstream_end, _ts(tasks["apply_definitions"]["end_date"]))
            decide += _seconds(queued, upstream_end)
            pickup += _seconds(start, queued)
            running += _seconds(end, start)
            upstream_end = end
        per_run.append({
            "ds": run["logical_date"][:10], "state": run["state"], "run_type": run["run_type"],
            "wall": _seconds(run_end, run_start), "running": running, "decide": decide, "pickup": pickup,
            "tail": _seconds(run_end, upstream_end),
            "between": _seconds(run_start, previous_end) if previous_end else None,
            "tasks": {t: _seconds(_ts(tasks[t]["end_date"]), _ts(tasks[t]["start_date"])) for t in CHAIN + BESIDE},
        })
        previous_end = run_end
    return {"runs": per_run}


def step_costs(env: dict, ds: date, repeats: int) -> dict:
    """Each step in a fresh interpreter: import, first call, second call (medians of ``repeats``)."""
    config = str(REPO / "dags" / "configs" / "churn_features.yaml")
    out = {}
    for step in CHAIN + ["apply_definitions"]:
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", STEP_PROBE, config, step, str(ds)], capture_output=True,
                                  text=True, env=env, cwd=REPO)
            wall = time.perf_counter() - started
            if done.returncode:
                raise RuntimeError(f"{step} failed in a fresh process:\n{done.stderr[-3000:]}")
            samples.append({**json.loads(done.stdout.strip().splitlines()[-1]), "process": wall})
        out[step] = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    return out


def dag_test_days(env: dict, days: list[date]) -> dict:
    done = subprocess.run([sys.executable, "-c", DAG_TEST_PROBE, str(REPO / "dags"), *map(str, days)],
                          capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"dag.test() failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mean(values) -> float:
    values = [v for v in values if v is not None and v == v]
    return statistics.fmean(values) if values else float("nan")


def report(result: dict) -> None:
    runs = result["analysis"]["runs"]
    n = len(runs)
    print(f"\n== Backfill of {DAG_ID}: {n} days, {result['customers']} customers/day, max_active_runs "
          f"{result['max_active_runs']} ({result['machine']})")
    print(f"backfill wall time {result['backfill_wall']:.1f} s = {result['backfill_wall'] / n:.1f} s per day "
          f"(states: {', '.join(sorted({r['state'] for r in runs}))}; run_type: "
          f"{', '.join(sorted({r['run_type'] for r in runs}))})")
    print("\nper run (s)        wall  tasks  decide  pickup  tail  between runs")
    for r in runs:
        between = f"{r['between']:.1f}" if r["between"] is not None else "-"
        print(f"  {r['ds']}  {r['wall']:6.1f} {r['running']:6.1f} {r['decide']:7.1f} {r['pickup']:7.1f} "
              f"{r['tail']:5.1f}  {between}")
    mean = {k: _mean(r[k] for r in runs) for k in ("wall", "running", "decide", "pickup", "tail")}
    between = _mean(r["between"] for r in runs)
    print(f"  mean        {mean['wall']:6.1f} {mean['running']:6.1f} {mean['decide']:7.1f} {mean['pickup']:7.1f} "
          f"{mean['tail']:5.1f}  {between:.1f}")
    costs = result["steps"]
    print("\nper task (s)          in Airflow   fresh process: import  first call  second call  "
          "(Airflow's own = task − import − first call)")
    own_total = airflow_total = 0.0
    for task in CHAIN + BESIDE:
        in_airflow = _mean(r["tasks"][task] for r in runs)
        c = costs.get(task)
        if c:
            rest = in_airflow - c["import"] - c["first"]
            own_total += c["import"] + c["first"] if task in CHAIN else 0
            airflow_total += rest if task in CHAIN else 0
            print(f"  {task:22s} {in_airflow:8.2f}   {c['import']:14.2f} {c['first']:11.2f} {c['second']:12.2f}"
                  f"   {rest:6.2f}")
        else:
            print(f"  {task:22s} {in_airflow:8.2f}   (no Loopline step)")
    print(f"  critical path: Loopline's import + first call {own_total:.1f} s, Airflow's task process "
          f"{airflow_total:.1f} s, scheduling (decide + pickup + tail + between) "
          f"{mean['decide'] + mean['pickup'] + mean['tail'] + (between if between == between else 0):.1f} s")
    dt = result["dag_test"]
    first, *rest = dt["days"]
    warm = _mean(d["seconds"] for d in rest) if rest else float("nan")
    print(f"\ndag.test(): loading the DAG {dt['load']:.1f} s, first day {first['seconds']:.1f} s (imports), "
          f"next day(s) {warm:.1f} s ({', '.join(d['state'] for d in dt['days'])})")
    per_day = result["backfill_wall"] / n
    print(f"ratio backfill / dag.test() per day: {per_day:.1f} / {warm:.1f} = {per_day / warm:.2f} "
          f"(against dag.test's first day {per_day / first['seconds']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--max-active-runs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per step (median)")
    parser.add_argument("--port", type=int, default=8311)
    parser.add_argument("--home", type=Path, help="data home (default: a temporary folder, deleted after)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    scratch = None if args.home else tempfile.TemporaryDirectory(prefix="loopline-backfill-")
    home = (args.home or Path(scratch.name)).resolve()
    os.environ["LOOPLINE_HOME"] = str(home)
    from pipelines.core.airflow_runtime import airflow_environment, standalone, wait_for_dags
    from pipelines.core.settings import LooplineSettings, get_settings
    from pipelines.demo import simulator

    get_settings.cache_clear()
    settings = LooplineSettings(home=home, airflow_port=args.port)
    backfill_days = [FIRST + timedelta(days=i) for i in range(args.days)]
    test_days = [FIRST + timedelta(days=args.days + i) for i in range(2)]
    simulator.land_days(settings.path("landing", "churn"), FIRST, args.days + 2, n_customers=args.customers)
    log = lambda message: print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)  # noqa: E731

    with standalone(settings, log=log) as client:
        wait_for_dags(client, [DAG_ID])
        client.unpause(DAG_ID)  # the scheduler runs no run of a paused DAG, backfills included
        # Unpausing starts the latest interval's scheduled run, whose day is not landed here: set it aside.
        client.set_scheduled_runs_aside(DAG_ID, wait_s=60)
        done = run_backfill(client, backfill_days, args.max_active_runs, log)
    env = {**os.environ, **airflow_environment(settings)}
    log("each step in a fresh process")
    steps = step_costs(env, backfill_days[-1], args.repeats)
    log("dag.test()")
    dag_test = dag_test_days(env, test_days)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load "
                   f"{os.getloadavg()[0]:.1f}",
        "days": args.days, "customers": args.customers, "max_active_runs": args.max_active_runs,
        "backfill_wall": done["wall"], "analysis": analyse_runs(done["runs"]), "steps": steps,
        "dag_test": dag_test,
    }
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if scratch:
        scratch.cleanup()


if __name__ == "__main__":
    main()
