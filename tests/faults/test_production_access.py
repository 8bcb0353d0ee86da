"""Who gets into the production profile, and what a server that never answers does to its clients.

Access, on a real stack (``production_stack`` without Celery workers: ``init``, the MLflow server, Airflow's
api-server, scheduler, dag-processor and triggerer on this machine's PostgreSQL, with a password-bearing role):

- Airflow runs the FAB auth manager. Users in a role that may read one DAG (``DAG:churn_features``), a role
  with no DAG, and a role without the Loopline page's permission, each checked through the REST API and
  the page's ``/loopline/api/summary``: they see exactly what their role grants, and an unauthenticated or
  forged call gets 401.
- MLflow runs its basic-auth app: 401 without or with wrong credentials; Loopline's own credentials work.
- No secret on any command line (``/proc/<pid>/cmdline`` of every process of the stack), the MLflow server
  listens on loopback, password files are 0600 and no password is in any log of the stack.

Timeouts, with no server at all: a TCP listener that completes the handshake (the kernel queues the
connection in its backlog) and then never says a word stands in for Postgres and for MLflow. Each client
gives up within its setting's timeout with an error that names the service and the setting.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipelines.core.airflow_runtime import AirflowClient, wait_for_dags
from pipelines.core.settings import LooplineSettings, ServiceUnreachable, check_mlflow
from support import services
from support.page_summary import dag_ids_in

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]
ROLE = "loopline_access"  # the Postgres role, also the prefix of the stack's databases
REDIS_DB = 10  # the stack's Celery broker (no workers here); nothing else uses it
USER_PASSWORD = "user-" + secrets.token_hex(8)
LOOPLINE_DAGS = {"churn_features", "churn_training", "churn_drift_check", "docs_rag_index"}


# --- A server that never answers ---------------------------------------------------------------------------


@contextmanager
def never_answers() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts TCP connections into its backlog and never reads or writes a byte."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_postgres_that_never_answers_fails_init_within_the_connect_timeout(tmp_path):
    """Fault: Postgres accepts TCP and never answers. Where: ``production init``'s first connection.
    Invariant: it gives up after LOOPLINE_POSTGRES_CONNECT_TIMEOUT_S, naming the server and the setting,
    without the password."""
    from pipelines.core.production import create_databases

    with never_answers() as port:
        settings = LooplineSettings(home=tmp_path, profile="production", postgres_connect_timeout_s=2,
                                    postgres_url=f"postgresql://loopline:hidden-pw@127.0.0.1:{port}")
        started = time.monotonic()
        with pytest.raises(ServiceUnreachable) as refused:
            create_databases(settings)
        elapsed = time.monotonic() - started
    message = str(refused.value)
    assert 1.5 <= elapsed < 8, elapsed  # waited for the timeout, not libpq's default of forever
    assert f"Postgres at 127.0.0.1:{port}" in message and "LOOPLINE_POSTGRES_CONNECT_TIMEOUT_S" in message
    assert "hidden-pw" not in message


@pytest.mark.parametrize("driver", ["postgresql+psycopg", "postgresql+psycopg2"])
def test_sqlalchemy_urls_loopline_builds_carry_the_timeout(tmp_path, driver):
    """Fault: the same silent Postgres. Where: the SQLAlchemy URLs of Airflow's metadata database (psycopg2)
    and Feast's registry (psycopg). Invariant: the connection fails within the timeout."""
    import sqlalchemy

    with never_answers() as port:
        settings = LooplineSettings(home=tmp_path, profile="production", postgres_connect_timeout_s=2,
                                    postgres_url=f"postgresql://loopline:pw@127.0.0.1:{port}")
        engine = sqlalchemy.create_engine(settings.database_url("feast", driver=driver), poolclass=sqlalchemy.NullPool)
        started = time.monotonic()
        with pytest.raises(sqlalchemy.exc.OperationalError, match="timeout expired"):
            engine.connect()
        elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 8, elapsed


def test_mlflow_that_never_answers_fails_within_timeout_and_retries(tmp_path):
    """Fault: the MLflow server accepts TCP and never answers. Where: a real MLflow client call with
    Loopline's settings. Invariant: it gives up after (retries + 1) timeouts, naming both settings."""
    with never_answers() as port:
        settings = LooplineSettings(home=tmp_path, profile="production", mlflow_tracking_uri=f"http://127.0.0.1:{port}",
                                    mlflow_http_timeout_s=2, mlflow_http_max_retries=1,
                                    mlflow_tracking_password="hidden-ml-pw")
        with pytest.raises(ServiceUnreachable):
            check_mlflow(settings)  # the first call also imports MLflow's REST store: seconds on a busy machine
        started = time.monotonic()
        with pytest.raises(ServiceUnreachable) as refused:
            check_mlflow(settings)
        elapsed = time.monotonic() - started
    message = str(refused.value)
    assert 3.5 <= elapsed < 10, elapsed  # two attempts of 2 s (+ MLflow's jittered backoff), not 120 s × 8
    assert f"MLflow server http://127.0.0.1:{port}" in message
    assert "LOOPLINE_MLFLOW_HTTP_TIMEOUT_S" in message and "LOOPLINE_MLFLOW_HTTP_MAX_RETRIES" in message
    assert "hidden-ml-pw" not in message
    assert os.environ.get("MLFLOW_TRACKING_PASSWORD") != "hidden-ml-pw"  # the check put this process's env back


def test_a_loopline_process_gets_the_mlflow_timeout_from_its_settings_alone(tmp_path):
    """Fault: the silent MLflow server. Where: a fresh process that only reads LOOPLINE_* settings and calls
    MLflow through pipelines.core.tracking (as a task or a CLI does). Invariant: MLflow's client uses
    Loopline's timeout (2 s, no retry) instead of its own default (120 s, 7 retries)."""
    script = ("import time\n"
              "from pipelines.core.settings import get_settings\n"
              "from pipelines.core.tracking import client\n"
              "get_settings()\n"
              "for attempt in (1, 2):  # the first also imports MLflow's REST store\n"
              "    started = time.monotonic()\n"
              "    try:\n"
              "        client().search_experiments(max_results=1)\n"
              "    except Exception as exc:\n"
              "        failed = type(exc).__name__\n"
              "print(failed, round(time.monotonic() - started, 1))\n")
    with never_answers() as port:
        env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_HTTP")}
        env.update({"LOOPLINE_HOME": str(tmp_path), "LOOPLINE_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
                    "LOOPLINE_MLFLOW_HTTP_TIMEOUT_S": "2", "LOOPLINE_MLFLOW_HTTP_MAX_RETRIES": "0"})
        result = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                                timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    kind, elapsed = result.stdout.split()
    assert kind == "MlflowException" and 1.5 <= float(elapsed) < 6, result.stdout


# --- Access on a real production stack -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A production stack (no workers) with users in per-DAG roles; everything is removed afterwards."""
    from pipelines.core.production import add_user, drop_databases, ensure_role, production_stack

    admin = services.postgres_admin()
    broker = services.redis_client(REDIS_DB)
    postgres_password = services.fresh_login_role(admin, ROLE)
    settings = LooplineSettings(
        home=tmp_path_factory.mktemp("access") / "home", profile="production",
        postgres_url=f"postgresql://{ROLE}:{postgres_password}@127.0.0.1:5432", database_prefix=ROLE,
        redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}", mlflow_port=5081, airflow_port=8293)
    broker.flushdb()
    try:
        with production_stack(settings, workers=0, log=lambda message: None) as running:
            wait_for_dags(running.client, sorted(LOOPLINE_DAGS))
            ensure_role("churn_readers", ["churn_features"], running.settings)
            ensure_role("no_dags", [], running.settings)
            ensure_role("no_page", ["churn_features"], running.settings, page=False)
            for user, role in (("churn_reader", "churn_readers"), ("nobody", "no_dags"), ("pageless", "no_page")):
                add_user(user, role, USER_PASSWORD, running.settings)
            yield {"running": running, "settings": running.settings, "postgres_password": postgres_password}
    finally:
        drop_databases(settings)
        broker.flushdb()
        admin.execute(f"drop role if exists {ROLE}")
        admin.close()


def as_user(stack, username: str) -> AirflowClient:
    return AirflowClient(stack["running"].client.base_url, USER_PASSWORD, username=username)


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.production
def test_the_admin_reads_every_dag_and_the_whole_page(stack):
    admin = stack["running"].client
    assert LOOPLINE_DAGS <= set(admin.dag_ids())
    summary = admin.get("/loopline/api/summary")
    assert LOOPLINE_DAGS <= dag_ids_in(summary)
    assert summary["ask"]["allowed"] is True


@pytest.mark.production
def test_a_role_that_may_read_one_dag_sees_only_that_dag(stack):
    reader = as_user(stack, "churn_reader")
    assert reader.dag_ids() == ["churn_features"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        reader.get("/api/v2/dags/churn_training")
    assert refused.value.code == 403
    summary = reader.get("/loopline/api/summary")
    assert dag_ids_in(summary) == {"churn_features"}, json.dumps(summary)[:3000]
    (case,) = summary["use_cases"]
    assert (case["models"], case["drift"], case["indexes"], case["assistants"]) == ([], [], [], [])
    assert summary["ask"]["allowed"] is False  # the assistant's DAG is not the role's


@pytest.mark.production
def test_a_role_without_dags_sees_no_dag_and_an_empty_page(stack):
    nobody = as_user(stack, "nobody")
    with pytest.raises(urllib.error.HTTPError) as refused:
        nobody.dag_ids()  # Airflow refuses the DAG list to a user who may read no DAG at all
    assert refused.value.code == 403
    summary = nobody.get("/loopline/api/summary")
    assert (summary["use_cases"], summary["errors"]) == ([], [])


@pytest.mark.production
def test_a_role_without_the_page_permission_is_refused_the_page(stack):
    pageless = as_user(stack, "pageless")
    assert pageless.dag_ids() == ["churn_features"]  # its DAG, through Airflow's own API
    with pytest.raises(urllib.error.HTTPError) as refused:
        pageless.get("/loopline/api/summary")
    assert refused.value.code == 403


@pytest.mark.production
def test_unauthenticated_calls_get_401_and_forged_tokens_403(stack):
    """No token: 401 (Not authenticated). A token not signed with the stack's key: refused, 403 on Airflow's
    API ("Invalid JWT token"), 401 on the page (which asks for a login). A wrong password gets no token (401)."""
    import jwt

    base = stack["running"].client.base_url
    forged = jwt.encode({"sub": "1", "aud": "apache-airflow", "iat": int(time.time()), "nbf": int(time.time()),
                         "exp": int(time.time()) + 600}, "not-the-signing-key-" + "x" * 60, algorithm="HS512")
    for path, forged_status in (("/api/v2/dags", 403), ("/loopline/api/summary", 401)):
        assert status_of(base + path) == 401, path
        assert status_of(base + path, {"Authorization": f"Bearer {forged}"}) == forged_status, path
    with pytest.raises(urllib.error.HTTPError) as refused:
        AirflowClient(base, "not-the-password", username="churn_reader").token()
    assert refused.value.code == 401


@pytest.mark.production
def test_mlflow_refuses_calls_without_the_right_credentials(stack):
    from pipelines.core.production import mlflow_password

    settings = stack["settings"]
    url = f"{settings.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=1"

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    assert status_of(url) == 401
    assert status_of(url, basic("admin", "not-the-password")) == 401
    assert status_of(url, basic("admin", mlflow_password(settings))) == 200
    check_mlflow(settings)  # Loopline's own client, credentials from the settings


def stack_processes(stack) -> dict[int, str]:
    """pid -> command line of every process of the stack (each component leads a process group)."""
    groups = {process.pid for process in stack["running"].processes.values()}
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) in groups:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return found


@pytest.mark.production
def test_no_secret_is_on_any_command_line_of_the_stack(stack):
    from pipelines.core.production import admin_password, mlflow_password

    settings = stack["settings"]
    processes = stack_processes(stack)
    mlflow_server = stack["running"].processes["mlflow-server"].pid
    assert sum(os.getpgid(pid) == mlflow_server for pid in processes) >= 2  # `mlflow server` and its uvicorn
    assert any("basic-auth" in line for line in processes.values())
    for secret in (stack["postgres_password"], admin_password(settings), mlflow_password(settings)):
        leaking = [line for line in processes.values() if secret in line]
        assert leaking == []


@pytest.mark.production
def test_the_mlflow_server_listens_on_loopback_only(stack):
    import psutil

    settings = stack["settings"]
    mlflow_group = stack["running"].processes["mlflow-server"].pid
    listening = {connection.laddr.ip
                 for pid in stack_processes(stack) if os.getpgid(pid) == mlflow_group
                 for connection in psutil.Process(pid).net_connections(kind="tcp")
                 if connection.status == psutil.CONN_LISTEN and connection.laddr.port == settings.mlflow_port}
    assert listening == {"127.0.0.1"}


@pytest.mark.production
def test_password_files_are_0600_and_no_password_is_in_any_log(stack):
    from pipelines.core.production import admin_password, mlflow_password

    settings = stack["settings"]
    for path in (settings.admin_password_file, settings.mlflow_password_file,
                 settings.path("mlflow", "basic_auth.ini"), settings.path("mlflow", "basic_auth.db"),
                 settings.path("mlflow", "server-secret-key")):
        assert oct(stat.S_IMODE(path.stat().st_mode)) == "0o600", path
    logs = [path for path in stack["running"].log_dir.glob("*.log")]
    assert {"api-server.log", "mlflow-server.log"} <= {path.name for path in logs}
    for secret in (stack["postgres_password"], admin_password(settings), mlflow_password(settings), USER_PASSWORD):
        assert [str(path) for path in logs if secret in path.read_text(errors="replace")] == []
    assert json.loads((settings.airflow_home / "production-secrets.json").read_text())  # and it is whole


# --- The embedded profile: make up --------------------------------------------------------------------------


def test_make_up_serves_on_loopback_only_and_never_writes_the_password_to_its_log(tmp_path):
    """Fault: someone on the network, or reading the log. Where: ``airflow standalone`` as ``make up`` starts it
    (pipelines.core.airflow_runtime.standalone). Invariant: the api-server listens on 127.0.0.1 only, the
    password file stays 0600 and the password is in no log."""
    import psutil

    from pipelines.core.airflow_runtime import simple_auth_password_file, standalone

    settings = LooplineSettings(home=tmp_path / "home")
    (tmp_path / "no-dags").mkdir()  # no DAG to parse: the test is about the server, not the pipelines
    with standalone(settings, port=8391, timeout_s=420, log=lambda message: None,
                    dags_folder=tmp_path / "no-dags") as client:
        port = int(client.base_url.rsplit(":", 1)[1])
        listening = {connection.laddr.ip for connection in psutil.net_connections(kind="tcp")
                     if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port}
        password_file = simple_auth_password_file(settings)
        password = json.loads(password_file.read_text())["admin"]
    assert listening == {"127.0.0.1"}
    assert oct(stat.S_IMODE(password_file.stat().st_mode)) == "0o600"
    logs = [path for path in settings.airflow_home.rglob("*.log") if path.is_file()]
    assert logs and [str(path) for path in logs if password in path.read_text(errors="replace")] == []

