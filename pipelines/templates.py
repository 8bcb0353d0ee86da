"""The templates and their configs: one YAML file in ``dags/configs/`` per pipeline instance, validated by pydantic.

:data:`TEMPLATES` is the one list of templates: each name maps to its config model (in the domain's
``config.py``) and to its DAG builder (``dags/loopline_templates/<name>.py``, function ``build_dag``). A
config names a ``template`` and carries that template's parameters; :func:`load_config` turns one file into
a typed model or raises :class:`PipelineConfigError` naming the file and the field, so that Airflow can show
it as an import error for that file alone. Only the named template's model is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipelines.core import REPO_ROOT
from pipelines.core.config import PipelineBase

CONFIG_DIR = REPO_ROOT / "dags" / "configs"


@dataclass(frozen=True)
class Template:
    """A template: the module and class of its config model; its DAG builder is ``loopline_templates.<name>``."""

    name: str
    config_module: str
    config_class: str

    @property
    def model(self) -> type[PipelineBase]:
        return getattr(import_module(self.config_module), self.config_class)

    @property
    def builder_module(self) -> str:
        """The module (under ``dags/``) whose ``build_dag(config)`` builds this template's DAGs."""
        return f"loopline_templates.{self.name}"


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("features", "pipelines.features.config", "FeaturesConfig"),
    Template("training", "pipelines.training.config", "TrainingConfig"),
    Template("rag_index", "pipelines.rag.config", "RagIndexConfig"),
    Template("lora_tune", "pipelines.lora.config", "LoraTuneConfig"),
    Template("drift_check", "pipelines.drift.config", "DriftCheckConfig"),
    Template("assistant", "pipelines.assistant.config", "AssistantConfig"),
    Template("llm_eval", "pipelines.llm_eval.config", "LlmEvalConfig"),
    Template("assistant_fallback", "pipelines.llm_eval.config", "AssistantFallbackConfig"),
)}


class PipelineConfigError(ValueError):
    """A pipeline YAML file that cannot become a DAG; the message names the file and the field."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path.parent.name}/{path.name}: " + "; ".join(problems))


def describe_error(error: dict[str, Any]) -> str:
    """One pydantic error as ``field.path: what is wrong (got value)``."""
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "missing":
        return f"{where}: field required"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown field"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file's mapping. Raises PipelineConfigError when it is not YAML or not a mapping."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PipelineConfigError(path, [f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(raw, dict):
        raise PipelineConfigError(path, ["expected a mapping with a 'template' field"])
    return raw


def load_config(path: Path, template: str | None = None) -> Any:
    """Read and validate one pipeline YAML file (of ``template``, when given).

    Raises:
        PipelineConfigError: the YAML does not parse, names an unknown or unexpected template, or does
            not match its template's model.
    """
    path = Path(path)
    raw = read_yaml(path)
    name = raw.get("template")
    known = ", ".join(TEMPLATES)
    if name is None:
        raise PipelineConfigError(path, [f"template: missing; one of {known}"])
    if name not in TEMPLATES:
        raise PipelineConfigError(path, [f"template: unknown template {name!r}; known: {known}"])
    if template is not None and name != template:
        raise PipelineConfigError(path, [f"template: this file is a {name!r} config, but its DAG file builds "
                                         f"a {template!r} DAG; fix one of the two"])
    try:
        return TEMPLATES[name].model.model_validate(raw)
    except ValidationError as exc:
        raise PipelineConfigError(path, [describe_error(e) for e in exc.errors()]) from None


def config_path(name: str, config_dir: Path = CONFIG_DIR) -> Path:
    """The YAML of the pipeline ``name`` (``dags/configs/<name>.yaml`` or ``.yml``).

    A ``name`` ending in ``.yaml`` or ``.yml`` is a path instead: a file anywhere (tests, another repository),
    a relative one against the repository.
    """
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        return path if path.is_absolute() else REPO_ROOT / path
    for suffix in (".yaml", ".yml"):
        candidate = config_dir / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    return config_dir / f"{name}.yaml"


def load_named(name: str, template: str | None = None, config_dir: Path = CONFIG_DIR) -> Any:
    """The validated config of pipeline ``name`` in ``config_dir`` (by default ``dags/configs/``)."""
    return load_config(config_path(name, config_dir), template)


def config_path_for(dag_file: str | Path) -> Path:
    """The YAML config that a DAG file stands for: same name, in the ``configs/`` folder beside it."""
    path = config_path(Path(dag_file).stem, Path(dag_file).resolve().parent / "configs")
    if not path.exists():
        raise FileNotFoundError(
            f"{Path(dag_file).name} has no config: expected dags/configs/{path.stem}.yaml "
            "(a DAG file only loads the config of the same name)"
        )
    return path


def config_files(config_dir: Path = CONFIG_DIR) -> list[Path]:
    """The pipeline YAML files of a folder, in a stable order."""
    return sorted([*config_dir.glob("*.yaml"), *config_dir.glob("*.yml")])
