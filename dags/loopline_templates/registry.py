"""Build the DAG of one pipeline config: ``dags/<name>.py`` ↔ ``dags/configs/<name>.yaml``.

Each config gets its own small DAG file because Airflow keeps import errors per file and hides every
DAG of a file that has one: with a file per config, a bad config is an import error of that file
alone, naming the YAML and the field, and every other DAG keeps loading.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from airflow.sdk import DAG

from loopline_templates.drift_check import build_drift_check_dag
from loopline_templates.features import build_features_dag
from loopline_templates.lora_tune import build_lora_tune_dag
from loopline_templates.rag_index import build_rag_index_dag
from loopline_templates.training import build_training_dag
from pipelines.templates import load_config
from pipelines.core.config import PipelineBase

TEMPLATE_BUILDERS: dict[str, Callable[..., DAG]] = {
    "features": build_features_dag,
    "training": build_training_dag,
    "rag_index": build_rag_index_dag,
    "lora_tune": build_lora_tune_dag,
    "drift_check": build_drift_check_dag,
}


def config_path_for(dag_file: str | Path) -> Path:
    """The YAML config that a DAG file stands for: same name, in dags/configs/."""
    stem = Path(dag_file).stem
    for suffix in (".yaml", ".yml"):
        candidate = Path(dag_file).resolve().parent / "configs" / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"{Path(dag_file).name} has no config: expected dags/configs/{stem}.yaml "
        "(a DAG file only loads the config of the same name)"
    )


def dag_for_config_file(dag_file: str | Path) -> DAG:
    """Validate the config of the same name and build its template's DAG.

    Raises:
        PipelineConfigError: the config is invalid; Airflow shows it as this file's import error.
    """
    config = load_config(config_path_for(dag_file))
    return TEMPLATE_BUILDERS[config.template](config)
