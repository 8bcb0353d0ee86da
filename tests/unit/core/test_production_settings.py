"""The production profile's settings: what LOOPLINE_PROFILE=production implies, secrets kept out of logs, argv
and other users' reach, and the embedded runtime's (``make up``) loopback binding and password file."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys

import pytest

from pipelines.core import airflow_runtime
from pipelines.core import production as runner
from pipelines.core.production import COMPONENTS, command_for, production_environment
from pipelines.core.settings import REPO_ROOT, LooplineSettings, write_private_file

pytestmark = pytest.mark.unit

SERVER = "postgresql://loopline:s3cret-pw@db.internal:5432"


def production(**overrides) -> LooplineSettings:
    return LooplineSettings(**{"profile": "production", "postgres_url": SERVER, "redis_url": "redis://cache:6379/4",
                               **overrides})


def test_production_profile_implies_postgres_redis_celery_and_a_server():
    settings = production()
    assert settings.airflow_executor == "CeleryExecutor"
    assert settings.airflow_database_url == (
        "postgresql+psycopg2://loopline:s3cret-pw@db.internal:5432/loopline_airflow?connect_timeout=10")
    assert settings.mlflow_uri == "http://127.0.0.1:5000"
    assert settings.dbt_target == "postgres"
    assert settings.feast_online_store == "redis" and settings.feast_redis_connection == "cache:6379,db=5"
    assert settings.feast_registry == "sql"
    assert settings.feast_registry_url == (
        "postgresql+psycopg://loopline:s3cret-pw@db.internal:5432/loopline_feast?connect_timeout=10")


def test_a_field_set_explicitly_wins_over_the_profile():
    settings = production(mlflow_tracking_uri="http://mlflow:5000", feast_online_store="sqlite",
                          database_prefix="team_a")
    assert settings.mlflow_uri == "http://mlflow:5000"
    assert settings.feast_online_store == "sqlite"
    assert settings.database_url("warehouse") == (
        "postgresql://loopline:s3cret-pw@db.internal:5432/team_a_warehouse?connect_timeout=10")


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
    assert commands["mlflow-server"][1:4] == ["server", "--app-name", "basic-auth"]
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
    assert before == f"before: {SERVER}/loopline_warehouse?connect_timeout=10"  # Airflow alone does not know it
    assert after == "after: postgresql://loopline:***@db.internal:5432/loopline_warehouse?connect_timeout=10"


# --- Timeouts -------------------------------------------------------------------------------------------


def test_every_postgres_url_carries_the_connect_timeout(tmp_path):
    settings = production(home=tmp_path, postgres_connect_timeout_s=7)
    urls = [settings.database_url("warehouse"), settings.airflow_database_url, settings.feast_registry_url,
            production_environment(settings)["AIRFLOW__CELERY__RESULT_BACKEND"],
            runner.mlflow_server_environment(settings)["MLFLOW_BACKEND_STORE_URI"]]
    assert all(url.endswith("?connect_timeout=7") for url in urls), urls
    # A timeout the server URL names itself wins; its other parameters are kept.
    explicit = production(postgres_url=SERVER + "?sslmode=require&connect_timeout=3")
    assert explicit.database_url("mlflow").endswith("/loopline_mlflow?sslmode=require&connect_timeout=3")


def test_mlflow_clients_get_timeout_retries_and_credentials(tmp_path):
    settings = production(home=tmp_path, mlflow_http_timeout_s=9, mlflow_http_max_retries=1,
                          mlflow_tracking_password="ml-pw")
    assert settings.mlflow_client_environment() == {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "ml-pw"}
    env = production_environment(settings, port=8099)
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == ("admin", "ml-pw")
    assert (env["MLFLOW_HTTP_REQUEST_TIMEOUT"], env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) == ("9", "1")
    # A local store needs no credentials: none are sent, the timeouts still are.
    assert set(LooplineSettings(home=tmp_path).mlflow_client_environment()) == {
        "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"}


def test_a_cli_process_gets_the_mlflow_client_environment_from_get_settings(tmp_path):
    script = ("import os; from pipelines.core.settings import get_settings; get_settings(); "
              "print(os.environ['MLFLOW_TRACKING_PASSWORD'], os.environ['MLFLOW_HTTP_REQUEST_TIMEOUT'])")
    env = {**os.environ, "LOOPLINE_PROFILE": "production", "LOOPLINE_HOME": str(tmp_path),
           "LOOPLINE_MLFLOW_TRACKING_PASSWORD": "cli-pw", "LOOPLINE_MLFLOW_HTTP_TIMEOUT_S": "11"}
    for name in ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        env.pop(name, None)
    shown = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    assert shown == ["cli-pw", "11"]


# --- Secrets: files, argv, the auth managers ----------------------------------------------------------------


@contextlib.contextmanager
def permissive_umask():
    """umask 000: a file created without an explicit mode would be world-readable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> str:
    return oct(stat.S_IMODE(os.stat(path).st_mode))


def test_private_files_are_0600_from_the_start_and_never_overwritten(tmp_path):
    target = tmp_path / "sub" / "secret"
    with permissive_umask():
        assert write_private_file(target, "first") is True
        assert write_private_file(target, "second") is False  # a racing second writer keeps the first value
    assert target.read_text() == "first" and mode(target) == "0o600"
    first_inode = target.stat().st_ino
    with permissive_umask():
        assert write_private_file(target, "rotated", replace=True) is True
    assert target.read_text() == "rotated" and mode(target) == "0o600"
    assert target.stat().st_ino != first_inode  # replaced by a rename, never rewritten in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["secret"]  # no temporary file left


def test_production_secrets_file_is_created_0600_even_under_a_permissive_umask(tmp_path, monkeypatch):
    for name in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        monkeypatch.delenv(name, raising=False)
    with permissive_umask():
        production_environment(production(home=tmp_path))
    for path in (tmp_path / "airflow" / "production-secrets.json", tmp_path / "mlflow" / "admin-password"):
        assert mode(path) == "0o600", path


def test_admin_password_comes_from_the_environment_or_one_generated_0600_file(tmp_path):
    generated = production(home=tmp_path)
    first = runner.admin_password(generated)
    assert first == runner.admin_password(generated) and len(first) >= 20  # generated once, then kept
    assert mode(generated.admin_password_file) == "0o600"
    assert runner.admin_password_source(generated) == str(generated.admin_password_file)
    given = production(home=tmp_path, admin_password="from-env-pw")
    assert runner.admin_password(given) == "from-env-pw"
    assert runner.admin_password_source(given) == "LOOPLINE_ADMIN_PASSWORD"


def test_production_airflow_runs_the_fab_auth_manager(tmp_path):
    env = production_environment(production(home=tmp_path), port=8099)
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    assert not any(name.startswith("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER") for name in env)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"


def test_mlflow_server_binds_loopback_runs_basic_auth_and_keeps_secrets_off_its_command_line(tmp_path):
    settings = production(home=tmp_path, mlflow_tracking_password="ml-admin-pw")
    command = command_for("mlflow-server", settings)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert "--app-name" in command and command[command.index("--app-name") + 1] == "basic-auth"
    assert not [arg for arg in command if "s3cret-pw" in arg or "ml-admin-pw" in arg or "postgresql" in arg]
    env = runner.mlflow_server_environment(settings)
    assert env["MLFLOW_BACKEND_STORE_URI"] == settings.database_url("mlflow")  # by environment instead
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "ml-admin-pw"
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    config = tmp_path / "mlflow" / "basic_auth.ini"
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(config) and mode(config) == "0o600"
    assert "password" not in config.read_text().replace("authenticate_request_basic_auth", "")
    # docker/compose.yaml opens it on its private network with LOOPLINE_MLFLOW_HOST.
    opened = command_for("mlflow-server", production(home=tmp_path, mlflow_host="0.0.0.0"))
    assert opened[opened.index("--host") + 1] == "0.0.0.0"


def test_api_server_binds_loopback_unless_told_otherwise(tmp_path):
    command = command_for("api-server", production(home=tmp_path))
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command_for("api-server", production(home=tmp_path, airflow_host="0.0.0.0"))[3] == "0.0.0.0"


def test_production_up_prints_where_the_passwords_are_never_the_passwords(tmp_path, monkeypatch, capsys):
    settings = production(home=tmp_path, admin_password="admin-canary-pw", mlflow_tracking_password="ml-canary-pw")

    @contextlib.contextmanager
    def started(_settings):
        yield runner.ProductionStack(
            client=airflow_runtime.AirflowClient("http://127.0.0.1:8099", "admin-canary-pw"), settings=_settings,
            worker_names=["worker-1"], log_dir=tmp_path, processes={})

    monkeypatch.setattr(runner, "get_settings", lambda: settings)
    monkeypatch.setattr(runner, "production_stack", started)
    monkeypatch.setattr(runner.signal, "pause", lambda: None)
    runner.main(["up"])
    shown = capsys.readouterr().out
    assert "canary" not in shown
    assert "password in LOOPLINE_ADMIN_PASSWORD" in shown and "password in LOOPLINE_MLFLOW_TRACKING_PASSWORD" in shown
    generated = production(home=tmp_path / "other")
    monkeypatch.setattr(runner, "get_settings", lambda: generated)
    runner.main(["up"])
    assert f"password in {generated.admin_password_file}" in capsys.readouterr().out


# --- The embedded runtime (make up) ---------------------------------------------------------------------


def test_embedded_airflow_binds_loopback_and_names_its_password_file(tmp_path):
    settings = LooplineSettings(home=tmp_path)
    env = airflow_runtime.airflow_environment(settings, port=8099)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(
        tmp_path / "airflow" / "simple_auth_manager_passwords.json.generated")


def test_embedded_password_file_is_written_0600_before_airflow_starts(tmp_path):
    settings = LooplineSettings(home=tmp_path)
    with permissive_umask():
        path = airflow_runtime.ensure_simple_auth_password(settings)
    password = json.loads(path.read_text())["admin"]
    assert mode(path) == "0o600" and len(password) >= 20
    assert airflow_runtime.ensure_simple_auth_password(settings) == path
    assert json.loads(path.read_text())["admin"] == password  # kept across restarts
    # LOOPLINE_ADMIN_PASSWORD wins; a file left readable by others is replaced by a 0600 one.
    os.chmod(path, 0o644)
    airflow_runtime.ensure_simple_auth_password(LooplineSettings(home=tmp_path, admin_password="chosen-pw"))
    assert json.loads(path.read_text()) == {"admin": "chosen-pw"} and mode(path) == "0o600"


def test_airflow_keeps_the_file_0600_and_prints_no_password(tmp_path):
    """Airflow's own SimpleAuthManager, started on the file written first: it finds the admin there, prints
    nothing and leaves the mode alone (it opens the file in place)."""
    settings = LooplineSettings(home=tmp_path)
    path = airflow_runtime.ensure_simple_auth_password(settings)
    password = json.loads(path.read_text())["admin"]
    env = {**os.environ, **airflow_runtime.airflow_environment(settings, port=8099)}
    script = ("from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager\n"
              "SimpleAuthManager().init()\nprint('init done')\n")
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "init done" in result.stdout
    assert password not in result.stdout + result.stderr
    assert json.loads(path.read_text()) == {"admin": password} and mode(path) == "0o600"


def test_make_up_prints_the_password_file_never_the_password(tmp_path, monkeypatch, capsys):
    settings = LooplineSettings(home=tmp_path)

    @contextlib.contextmanager
    def started(_settings, **_kwargs):
        yield airflow_runtime.AirflowClient("http://127.0.0.1:8099", "embedded-canary-pw")

    def interrupt(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(airflow_runtime, "get_settings", lambda: settings)
    monkeypatch.setattr(airflow_runtime, "standalone", started)
    monkeypatch.setattr(airflow_runtime.time, "sleep", interrupt)
    airflow_runtime.up()
    shown = capsys.readouterr().out
    assert "embedded-canary-pw" not in shown
    assert f"password in {tmp_path / 'airflow' / 'simple_auth_manager_passwords.json.generated'}" in shown
