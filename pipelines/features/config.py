"""Config of the ``features`` template: landing partitions → dbt → Great Expectations → Feast."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipelines.core.assets import AssetRef, features_online
from pipelines.core.config import IDENTIFIER, PipelineBase, StrictModel


class SensorConfig(StrictModel):
    """How the sensor waits for a landing partition."""

    poke_interval_seconds: int = Field(60, ge=5)
    timeout_hours: float = Field(6, gt=0)
    mode: Literal["reschedule", "poke"] = "reschedule"  # reschedule: waiting holds no worker slot


class LandingTable(StrictModel):
    """One raw table of a landing partition: its file stem and the columns it must carry."""

    file: str
    columns: dict[str, Literal["int64", "float64", "string", "date", "timestamp"]]


class LandingConfig(StrictModel):
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


class DbtConfig(StrictModel):
    project: str = Field(description="dbt project folder, relative to the repository.")
    mart: str = Field(description="The mart model that becomes the feature table, one row per entity per day.")


class ValidationConfig(StrictModel):
    suite: str = Field(description="Great Expectations suite JSON, relative to the repository.")


class FeastConfig(StrictModel):
    repo: str = Field("feature_repo", description="Feast definitions folder, relative to the repository.")
    project: str = Field(pattern=IDENTIFIER)
    feature_views: list[str] = Field(min_length=1)
    feature_service: str
    entity_key: str | list[str] = Field(
        description="The Feast entity's join key, or its join keys in order when it has several (a composite key).")

    @field_validator("entity_key")
    @classmethod
    def _keys_named(cls, value: str | list[str]) -> str | list[str]:
        keys = [value] if isinstance(value, str) else value
        if not keys or len(set(keys)) != len(keys) or not all(keys):
            raise ValueError("must name one join key, or several distinct ones")
        return value

    @property
    def join_keys(self) -> list[str]:
        """The entity's join keys in order: ``[entity_key]`` for a single key."""
        return [self.entity_key] if isinstance(self.entity_key, str) else list(self.entity_key)


class FeaturesConfig(PipelineBase):
    """Template ``features``: landing → dbt → Great Expectations → Feast, one data interval per run."""

    template: Literal["features"]
    landing: LandingConfig
    dbt: DbtConfig
    validation: ValidationConfig
    feast: FeastConfig
    sensor: SensorConfig = SensorConfig()

    @property
    def features_asset(self) -> AssetRef:
        """The Asset this pipeline emits when an interval's features are online."""
        return features_online(self.instance)
