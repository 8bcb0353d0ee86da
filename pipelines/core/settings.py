"""Loopline's one settings object, fed by ``LOOPLINE_*`` environment variables.

Every path Loopline writes lives under the data home (``LOOPLINE_HOME``, default ``.loopline/`` in
the repository). Each embedded default (SQLite, DuckDB, file registry) has a production counterpart
that a setting switches on; see docs/operations.md.
"""

from __future__ import annotations

import os
import re
import secrets as _secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
    # Loopback unless told otherwise: docker/compose.yaml sets 0.0.0.0 inside its private network.
    mlflow_host: str = Field(default="127.0.0.1", description="Address the production profile's MLflow server binds.")
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
    airflow_host: str = Field(default="127.0.0.1", description="Address the api-server binds ([api] host).")
    admin_password: str | None = Field(
        default=None, repr=False,
        description="Password of Airflow's admin user; unset: generated once into a 0600 file of the data home.",
    )

    # MLflow: a local SQLite backend store and artifacts under the data home unless a server is named.
    mlflow_tracking_uri: str | None = Field(
        default=None, description="Tracking server or database URI; default sqlite under the data home."
    )
    # MLflow's basic auth (production profile): every Loopline client sends these as
    # MLFLOW_TRACKING_USERNAME/PASSWORD. Unset password: the one generated into the data home.
    mlflow_tracking_username: str = "admin"
    mlflow_tracking_password: str | None = Field(default=None, repr=False)
    mlflow_http_timeout_s: int = Field(default=30, ge=1, description="MLFLOW_HTTP_REQUEST_TIMEOUT of every client.")
    mlflow_http_max_retries: int = Field(default=2, ge=0, description="MLFLOW_HTTP_REQUEST_MAX_RETRIES.")

    # A Postgres server that accepts TCP but never answers must not hold a task or a worker forever.
    postgres_connect_timeout_s: int = Field(default=10, ge=1, description="connect_timeout of every Postgres URL.")

    # OpenLineage (Airflow's provider): every task's run events go to a file under the data home, or to this
    # endpoint (Marquez, say: http://localhost:5000) when set.
    openlineage_url: str | None = Field(default=None, description="OpenLineage HTTP endpoint; default: a file.")

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
        """URL of the ``<prefix>_<name>`` database on the production Postgres server.

        It carries ``connect_timeout`` (``LOOPLINE_POSTGRES_CONNECT_TIMEOUT_S``) unless the server URL sets one:
        libpq, psycopg and SQLAlchemy all read it from the query string.
        """
        return self.server_database_url(f"{self.database_prefix}_{name}", driver=driver)

    def server_database_url(self, database: str, *, driver: str = "postgresql") -> str:
        """URL of any database on the production Postgres server (``postgres`` to create the others)."""
        parts = urlsplit(self.postgres_url)
        query = dict(parse_qsl(parts.query))
        query.setdefault("connect_timeout", str(self.postgres_connect_timeout_s))
        return urlunsplit((driver, parts.netloc, f"/{database}", urlencode(query), ""))

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
        """Passwords in any setting (URL user info, ``password=`` parts, the admin and MLflow passwords): masked in
        task logs, never shown in the UI."""
        found: set[str] = set()
        for value in self.model_dump(mode="json").values():
            if isinstance(value, str):
                found |= passwords_in(value)
        credentials = self.mlflow_credentials()
        found |= {value for value in (self.admin_password, credentials and credentials[1]) if value}
        return found

    # --- Credentials and clients of the production profile's servers ------------------------------------

    @property
    def admin_password_file(self) -> Path:
        """Where the production profile keeps Airflow's generated admin password (mode 0600)."""
        return self.path("airflow", "admin-password")

    @property
    def mlflow_password_file(self) -> Path:
        """Where the production profile keeps the MLflow server's generated admin password (mode 0600)."""
        return self.path("mlflow", "admin-password")

    def mlflow_credentials(self) -> tuple[str, str] | None:
        """(username, password) the MLflow clients send, or None where the store needs none (a local store)."""
        if self.mlflow_tracking_password:
            return self.mlflow_tracking_username, self.mlflow_tracking_password
        if self.profile == "production" and self.mlflow_password_file.is_file():
            return self.mlflow_tracking_username, self.mlflow_password_file.read_text().strip()
        return None

    def mlflow_client_environment(self) -> dict[str, str]:
        """The environment MLflow's client reads at each request: credentials, timeout and retries.

        MLflow takes basic-auth credentials only from ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` (no client
        argument), so every process that talks to the server gets them this way.
        """
        env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.mlflow_http_timeout_s),
               "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.mlflow_http_max_retries)}
        credentials = self.mlflow_credentials()
        if credentials and not self.mlflow_uri.startswith("sqlite:"):
            env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = credentials
        return env

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


class ServiceUnreachable(ConnectionError):
    """A server Loopline needs (Postgres, MLflow) did not answer within its timeout: retryable, nothing written."""


def write_private_file(path: Path, text: str, *, replace: bool = False) -> bool:
    """Write ``text`` to ``path`` readable by its owner only (0600 from the first byte), atomically.

    The file is created under a temporary name with mode 0600 and then linked (or, with ``replace``,
    renamed) into place, so no reader ever sees it partly written or with wider permissions, and it is
    never chmod'ed after the secret is in it. Returns False when ``path`` exists and ``replace`` is off
    (two processes racing keep the first one's value).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{_secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path)  # fails if present: never overwrites a secret someone already uses
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)


def secret_from(value: str | None, path: Path) -> str:
    """``value`` when given (a setting from the environment), else the secret kept in ``path``, generated there once."""
    if value:
        return value
    write_private_file(path, _secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def connect_postgres(settings: LooplineSettings, name: str | None, **kwargs: Any):
    """A psycopg connection to the ``<prefix>_<name>`` database (None: the server's ``postgres`` database)
    that gives up after the connect timeout.

    Raises:
        ServiceUnreachable: the server did not answer within ``LOOPLINE_POSTGRES_CONNECT_TIMEOUT_S``.
    """
    import psycopg

    database = f"{settings.database_prefix}_{name}" if name else "postgres"
    url = settings.server_database_url(database)
    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.OperationalError as exc:
        if "timeout expired" not in str(exc):
            raise
        where = urlsplit(url)
        raise ServiceUnreachable(
            f"Postgres at {where.hostname}:{where.port or 5432} (database {database}) did not "
            f"answer within {settings.postgres_connect_timeout_s} s (LOOPLINE_POSTGRES_CONNECT_TIMEOUT_S): check that "
            f"the server runs and is reachable from here (LOOPLINE_POSTGRES_URL), or raise the timeout") from None


@contextmanager
def using_mlflow_client_environment(settings: LooplineSettings) -> Iterator[None]:
    """Set :meth:`LooplineSettings.mlflow_client_environment` in this process for the block, then restore."""
    wanted = settings.mlflow_client_environment()  # reads the password file once
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_mlflow(settings: LooplineSettings) -> None:
    """One real MLflow client call against the configured server, with Loopline's credentials and timeouts.

    Raises:
        ServiceUnreachable: no answer within ``LOOPLINE_MLFLOW_HTTP_TIMEOUT_S`` (after
            ``LOOPLINE_MLFLOW_HTTP_MAX_RETRIES`` retries).
        PermissionError: the server refused the credentials (``LOOPLINE_MLFLOW_TRACKING_PASSWORD``).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = settings.mlflow_uri
    with using_mlflow_client_environment(settings):
        try:
            MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
        except MlflowException as exc:
            text = str(exc)
            if "error code 401" in text or "not authenticated" in text.lower():
                raise PermissionError(
                    f"the MLflow server {uri} refused user {settings.mlflow_tracking_username!r}: set "
                    f"LOOPLINE_MLFLOW_TRACKING_PASSWORD (or keep {settings.mlflow_password_file}) to the server's "
                    f"admin password") from None
            if any(word in text for word in ("timed out", "Timeout", "Max retries", "Connection", "connect")):
                raise ServiceUnreachable(
                    f"the MLflow server {uri} did not answer within {settings.mlflow_http_timeout_s} s "
                    f"(LOOPLINE_MLFLOW_HTTP_TIMEOUT_S) after {settings.mlflow_http_max_retries} retries "
                    f"(LOOPLINE_MLFLOW_HTTP_MAX_RETRIES): check that it runs and is reachable "
                    f"(LOOPLINE_MLFLOW_TRACKING_URI), or raise the timeout") from None
            raise


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
    # MLflow's client reads credentials, timeout and retries from the environment at each request: every
    # Loopline process (a task, the page, a CLI) gets Loopline's values unless MLflow's own variables are set.
    for name, value in settings.mlflow_client_environment().items():
        os.environ.setdefault(name, value)
    if "airflow.sdk.execution_time.task_runner" in sys.modules:
        from airflow.sdk.log import mask_secret

        for secret in settings.secrets:
            mask_secret(secret)
    return settings
