"""``scaffold training``: a training YAML and its DAG file for a features instance, naming all it reads."""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.core import REPO_ROOT
from pipelines.scaffold.files import FileSet, ScaffoldError, config_reference, render

# The promotion metric a scaffolded use case starts with, and its floor (None: no floor), per task.
START_METRIC = {"binary": ("roc_auc", 0.65), "multiclass": ("macro_f1", None), "regression": ("rmse", None)}


def training_files(name: str, features: str, label: str, dags_dir: Path,
                   label_timestamp: str | None = None, task: str | None = None) -> FileSet:
    """The training YAML and DAG file of ``name``, reading the features instance ``features``.

    Args:
        name: the use case (DAG ``<name>_training``, MLflow model ``<name>``).
        features: the features instance (``dags_dir/configs/<features>_features.yaml``).
        label: ``TABLE.COLUMN``, a landing table of that instance and its outcome column (int64 0/1 or class
            ids, float64 for a regression).
        dags_dir: the dags folder holding ``configs/``.
        label_timestamp: the label table's observation time column; by default its only timestamp column.
        task: ``binary``, ``multiclass`` or ``regression``; by default regression for a float64 label, else binary.

    Raises:
        ScaffoldError: the features YAML is missing or invalid, or the label does not fit its landing contract.
    """
    from pipelines.core.config import IDENTIFIER
    from pipelines.templates import PipelineConfigError, load_config

    if not re.match(IDENTIFIER, name):
        raise ScaffoldError(f"use case name {name!r} must be lower-case letters, digits and _, starting with a letter")
    dags_dir = Path(dags_dir).resolve()
    features_yaml = dags_dir / "configs" / f"{features}_features.yaml"
    if not features_yaml.exists():
        raise ScaffoldError(f"--features {features}: no {features_yaml}; scaffold it first with "
                            f"python -m pipelines.scaffold features {features} …")
    try:
        features_config = load_config(features_yaml, "features")
    except PipelineConfigError as exc:
        raise ScaffoldError(f"--features {features}: {exc}") from exc
    table, _, target = label.partition(".")
    tables = features_config.landing.tables
    if not target or table not in tables:
        raise ScaffoldError(f"--label {label}: expected TABLE.COLUMN with TABLE one of {features}'s landing tables "
                            f"({', '.join(tables)})")
    columns = tables[table].columns
    if target not in columns:
        raise ScaffoldError(f"--label {label}: {table} has no column {target!r} ({', '.join(columns)})")
    task = task or ("regression" if columns[target] == "float64" else "binary")
    if columns[target] not in ("int64", "float64") or (task != "regression" and columns[target] != "int64"):
        raise ScaffoldError(f"--label {label}: {table}.{target} is {columns[target]}; a {task} outcome must be "
                            + ("int64 or float64" if task == "regression" else "int64 (0/1 or class ids)"))
    metric, floor = START_METRIC[task]
    stamps = [c for c, kind in columns.items() if kind in ("timestamp", "date") and c != target]
    timestamp = label_timestamp or (stamps[0] if len(stamps) == 1 else None)
    if timestamp is None or timestamp not in columns:
        raise ScaffoldError(f"--label {label}: cannot tell when a label was observed: {table}'s timestamp or date "
                            f"columns are {stamps or 'none'}; name one with --label-timestamp COL")
    in_repo = dags_dir == (REPO_ROOT / "dags").resolve()
    files = FileSet()
    files.add(dags_dir / "configs" / f"{name}_training.yaml", render(
        "training.yaml.tmpl", name=name, features_name=features_config.dag_id,
        # A name in dags/configs/, or the YAML's path when the dags folder is not the repository's.
        features_config=f"{features}_features" if in_repo else config_reference(features_yaml),
        start_date=features_config.start_date.strftime("%Y-%m-%dT%H:%M:%SZ"), label_table=table,
        label_timestamp=timestamp, label_target=target, slice_example="FEATURE", task=task, metric=metric,
        floor_line=f"  floor: {floor}\n" if floor is not None else ""))
    files.add(dags_dir / f"{name}_training.py",
              render("dag_file.py.tmpl", config_name=f"{name}_training", template="training"))
    return files
