"""Loopline's one settings object, fed by ``LOOPLINE_*`` environment variables.

Every path Loopline writes lives under the data home (``LOOPLINE_HOME``, default ``.loopline/`` in
the repository). Each embedded default (SQLite, DuckDB, file registry) has a production counterpart
that a setting switches on; see docs/operations.md.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class LooplineSettings(BaseSettings):
    """Typed configuration; each field reads ``LOOPLINE_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", extra="ignore")

    home: Path = Field(default=REPO_ROOT / ".loopline", description="The data home: all state lives here.")

    # Airflow: SQLite under the data home and the LocalExecutor unless told otherwise.
    airflow_database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of Airflow's metadata database, e.g. postgresql+psycopg2://…"
    )
    airflow_executor: str = "LocalExecutor"
    airflow_port: int = 8080

    # MLflow: a local SQLite backend store and artifacts under the data home unless a server is named.
    mlflow_tracking_uri: str | None = Field(
        default=None, description="Tracking server or database URI; default sqlite under the data home."
    )

    # dbt
    dbt_target: Literal["duckdb", "postgres"] = "duckdb"

    # Feast
    feast_online_store: Literal["sqlite", "redis"] = "sqlite"
    feast_redis_connection: str = "127.0.0.1:6379"
    feast_registry: Literal["file", "sql"] = "file"
    feast_registry_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loopline_feast"
    feast_offline_store: Literal["file", "duckdb"] = "file"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def data_home(self) -> Path:
        """The data home as an absolute path (relative values resolve against the repository)."""
        return self.home if self.home.is_absolute() else (REPO_ROOT / self.home).resolve()

    def path(self, *parts: str) -> Path:
        """A path under the data home."""
        return self.data_home.joinpath(*parts)

    def resolve(self, value: str | Path) -> Path:
        """Resolve a path from a YAML config: absolute stays, ``home:`` prefix means data home, else repo."""
        text = str(value)
        if text.startswith("home:"):
            return self.path(text.removeprefix("home:").lstrip("/"))
        candidate = Path(text).expanduser()
        return candidate if candidate.is_absolute() else (REPO_ROOT / candidate).resolve()

    @property
    def airflow_home(self) -> Path:
        return self.path("airflow")

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.path('mlflow', 'mlflow.db')}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.path("mlflow", "artifacts")

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB file dbt builds into (embedded default)."""
        return self.path("warehouse", "loopline.duckdb")

    @property
    def feast_home(self) -> Path:
        return self.path("feast")

    @property
    def quarantine_dir(self) -> Path:
        return self.path("quarantine")

    @property
    def reports_dir(self) -> Path:
        return self.path("reports")


@lru_cache(maxsize=1)
def get_settings() -> LooplineSettings:
    """The process-wide settings, read once from the environment."""
    return LooplineSettings()
