"""Loopline's one settings object, fed by ``LOOPLINE_*`` environment variables.

Every path Loopline writes lives under the data home (``LOOPLINE_HOME``, default ``.loopline/`` in
the repository). Each embedded default (SQLite, DuckDB, file registry) has a production counterpart
that a setting switches on; see docs/operations.md.
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, computed_field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.core import REPO_ROOT  # re-exported: settings.REPO_ROOT is what most callers import


class LooplineSettings(BaseSettings):
    """Typed configuration; each field reads ``LOOPLINE_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", extra="ignore")

    home: Path = Field(default=REPO_ROOT / ".loopline", description="The data home: all state lives here.")

    # One switch for the whole stack: "embedded" (SQLite, DuckDB, files; one machine, no server) or
    # "production" (Postgres, Redis, CeleryExecutor, an MLflow server). A field set explicitly wins
    # over what the profile implies; see docs/production.md.
    profile: Literal["embedded", "production"] = "embedded"
    postgres_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432",
        description="Production profile: the Postgres server (no database); loopline_* databases live on it.",
    )
    database_prefix: str = Field(default="loopline", pattern=r"^[a-z][a-z0-9_]{0,40}$")
    redis_url: str = Field(
        default="redis://127.0.0.1:6379",
        description="Production profile: Celery broker (db 0), Feast online store (db 1).",
    )
    mlflow_port: int = 5000
    celery_worker_concurrency: int = Field(default=1, ge=1, description="Task slots per Celery worker process.")
    airflow_api_url: str | None = Field(
        default=None, description="Where workers reach the api-server's Task Execution API; default localhost."
    )

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

    @model_validator(mode="after")
    def _apply_profile(self) -> LooplineSettings:
        if self.profile != "production":
            return self
        implied = {
            "airflow_database_url": self.database_url("airflow", driver="postgresql+psycopg2"),
            "airflow_executor": "CeleryExecutor",
            "mlflow_tracking_uri": f"http://127.0.0.1:{self.mlflow_port}",
            "dbt_target": "postgres",
            "feast_online_store": "redis",
            "feast_redis_connection": self._feast_redis_connection(),
            "feast_registry": "sql",
            "feast_registry_url": self.database_url("feast", driver="postgresql+psycopg"),
        }
        for field, value in implied.items():
            if field not in self.model_fields_set:
                object.__setattr__(self, field, value)
        return self

    def database_url(self, name: str, *, driver: str = "postgresql") -> str:
        """URL of the ``<prefix>_<name>`` database on the production Postgres server."""
        parts = urlsplit(self.postgres_url)
        return urlunsplit((driver, parts.netloc, f"/{self.database_prefix}_{name}", parts.query, ""))

    @property
    def redis_db(self) -> int:
        """The first of the two Redis databases the production profile uses (Celery; Feast takes the next)."""
        path = urlsplit(self.redis_url).path.strip("/")
        return int(path) if path else 0

    def redis_db_url(self, db: int) -> str:
        parts = urlsplit(self.redis_url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))

    def _feast_redis_connection(self) -> str:
        # Feast's own format: "host:port,db=N,password=…"
        parts = urlsplit(self.redis_url)
        connection = f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379},db={self.redis_db + 1}"
        return connection + (f",password={parts.password}" if parts.password else "")

    def as_environment(self) -> dict[str, str]:
        """``LOOPLINE_*`` variables for the fields set explicitly, so child processes read the same settings."""
        env = {}
        for name in sorted(self.model_fields_set | {"profile"}):
            value = getattr(self, name)
            env[f"LOOPLINE_{name.upper()}"] = str(self.data_home if name == "home" else value)
        return env

    @property
    def secrets(self) -> set[str]:
        """Passwords in any setting (URL user info, ``password=`` parts): masked in task logs, never shown in the UI."""
        found: set[str] = set()
        for value in self.model_dump(mode="json").values():
            if isinstance(value, str):
                found |= passwords_in(value)
        return found

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

    # The services' own state; everything Loopline keeps is laid out by pipelines.core.home.DataHome.
    @property
    def airflow_home(self) -> Path:
        return self.path("airflow")

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.path('mlflow', 'mlflow.db')}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.path("mlflow", "artifacts")


def passwords_in(value: str) -> set[str]:
    """The passwords a string carries: the user info of URLs (``scheme://user:pw@host``) and ``password=…``,
    ``token=…`` style parts (Feast's Redis connection string, query strings)."""
    found = set()
    for match in re.finditer(r"[a-zA-Z][a-zA-Z0-9+.-]*://([^/@\s]+)@", value):
        userinfo = match.group(1)
        if ":" in userinfo:
            found.add(userinfo.split(":", 1)[1])
    for match in re.finditer(r"(?:password|passwd|pwd|token|secret|api_key)=([^&,;\s]+)", value, re.I):
        found.add(match.group(1))
    return found


@lru_cache(maxsize=1)
def get_settings() -> LooplineSettings:
    """The process-wide settings, read once from the environment.

    Inside an Airflow task the passwords of the configured URLs are registered with Airflow's
    secrets masker, so a log line that shows a URL shows ``***`` in its place.
    """
    settings = LooplineSettings()
    if "airflow.sdk.execution_time.task_runner" in sys.modules:
        from airflow.sdk.log import mask_secret

        for secret in settings.secrets:
            mask_secret(secret)
    return settings
