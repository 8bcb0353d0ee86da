"""``python -m pipelines.scaffold features|training NAME …``: write a use case's files, then say what to run.

    python -m pipelines.scaffold features NAME --landing PATH --entity KEY[:int64|string] --timestamp COL
        [--entity KEY2[:type] …] [--lookback-days N] [--dags-dir DIR] [--force]
    python -m pipelines.scaffold training NAME --features NAME --label TABLE.COL [--label-timestamp COL]
        [--task binary|multiclass|regression]
        [--dags-dir DIR] [--force]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.core import REPO_ROOT
from pipelines.scaffold.files import ScaffoldError, config_reference


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.scaffold", description=__doc__.splitlines()[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    features = kinds.add_parser("features", help="a features use case from a landing folder's first partition")
    features.add_argument("name", help="the use case: DAG <name>_features, Feast project <name>")
    features.add_argument("--landing", required=True, type=Path, help="the landing folder, one sub-folder per day")
    features.add_argument("--entity", required=True, action="append",
                          help="the entity key, KEY or KEY:int64|string; repeat for a composite key")
    features.add_argument("--timestamp", required=True, help="the column stamping each row of the main table")
    features.add_argument("--lookback-days", type=int, default=7,
                          help="days ending on ds the mart's window reads (dbt var loopline_lookback_days)")
    training = kinds.add_parser("training", help="a training use case on a features instance")
    training.add_argument("name", help="the use case: DAG <name>_training, MLflow model <name>")
    training.add_argument("--features", required=True, help="the features instance (configs/<NAME>_features.yaml)")
    training.add_argument("--label", required=True, help="TABLE.COLUMN: a landing table and its 0/1 outcome")
    training.add_argument("--label-timestamp", help="the label table's observation time (default: its only one)")
    training.add_argument("--task", choices=("binary", "multiclass", "regression"),
                          help="default: regression for a float64 label, binary for int64")
    for sub in (features, training):
        sub.add_argument("--dags-dir", type=Path, default=REPO_ROOT / "dags",
                         help="the dags folder to write into (default: the repository's dags/)")
        sub.add_argument("--force", action="store_true", help="overwrite files that exist")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.kind == "features":
            from pipelines.scaffold.features import features_files, next_commands, parse_entity, plan_features

            plan = plan_features(args.name, args.landing, [parse_entity(e) for e in args.entity], args.timestamp,
                                 args.lookback_days)
            written = features_files(plan, args.dags_dir).write(force=args.force)
            commands = next_commands(plan)
        else:
            from pipelines.scaffold.training import training_files

            written = training_files(args.name, args.features, args.label, args.dags_dir,
                                     args.label_timestamp, task=args.task).write(force=args.force)
            commands = [f"airflow dags test {args.name}_training   # once the features have run for the window"]
    except ScaffoldError as exc:
        print(f"scaffold {args.kind} {args.name}: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote {len(written)} files:")
    for path in written:
        print(f"  {config_reference(path)}")
    print("Next:")
    for command in commands:
        print(f"  {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
