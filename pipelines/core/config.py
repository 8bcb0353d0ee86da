"""What every pipeline config has: the instance name, schedule, owner, retries, tags."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

IDENTIFIER = r"^[a-z][a-z0-9_]*$"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineBase(StrictModel):
    instance: str = Field(pattern=IDENTIFIER, description="Use-case name; the DAG id is {instance}_{template}.")
    description: str = ""
    owner: str = "loopline"
    schedule: str = "@daily"
    start_date: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    retries: int = Field(1, ge=0, le=10)
    retry_delay_minutes: float = Field(5, ge=0)
    task_timeout_minutes: float = Field(
        120, gt=0, le=24 * 60,
        description="Every task's execution_timeout: a task running longer (a hung connection, a stuck lock) fails "
                    "and is retried instead of holding a worker slot forever.")
    tags: list[str] = Field(default_factory=list)

    @field_validator("start_date")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @property
    def dag_id(self) -> str:
        return f"{self.instance}_{self.template}"  # type: ignore[attr-defined]
