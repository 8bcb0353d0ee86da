"""The production profile's settings: what LOOPLINE_PROFILE=production implies, and secrets kept out of logs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipelines.core.production import COMPONENTS, command_for, production_environment
from pipelines.core.settings import REPO_ROOT, LooplineSettings

pytestmark = pytest.mark.unit

SERVER = "postgresql://loopline:s3cret-pw@db.internal:5432"


def production(**overrides) -> LooplineSettings:
    return LooplineSettings(profile="production", postgres_url=SERVER, redis_url="redis://cache:6379/4", **overrides)


def test_production_profile_implies_postgres_redis_celery_and_a_server():
    settings = production()
    assert settings.airflow_executor == "CeleryExecutor"
    assert settings.airflow_database_url == "postgresql+psycopg2://loopline:s3cret-pw@db.internal:5432/loopline_airflow"
    assert settings.mlflow_uri == "http://127.0.0.1:5000"
    assert settings.dbt_target == "postgres"
    assert settings.feast_online_store == "redis" and settings.feast_redis_connection == "cache:6379,db=5"
    assert settings.feast_registry == "sql"
    assert settings.feast_registry_url == "postgresql+psycopg://loopline:s3cret-pw@db.internal:5432/loopline_feast"


def test_a_field_set_explicitly_wins_over_the_profile():
    settings = production(mlflow_tracking_uri="http://mlflow:5000", feast_online_store="sqlite",
                          database_prefix="team_a")
    assert settings.mlflow_uri == "http://mlflow:5000"
    assert settings.feast_online_store == "sqlite"
    assert settings.database_url("warehouse") == "postgresql://loopline:s3cret-pw@db.internal:5432/team_a_warehouse"


def test_embedded_profile_is_unchanged():
    settings = LooplineSettings()
    assert (settings.airflow_executor, settings.dbt_target, settings.feast_online_store, settings.feast_registry) == (
        "LocalExecutor", "duckdb", "sqlite", "file")
    assert settings.mlflow_uri.startswith("sqlite:///")


def test_child_processes_read_the_same_settings(monkeypatch):
    settings = production(home="/tmp/loopline-x", mlflow_port=5071, celery_worker_concurrency=2)
    for name, value in settings.as_environment().items():
        monkeypatch.setenv(name, value)
    assert LooplineSettings() == settings


def test_production_environment_runs_airflow_on_celery_with_shared_secrets(tmp_path, monkeypatch):
    for name in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = production(home=tmp_path)
    env = production_environment(settings, port=8099)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://cache:6379/4"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8099/execution/"
    again = production_environment(settings, port=8099)  # generated once, then kept: tokens survive restarts
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == again["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert oct((tmp_path / "airflow" / "production-secrets.json").stat().st_mode & 0o777) == "0o600"


def test_every_component_has_a_real_command(tmp_path):
    settings = production(home=tmp_path)
    commands = {component: command_for(component, settings) for component in COMPONENTS}
    assert commands["celery-worker"][1:3] == ["celery", "worker"]
    assert "--backend-store-uri" in commands["mlflow-server"]
    with pytest.raises(ValueError, match="unknown component 'webserver'; known: init, up"):
        command_for("webserver", settings)


def test_embedded_profile_is_refused_by_the_production_runner():
    with pytest.raises(SystemExit, match="LOOPLINE_PROFILE=production"):
        production_environment(LooplineSettings())


def test_passwords_are_masked_in_task_logs():
    """Inside a task process, get_settings() registers the URL passwords with Airflow's secrets masker."""
    script = (
        "import airflow.sdk.execution_time.task_runner\n"
        "from airflow.sdk._shared.secrets_masker import redact\n"
        "from pipelines.core.settings import LooplineSettings, get_settings\n"
        "print(redact('before: ' + LooplineSettings().database_url('warehouse')))\n"
        "print(redact('after: ' + get_settings().database_url('warehouse')))\n"
    )
    env = {**os.environ, "LOOPLINE_PROFILE": "production", "LOOPLINE_POSTGRES_URL": SERVER}
    shown = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                           check=True).stdout
    before, after = shown.splitlines()
    assert before == f"before: {SERVER}/loopline_warehouse"  # Airflow alone does not know it is a secret
    assert after == "after: postgresql://loopline:***@db.internal:5432/loopline_warehouse"
