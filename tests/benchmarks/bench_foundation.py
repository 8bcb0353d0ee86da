"""Benchmarks of the foundation (``make bench``): each figure is measured side by side with its baseline.

- DAG parse time of every Loopline DAG file against Airflow's own ``tutorial.py`` example, each parsed the
  way the dag-processor does it (a fresh interpreter with Airflow already imported, then the file).
- Materialization throughput (rows/s) of 1M feature rows into the SQLite online store: Loopline's
  ``materialize_interval`` against a plain ``FeatureStore.materialize`` of the same rows.
- Online read latency p50/p99 of one entity through the feature service.

Run: ``make bench`` (or ``python tests/benchmarks/bench_foundation.py --rows 200000`` for a quick look).
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
from datetime import UTC, date, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PARSE_PROBE = """
import json, sys, time
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
path = Path(sys.argv[1])
start = time.perf_counter()
bag = BundleDagBag(dag_folder=str(path), bundle_path=path.parent)
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "dags": len(bag.dags), "errors": len(bag.import_errors)}))
"""


def parse_seconds(path: Path, repeats: int) -> tuple[float, float, int]:
    """Median parse time of one file, median wall time of the whole fresh process, and its DAG count."""
    times, walls, dags = [], [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PARSE_PROBE, str(path)], capture_output=True, text=True,
                             check=True, env=os.environ.copy())
        walls.append(time.perf_counter() - started)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if result["errors"]:
            raise RuntimeError(f"{path} has import errors")
        times.append(result["seconds"])
        dags = result["dags"]
    return statistics.median(times), statistics.median(walls), dags


def bench_parse(repeats: int) -> list[dict]:
    import airflow

    example = Path(airflow.__file__).parent / "example_dags" / "tutorial.py"
    rows = []
    baseline, baseline_wall, _ = parse_seconds(example, repeats)
    rows.append({"file": f"airflow example_dags/{example.name}", "seconds": baseline, "ratio": 1.0,
                 "wall": baseline_wall, "wall_ratio": 1.0})
    for path in sorted((REPO / "dags").glob("*.py")):
        seconds, wall, dags = parse_seconds(path, repeats)
        rows.append({"file": f"dags/{path.name} ({dags} DAG)", "seconds": seconds, "ratio": seconds / baseline,
                     "wall": wall, "wall_ratio": wall / baseline_wall})
    return rows


def _feature_frame(rows: int, ds: date):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    ts = datetime(ds.year, ds.month, ds.day, 23, 59, 59, tzinfo=UTC)
    return pd.DataFrame({
        "customer_id": np.arange(1, rows + 1, dtype="int64"),
        "ds": ds,
        "feature_timestamp": pd.Series([ts] * rows, dtype="datetime64[us, UTC]"),
        "tenure_days": rng.integers(0, 1000, rows),
        "plan": rng.choice(["monthly", "annual"], rows),
        "region": rng.choice(["north", "south", "east", "west"], rows),
        "monthly_charges": rng.uniform(20, 120, rows).round(2),
        "sessions_7d": rng.integers(0, 30, rows),
        "sessions_30d": rng.integers(0, 120, rows),
        "purchases_30d": rng.integers(0, 10, rows),
        "spend_30d": rng.uniform(0, 500, rows).round(2),
        "support_tickets_30d": rng.integers(0, 5, rows),
        "days_since_last_session": rng.integers(0, 32, rows),
    })


def bench_materialize(rows: int, reads: int) -> dict:
    """Both paths write the same 1M rows into fresh SQLite online stores of separate data homes."""
    from pipelines.core.settings import LooplineSettings
    from pipelines.features import feast_store

    ds = date(2026, 11, 1)
    start, end = feast_store.day_bounds(ds)
    frame = _feature_frame(rows, ds)
    views = ["customer_daily_activity", "customer_daily_profile"]
    results = {}
    # Warm-up on a small copy (imports, dask's thread pool), so neither timed path pays for it.
    warm = LooplineSettings(home=Path(tempfile.mkdtemp(prefix="loopline-bench-warmup-")))
    feast_store.publish_offline_day(frame.head(10_000), warm.path("offline", "bench", "customer_daily_features"), ds)
    feast_store.apply_if_changed("bench", REPO / "feature_repo", warm)
    feast_store.feature_store("bench", warm).materialize(start_date=start, end_date=end, feature_views=views)
    for label in ("plain feast", "loopline"):
        home = Path(tempfile.mkdtemp(prefix=f"loopline-bench-{label.replace(' ', '-')}-"))
        settings = LooplineSettings(home=home)
        feast_store.publish_offline_day(frame, settings.path("offline", "bench", "customer_daily_features"), ds)
        feast_store.apply_if_changed("bench", REPO / "feature_repo", settings)
        store = feast_store.feature_store("bench", settings)
        t0 = time.perf_counter()
        if label == "plain feast":
            store.materialize(start_date=start, end_date=end, feature_views=views)
        else:
            feast_store.materialize_interval("bench", views, start, end, rows_in_interval=rows, settings=settings)
        seconds = time.perf_counter() - t0
        results[label] = {"seconds": seconds, "rows_per_s": rows / seconds, "settings": settings}

    settings = results["loopline"].pop("settings")
    results["plain feast"].pop("settings")
    store = feast_store.feature_store("bench", settings)
    service = store.get_feature_service("churn_model_v1")
    latencies = []
    for i in range(reads):
        t0 = time.perf_counter()
        store.get_online_features(features=service, entity_rows=[{"customer_id": 1 + (i * 7919) % rows}]).to_dict()
        latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    return {
        "rows": rows,
        "plain": results["plain feast"],
        "loopline": results["loopline"],
        "ratio": results["loopline"]["rows_per_s"] / results["plain feast"]["rows_per_s"],
        "read_p50_ms": latencies[len(latencies) // 2],
        "read_p99_ms": latencies[int(len(latencies) * 0.99) - 1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--parse-repeats", type=int, default=5)
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--only", choices=["parse", "materialize"], help="run one part alone")
    args = parser.parse_args()

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    if args.only != "materialize":
        print_parse(args.parse_repeats)
    if args.only != "parse":
        print_materialize(args.rows, args.reads)


def print_parse(repeats: int) -> None:
    print("\nDAG parse time: the file alone (Airflow already imported) and the whole fresh process (import")
    print("Airflow + parse), medians; ratios against Airflow's example_dags/tutorial.py in the same run:")
    for row in bench_parse(repeats):
        print(f"  {row['file']:<45} file {row['seconds'] * 1000:6.1f} ms (x{row['ratio']:.2f})   "
              f"process {row['wall']:5.2f} s (x{row['wall_ratio']:.2f})")


def print_materialize(rows: int, reads: int) -> None:
    print(f"\nMaterialization of {rows:,} feature rows into the SQLite online store (2 feature views):")
    m = bench_materialize(rows, reads)
    print(f"  plain FeatureStore.materialize  {m['plain']['seconds']:7.1f} s  {m['plain']['rows_per_s']:10,.0f} rows/s")
    print(f"  loopline materialize_interval   {m['loopline']['seconds']:7.1f} s  "
          f"{m['loopline']['rows_per_s']:10,.0f} rows/s")
    print(f"  ratio loopline / plain: {m['ratio']:.3f}  (goal >= 0.95)")
    print(f"\nOnline read of one entity, feature service churn_model_v1 ({reads} reads): "
          f"p50 {m['read_p50_ms']:.2f} ms, p99 {m['read_p99_ms']:.2f} ms")


if __name__ == "__main__":
    main()
