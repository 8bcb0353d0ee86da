"""Training benchmark (``make bench``): training plus registration, and MLflow's overhead, side by side.

The training set is built from the simulator's own feature truth (the mart's values, point-in-time:
labels of day D with features of day D-1) for 28 label days of 3,000 customers, the default window.

- "without MLflow": ``train_and_evaluate``: fit, holdout metrics, slices, plots.
- "with MLflow": ``train_and_register``: the same, plus params, metrics, dataset input, plot artifacts,
  the model with signature and input example, and the registry version, into the embedded SQLite store.

Each is run ``--repeats`` times, alternating, with a different seed each time (so no run is reused);
medians are compared. Run: ``python tests/benchmarks/bench_training.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

WINDOW_DAYS = 28
CUSTOMERS = 3000


def build_training_set(home: Path) -> tuple[pd.DataFrame, dict]:
    from pipelines.demo import simulator
    from pipelines.training.dataset import dataset_digest, split_by_time

    landing = home / "landing"
    end = date(2026, 11, 29)
    simulator.land_days(landing, end - timedelta(days=WINDOW_DAYS + 31), WINDOW_DAYS + 31, n_customers=CUSTOMERS)
    numeric = ["sessions_7d", "sessions_30d", "purchases_30d", "spend_30d", "support_tickets_30d",
               "days_since_last_session", "tenure_days", "monthly_charges"]
    categorical = ["plan", "region"]
    frame = simulator.expected_training_set(landing, end, WINDOW_DAYS)[
        ["customer_id", "event_timestamp", "label", "label_day", *numeric, *categorical]]
    frame = split_by_time(frame, 0.25)
    path = home / "training_set.parquet"
    frame.to_parquet(path, index=False)
    info = {"path": str(path), "window_start": str(end - timedelta(days=WINDOW_DAYS)), "window_end": str(end),
            "rows": len(frame), "train_rows": int((frame["split"] == "train").sum()),
            "holdout_rows": int((frame["split"] == "holdout").sum()), "digest": dataset_digest(frame),
            "feature_service": "churn_model_v1", "feast_project": "bench", "numeric": numeric,
            "categorical": categorical}
    return frame, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--family", default="gradient_boosting", choices=["gradient_boosting", "torch_mlp"])
    args = parser.parse_args()

    import mlflow  # noqa: F401 - imported before timing: both sides run in a process that has it

    from pipelines.core.settings import LooplineSettings
    from pipelines.training.config import TrainingConfig
    from pipelines.training.steps import train_and_evaluate, train_and_register

    home = Path(tempfile.mkdtemp(prefix="loopline-bench-training-"))
    settings = LooplineSettings(home=home)
    frame, info = build_training_set(home)
    print(f"Training set: {info['rows']} rows ({info['train_rows']} train, {info['holdout_rows']} holdout), "
          f"{len(info['numeric']) + len(info['categorical'])} features; family {args.family}")

    def config(seed: int) -> TrainingConfig:
        return TrainingConfig(template="training", instance="bench", model_name="bench", family=args.family, seed=seed,
                              features_config="churn_features",
                              label={"table": "labels", "timestamp": "label_ts", "target": "churned"})

    # Warm-up: MLflow creates its tables, both code paths import what they use.
    train_and_register(config(0), info, settings=settings)
    train_and_evaluate(config(0), frame, info["numeric"], info["categorical"], home / "plots")

    plain, tracked = [], []
    for seed in range(1, args.repeats + 1):
        started = time.perf_counter()
        train_and_evaluate(config(seed), frame, info["numeric"], info["categorical"], home / "plots")
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        result = train_and_register(config(seed), info, settings=settings)
        tracked.append(time.perf_counter() - started)
        assert not result["reused"]
    p, t = statistics.median(plain), statistics.median(tracked)
    print(f"  train + evaluate, no MLflow            {p:6.2f} s (median of {args.repeats})")
    print(f"  train + evaluate + MLflow + register   {t:6.2f} s")
    print(f"  ratio with / without MLflow: {t / p:.2f}  (goal <= 1.10); MLflow's share {t - p:.2f} s")


if __name__ == "__main__":
    main()
