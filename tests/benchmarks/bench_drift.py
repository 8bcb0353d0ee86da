"""Drift benchmark (``make bench``): the drift check against Evidently called directly, and the time from
the drift event to the start of retraining through a real scheduler.

1. **Check overhead**: 100,000 reference rows and 100,000 current rows of 20 features (14 numbers,
   6 categories, three of them shifted) plus a prediction column. "Evidently directly": the same ``Report``
   (``DataDriftPreset`` + ``ValueDrift`` of the prediction, with tests) run on the same ``Dataset``s, its
   ``dict()`` read and its HTML saved. "Loopline": ``pipelines.drift.tabular.drift_report`` (schema check,
   data definition, the report, the summary) and the HTML saved the same way. Alternating, ``--repeats``
   times each, medians compared (goal: ratio <= 1.10).
2. **Event → retraining**: ``airflow standalone`` (LocalExecutor, SQLite) in a data home of its own with a
   champion and published features of a drifted week (``tests/support/churn_world.py``);
   ``churn_drift_check`` is triggered and emits ``churn_retrain``; measured from the Asset event's
   timestamp to the start of the asset-triggered ``churn_training`` run and of its first task. Skip with
   ``--no-scheduler``.

Run: ``python tests/benchmarks/bench_drift.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def frames(rows: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    def one(shift: float, offset: int):
        r = np.random.default_rng([seed, offset])
        data = {f"num_{i}": r.normal(10 * i + (shift if i < 3 else 0.0), 5 + i, rows) for i in range(14)}
        data.update({f"cat_{i}": r.choice([f"v{j}" for j in range(3 + i)], rows) for i in range(6)})
        data["prediction"] = np.clip(r.beta(2, 6, rows) + (0.05 * shift / 5), 0, 1)
        return pd.DataFrame(data)

    numeric = [f"num_{i}" for i in range(14)]
    categorical = [f"cat_{i}" for i in range(6)]
    return one(0.0, 1), one(5.0, 2), numeric, categorical


def bench_check(rows: int, repeats: int) -> None:
    from pipelines.drift import tabular
    from pipelines.drift.config import TabularDrift

    reference, current, numeric, categorical = frames(rows)
    thresholds = TabularDrift()
    out = Path(tempfile.mkdtemp(prefix="loopline-bench-drift-"))

    def direct() -> None:
        report = tabular.build_report(numeric, categorical, thresholds, with_prediction=True)
        current_ds, reference_ds = tabular.datasets(reference, current, numeric, categorical, True)
        snapshot = report.run(current_ds, reference_ds)
        snapshot.dict()
        snapshot.save_html(str(out / "direct.html"))

    def loopline() -> None:
        result = tabular.drift_report(reference, current, numeric, categorical, thresholds)
        result.snapshot.save_html(str(out / "loopline.html"))

    print(f"Check: {rows:,} reference and {rows:,} current rows, {len(numeric) + len(categorical)} features "
          "+ prediction")
    direct()  # warm-up: imports, Evidently's registries
    plain, ours = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        direct()
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        loopline()
        ours.append(time.perf_counter() - started)
    p, o = statistics.median(plain), statistics.median(ours)
    found = tabular.drift_report(reference, current, numeric, categorical, thresholds)
    print(f"  Evidently report called directly   {p:6.2f} s "
          f"(median of {repeats}: {', '.join(f'{t:.2f}' for t in plain)})")
    print(f"  Loopline drift check               {o:6.2f} s ({', '.join(f'{t:.2f}' for t in ours)})")
    print(f"  ratio Loopline / direct: {o / p:.2f}  (goal <= 1.10); drifted {found.drifted_columns}, "
          f"prediction drift {found.prediction_drift:.3f}")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def bench_event_to_training() -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from pipelines.core.airflow_runtime import standalone, wait_for_dags
    from pipelines.core.settings import LooplineSettings
    from support.churn_world import land, publish, train_champion

    t0 = date(2026, 9, 1)
    drift_start, window_end = t0 + timedelta(days=50), t0 + timedelta(days=56)
    settings = LooplineSettings(home=Path(tempfile.mkdtemp(prefix="loopline-bench-loop-")), airflow_port=8391)
    land(settings, t0, (window_end - t0).days, drift_start=drift_start, customers=600)
    publish(settings, [window_end - timedelta(days=n) for n in range(7, 0, -1)])
    train_champion(settings, t0 + timedelta(days=45), 14)
    print("\nEvent → retraining (airflow standalone, LocalExecutor, SQLite)")
    with standalone(settings, log=lambda message: None) as client:
        wait_for_dags(client, ["churn_drift_check", "churn_training"])
        client.unpause("churn_training")
        # Unpausing starts the latest weekly run, which would wait for features this home lacks and hold the
        # asset-triggered run back (max_active_runs=1): set it aside before measuring.
        client.set_scheduled_runs_aside("churn_training")
        client.unpause("churn_drift_check")
        client.trigger("churn_drift_check", logical_date=datetime.now(UTC).isoformat(), run_id="bench",
                       conf={"window_end": str(window_end)})
        state = client.wait_for_run("churn_drift_check", "bench", timeout_s=600)
        event = next(e for e in client.get("/api/v2/assets/events?limit=50")["asset_events"]
                     if e["source_run_id"] == "bench")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            runs = client.get("/api/v2/dags/churn_training/dagRuns?run_type=asset_triggered")["dag_runs"]
            tis = client.task_instances("churn_training", runs[0]["dag_run_id"]) if runs else []
            started = [t["start_date"] for t in tis if t.get("start_date")]
            if runs and runs[0].get("start_date") and started:
                break
            time.sleep(1)
        else:
            raise TimeoutError("no asset-triggered churn_training run started within 300 s")
        run = runs[0]
        emitted = _parse(event["timestamp"])
        print(f"  churn_drift_check run: {state}; churn_retrain event at {emitted:%H:%M:%S.%f}")
        print(f"  event → asset-triggered run created:  {(_parse(run['queued_at']) - emitted).total_seconds():6.1f} s")
        print(f"  event → run started:                  {(_parse(run['start_date']) - emitted).total_seconds():6.1f} s")
        print(f"  event → first task (wait_for_features) started: "
              f"{(_parse(min(started)) - emitted).total_seconds():6.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-scheduler", action="store_true", help="skip the event → retraining measurement")
    args = parser.parse_args()
    bench_check(args.rows, args.repeats)
    if not args.no_scheduler:
        bench_event_to_training()


if __name__ == "__main__":
    main()
