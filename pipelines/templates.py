"""Pipeline configs: one YAML file in ``dags/configs/`` per pipeline instance, validated by pydantic.

A config names a ``template`` and carries that template's parameters. :func:`load_config` turns one
file into a typed model or raises :class:`PipelineConfigError` naming the file and the field, so that
Airflow can show it as an import error for that file alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Union

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from pipelines.core.config import PipelineBase
from pipelines.drift.config import DriftCheckConfig
from pipelines.features.config import FeaturesConfig
from pipelines.lora.config import LoraTuneConfig
from pipelines.rag.config import RagIndexConfig
from pipelines.training.config import TrainingConfig

__all__ = ["DriftCheckConfig", "FeaturesConfig", "LoraTuneConfig", "RagIndexConfig", "TrainingConfig", "PipelineBase", "PipelineConfig", "PipelineConfigError", "config_files", "load_config"]


class PipelineConfigError(ValueError):
    """A pipeline YAML file that cannot become a DAG; the message names the file and the field."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path.parent.name}/{path.name}: " + "; ".join(problems))


PipelineConfig = Annotated[
    Union[FeaturesConfig, TrainingConfig, RagIndexConfig, LoraTuneConfig, DriftCheckConfig],
    Field(discriminator="template"),
]
_ADAPTER: TypeAdapter[PipelineBase] = TypeAdapter(PipelineConfig)
TEMPLATES = ("features", "training", "rag_index", "lora_tune", "drift_check")


def _describe(error: dict) -> str:
    loc = list(error["loc"])
    if loc and loc[0] in TEMPLATES:  # pydantic prefixes the discriminator's value
        loc = loc[1:]
    where = ".".join(str(part) for part in loc) or "(top level)"
    if error["type"] == "union_tag_invalid":
        return f"template: unknown template {error['input'].get('template')!r}; known: {', '.join(TEMPLATES)}"
    if error["type"] == "union_tag_not_found":
        return f"template: missing; one of {', '.join(TEMPLATES)}"
    if error["type"] == "missing":
        return f"{where}: field required"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown field"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


def load_config(path: Path) -> PipelineBase:
    """Read and validate one pipeline YAML file.

    Raises:
        PipelineConfigError: the YAML does not parse or does not match its template's model.
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PipelineConfigError(path, [f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(raw, dict):
        raise PipelineConfigError(path, ["expected a mapping with a 'template' field"])
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise PipelineConfigError(path, [_describe(e) for e in exc.errors()]) from None


def config_files(config_dir: Path) -> list[Path]:
    """The pipeline YAML files of a folder, in a stable order."""
    return sorted([*config_dir.glob("*.yaml"), *config_dir.glob("*.yml")])
