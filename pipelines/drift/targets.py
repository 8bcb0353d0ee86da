"""What a drift check triggers: the pipeline config it names and that pipeline's Asset.

Read at parse time by the template (PyYAML and pydantic only): the Asset a drift check emits must be the
very Asset the target DAG is scheduled on, so it is taken from the target's own config model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.settings import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "dags" / "configs"


@dataclass(frozen=True)
class TargetAsset:
    """The Asset a drift check emits, and the DAG scheduled on it."""

    name: str
    uri: str
    dag_id: str
    action: str  # "retrain" or "reindex"


def target_config(name: str, expected_template: str, config_dir: Path = CONFIG_DIR) -> Any:
    """The validated config of ``dags/configs/<name>.yaml``, which must be of ``expected_template``.

    Raises:
        ValueError: the file is missing, is not YAML, is of another template or fails its model.
    """
    import yaml
    from pydantic import ValidationError

    from pipelines.rag.config import RagIndexConfig
    from pipelines.training.config import TrainingConfig

    models = {"training": TrainingConfig, "rag_index": RagIndexConfig}
    # A name is a YAML of dags/configs/; a path (ending in .yaml) names a file anywhere (tests, other repos).
    path = Path(name) if name.endswith((".yaml", ".yml")) else config_dir / f"{name}.yaml"
    if not path.is_absolute():
        path = CONFIG_DIR.parent.parent / path
    if not path.exists():
        raise ValueError(f"the drift check's target {name!r} has no config {path}: create it or fix "
                         f"{'tabular.training_config' if expected_template == 'training' else 'rag.rag_config'}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"target config {path} is not valid YAML: {exc}") from None
    template = raw.get("template") if isinstance(raw, dict) else None
    if template != expected_template:
        raise ValueError(f"target config {path} is a {template!r} config; the drift check needs a "
                         f"{expected_template!r} one")
    try:
        return models[expected_template].model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"target config {path} is invalid: {exc.errors()[0]['msg']}") from None


def target_asset(config, config_dir: Path = CONFIG_DIR) -> TargetAsset:
    """The Asset ``config`` (a DriftCheckConfig) emits when drift passes its policy."""
    if config.kind == "tabular":
        training = target_config(config.tabular.training_config, "training", config_dir)
        return TargetAsset(training.retrain_asset_name, f"loopline://retrain/{training.instance}",
                           training.dag_id, "retrain")
    rag = target_config(config.rag.rag_config, "rag_index", config_dir)
    return TargetAsset(rag.reindex_asset_name, rag.reindex_asset_uri, rag.dag_id, "reindex")
