"""What a drift check triggers: the pipeline config it names and that pipeline's Asset.

Read at parse time by the template (PyYAML and pydantic only): the Asset a drift check emits must be the
very Asset the target DAG is scheduled on, so it is the :class:`~pipelines.core.assets.AssetRef` the
target's own config declares (``TrainingConfig.retrain_request``, ``RagIndexConfig.reindex_request``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.assets import AssetRef
from pipelines.templates import CONFIG_DIR, PipelineConfigError, config_path, load_config


@dataclass(frozen=True)
class TargetAsset:
    """The Asset a drift check emits, and the DAG scheduled on it."""

    ref: AssetRef
    dag_id: str
    action: str  # "retrain" or "reindex"

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def uri(self) -> str:
        return self.ref.uri

    def asset(self) -> Any:
        """The ``airflow.sdk.Asset`` the emit task has as its outlet."""
        return self.ref.asset()


FIELDS = {"training": "tabular.training_config", "rag_index": "rag.rag_config"}


def target_config(name: str, expected_template: str, config_dir: Path = CONFIG_DIR) -> Any:
    """The validated config of ``dags/configs/<name>.yaml``, which must be of ``expected_template``.

    Raises:
        ValueError: the file is missing, is not YAML, fails its model or is of another template.
    """
    path = config_path(name, config_dir)
    if not path.exists():
        raise ValueError(f"the drift check's target {name!r} has no config {path}: create it or fix "
                         f"{FIELDS[expected_template]}")
    try:
        config = load_config(path)
    except PipelineConfigError as exc:
        raise ValueError(f"target config {path} is invalid: {'; '.join(exc.problems)}") from None
    if config.template != expected_template:
        raise ValueError(f"target config {path} is a {config.template!r} config; the drift check needs a "
                         f"{expected_template!r} one")
    return config


def target_asset(config, config_dir: Path = CONFIG_DIR) -> TargetAsset:
    """The Asset ``config`` (a DriftCheckConfig) emits when drift passes its policy."""
    if config.kind == "tabular":
        training = target_config(config.tabular.training_config, "training", config_dir)
        return TargetAsset(training.retrain_request, training.dag_id, "retrain")
    rag = target_config(config.rag.rag_config, "rag_index", config_dir)
    return TargetAsset(rag.reindex_request, rag.dag_id, "reindex")
