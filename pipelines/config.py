"""Pipeline configs: one YAML file in ``dags/configs/`` per pipeline instance, validated by pydantic.

A config names a ``template`` and carries that template's parameters. :func:`load_config` turns one
file into a typed model or raises :class:`PipelineConfigError` naming the file and the field, so that
Airflow can show it as an import error for that file alone.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

IDENTIFIER = r"^[a-z][a-z0-9_]*$"


class PipelineConfigError(ValueError):
    """A pipeline YAML file that cannot become a DAG; the message names the file and the field."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path.parent.name}/{path.name}: " + "; ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SensorConfig(_Strict):
    """How the sensor waits for a landing partition."""

    poke_interval_seconds: int = Field(60, ge=5)
    timeout_hours: float = Field(6, gt=0)
    mode: Literal["reschedule", "poke"] = "reschedule"  # reschedule: waiting holds no worker slot


class LandingTable(_Strict):
    """One raw table of a landing partition: its file stem and the columns it must carry."""

    file: str
    columns: dict[str, Literal["int64", "float64", "string", "date", "timestamp"]]


class LandingConfig(_Strict):
    """Where raw daily partitions land and what they look like."""

    path: str = Field(description="Folder of partitions; 'home:' prefix = under the data home.")
    format: Literal["parquet", "csv"] = "parquet"
    partition: str = Field("ds={ds}", description="Partition folder name; {ds} is the day, YYYY-MM-DD.")
    ready_marker: str | None = Field("_SUCCESS", description="File written last; null to need none.")
    tables: dict[str, LandingTable]

    @field_validator("partition")
    @classmethod
    def _has_ds(cls, value: str) -> str:
        if "{ds}" not in value:
            raise ValueError("must contain {ds}, the day placeholder")
        return value


class DbtConfig(_Strict):
    project: str = Field(description="dbt project folder, relative to the repository.")
    mart: str = Field(description="The mart model that becomes the feature table, one row per entity per day.")


class ValidationConfig(_Strict):
    suite: str = Field(description="Great Expectations suite JSON, relative to the repository.")


class FeastConfig(_Strict):
    repo: str = Field("feature_repo", description="Feast definitions folder, relative to the repository.")
    project: str = Field(pattern=IDENTIFIER)
    feature_views: list[str] = Field(min_length=1)
    feature_service: str
    entity_key: str


class _PipelineBase(_Strict):
    instance: str = Field(pattern=IDENTIFIER, description="Use-case name; the DAG id is {instance}_{template}.")
    description: str = ""
    owner: str = "loopline"
    schedule: str = "@daily"
    start_date: datetime = datetime(2026, 11, 1, tzinfo=timezone.utc)
    retries: int = Field(1, ge=0, le=10)
    retry_delay_minutes: float = Field(5, ge=0)
    tags: list[str] = Field(default_factory=list)

    @field_validator("start_date")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    @property
    def dag_id(self) -> str:
        return f"{self.instance}_{self.template}"  # type: ignore[attr-defined]


class FeaturesConfig(_PipelineBase):
    """Template ``features``: landing → dbt → Great Expectations → Feast, one data interval per run."""

    template: Literal["features"]
    landing: LandingConfig
    dbt: DbtConfig
    validation: ValidationConfig
    feast: FeastConfig
    sensor: SensorConfig = SensorConfig()

    @property
    def features_asset_name(self) -> str:
        """The Asset this pipeline emits when an interval's features are online."""
        return f"{self.instance}_features"


PipelineConfig = Annotated[Union[FeaturesConfig], Field(discriminator="template")]
_ADAPTER: TypeAdapter[FeaturesConfig] = TypeAdapter(PipelineConfig)
TEMPLATES = ("features",)


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


def load_config(path: Path) -> FeaturesConfig:
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
