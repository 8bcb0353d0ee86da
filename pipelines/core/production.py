"""The production profile's processes: Airflow on Postgres with Celery workers, and an MLflow server.

One command starts each part, the same in docker/compose.yaml and on one machine::

    python -m pipelines.core.production init            # databases, airflow db migrate (one-shot)
    python -m pipelines.core.production mlflow-server   # MLflow tracking server, Postgres backend
    python -m pipelines.core.production api-server      # or scheduler, dag-processor, triggerer
    python -m pipelines.core.production celery-worker   # one per worker machine (LOOPLINE_WORKER_NAME)
    python -m pipelines.core.production up              # all of the above here, two workers, until Ctrl-C
    python -m pipelines.core.production role NAME DAG_ID...  # a role that may read those DAGs and the Loopline page
    python -m pipelines.core.production airflow ARGS...      # any `airflow` command (users, roles) on this stack

Every part reads the same ``LOOPLINE_*`` settings with ``LOOPLINE_PROFILE=production``
(pipelines/core/settings.py), so the DAGs never change between the embedded and the production stack.

Who may do what: Airflow runs the FAB auth manager (users and roles in the metadata database; ``init``
creates the ``admin`` user), MLflow runs its basic-auth app (every Loopline client sends
``MLFLOW_TRACKING_USERNAME``/``PASSWORD``). Passwords come from the environment or are generated once into
0600 files of the data home; none is ever printed or put on a command line.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pipelines.core.airflow_runtime import (
    ADMIN_USER,
    AirflowClient,
    airflow_environment,
    free_port,
    stop_process_group,
    wait_until_ready,
)
from pipelines.core.settings import (
    LooplineSettings,
    check_mlflow,
    connect_postgres,
    get_settings,
    secret_from,
    write_private_file,
)

# The long-running parts; docker/compose.yaml runs exactly these (a test holds it to that).
COMPONENTS = ("mlflow-server", "api-server", "scheduler", "dag-processor", "triggerer", "celery-worker")
CELERY_WORKERS = 2
DATABASES = ("airflow", "mlflow", "feast", "warehouse")
WORKER_NAME_ENV = "LOOPLINE_WORKER_NAME"
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
# The Loopline page's resource (plugins/loopline_ui/app.py asks is_authorized_custom_view about it).
LOOPLINE_RESOURCE = "Loopline"
# Airflow's own roles that see the page too; what they see there is still limited to the DAGs they may read.
PAGE_ROLES = ("Admin", "Op", "User", "Viewer")


def worker_hostname() -> str:
    """Airflow's ``hostname_callable`` for workers: the worker's own name, so the UI shows which ran a task.

    Two workers on one machine share its host name; each sets ``LOOPLINE_WORKER_NAME``.
    """
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


def _require_production(settings: LooplineSettings) -> None:
    if settings.profile != "production":
        raise SystemExit("pipelines.core.production runs the production profile: set LOOPLINE_PROFILE=production "
                         "(and LOOPLINE_POSTGRES_URL, LOOPLINE_REDIS_URL; see docs/production.md)")


def _shared_secrets(settings: LooplineSettings) -> dict[str, str]:
    """Secrets every Airflow process must share (JWT signing, session, Fernet).

    Taken from the environment when set (compose's .env, a Kubernetes Secret); otherwise generated
    once into the data home (mode 0600) so a one-machine stack keeps its tokens across restarts.
    """
    names = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY")
    if all(os.environ.get(name) for name in names):
        return {name: os.environ[name] for name in names}
    store = settings.airflow_home / "production-secrets.json"
    if not store.exists():
        from cryptography.fernet import Fernet

        generated = {names[0]: secrets.token_urlsafe(64), names[1]: secrets.token_urlsafe(32),
                     names[2]: Fernet.generate_key().decode()}
        # 0600 from the first byte and all at once; of two processes starting together, the first one's wins.
        write_private_file(store, json.dumps(generated))
    kept = json.loads(store.read_text())
    return {name: os.environ.get(name) or kept[name] for name in names}


def admin_password(settings: LooplineSettings) -> str:
    """Airflow's admin password: ``LOOPLINE_ADMIN_PASSWORD``, else generated once into a 0600 file."""
    return secret_from(settings.admin_password, settings.admin_password_file)


def admin_password_source(settings: LooplineSettings) -> str:
    """Where the admin password comes from, for messages (never the password itself)."""
    return "LOOPLINE_ADMIN_PASSWORD" if settings.admin_password else str(settings.admin_password_file)


def mlflow_password(settings: LooplineSettings) -> str:
    """The MLflow server's admin password: ``LOOPLINE_MLFLOW_TRACKING_PASSWORD``, else generated once (0600)."""
    return secret_from(settings.mlflow_tracking_password, settings.mlflow_password_file)


def with_mlflow_password(settings: LooplineSettings) -> LooplineSettings:
    """``settings`` whose MLflow client password is the server's admin password (:func:`mlflow_password`)."""
    return settings.model_copy(update={"mlflow_tracking_password": mlflow_password(settings)})


def mlflow_server_environment(settings: LooplineSettings) -> dict[str, str]:
    """What only the MLflow server gets: its backend store (by environment: the URL carries the Postgres
    password, and a command line is readable by every user of the machine), basic auth's config and admin."""
    config = settings.path("mlflow", "basic_auth.ini")
    # The auth database holds the users' password hashes: created empty and private before SQLite opens it
    # (SQLite takes an empty file as a new database and keeps its mode).
    write_private_file(settings.path("mlflow", "basic_auth.db"), "")
    # The auth database is SQLite in the data home: no password to keep in this file. MLflow creates the
    # admin from MLFLOW_AUTH_ADMIN_PASSWORD the first time and refuses to start without one.
    write_private_file(config, "\n".join([
        "[mlflow]",
        "default_permission = READ",
        f"database_uri = sqlite:///{settings.path('mlflow', 'basic_auth.db')}",
        f"admin_username = {settings.mlflow_tracking_username}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        "",
    ]), replace=True)
    return {
        "MLFLOW_BACKEND_STORE_URI": settings.database_url("mlflow"),
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_USERNAME": settings.mlflow_tracking_username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": mlflow_password(settings),
        # CSRF protection of the auth app's forms; the same for every server replica.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
        or secret_from(None, settings.path("mlflow", "server-secret-key")),
    }


def production_environment(settings: LooplineSettings | None = None, *, port: int | None = None,
                           log_server_ports: tuple[int, int] | None = None,
                           dags_folder: Path | None = None) -> dict[str, str]:
    """Airflow's environment for the production profile: Postgres, CeleryExecutor on Redis."""
    settings = settings or get_settings()
    _require_production(settings)
    port = port or settings.airflow_port
    api_url = (settings.airflow_api_url or f"http://127.0.0.1:{port}").rstrip("/")
    env = airflow_environment(settings, port=port, log_server_ports=log_server_ports, dags_folder=dags_folder)
    env.update(settings.as_environment())
    env.update(_shared_secrets(settings))
    env.pop("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", None)
    env.pop("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", None)
    if dags_folder is None and os.environ.get("AIRFLOW__CORE__DAGS_FOLDER"):  # e.g. git-sync on Kubernetes
        env["AIRFLOW__CORE__DAGS_FOLDER"] = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]
    env.update({
        "LOOPLINE_PROFILE": "production",
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "pipelines.core.production.worker_hostname",
        "AIRFLOW__CELERY__BROKER_URL": settings.redis_db_url(settings.redis_db),
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + settings.database_url("airflow"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(settings.celery_worker_concurrency),
        # One task at a time per slot, none reserved: an idle worker takes the next task.
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "5",
        # Workers share cores with other tasks: OpenMP (scikit-learn's HistGradientBoosting, torch)
        # oversubscribes and slows ~15x without a cap.
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "MLFLOW_TRACKING_URI": settings.mlflow_uri,
        # Users and roles (per-DAG permissions) in the metadata database; tokens from POST /auth/token.
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
    })
    # Workers, the page (in the api-server) and the CLIs they run authenticate to MLflow with these.
    env.update(with_mlflow_password(settings).mlflow_client_environment())
    return env


def create_databases(settings: LooplineSettings) -> list[str]:
    """Create the ``<prefix>_*`` databases that do not exist yet; return the ones created."""
    from psycopg import sql

    created = []
    with connect_postgres(settings, None, autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("select datname from pg_database")}
        for name in DATABASES:
            database = f"{settings.database_prefix}_{name}"
            if database not in existing:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
                created.append(database)
    return created


def drop_databases(settings: LooplineSettings) -> None:
    """Drop the ``<prefix>_*`` databases (tests clean up after themselves with this)."""
    from psycopg import sql

    with connect_postgres(settings, None, autocommit=True) as conn:
        for name in DATABASES:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(f"{settings.database_prefix}_{name}")))


def command_for(component: str, settings: LooplineSettings, *, worker_name: str = "worker-1") -> list[str]:
    """The real command behind a component.

    No secret is ever an argument: the MLflow server's backend store URI, which carries the Postgres password,
    reaches it as ``MLFLOW_BACKEND_STORE_URI`` (:func:`mlflow_server_environment`).
    """
    bin_dir = Path(sys.executable).parent
    if component == "mlflow-server":
        host = urlsplit(settings.mlflow_uri).hostname or "127.0.0.1"
        return [str(bin_dir / "mlflow"), "server", "--app-name", "basic-auth",
                "--artifacts-destination", str(settings.mlflow_artifacts),
                "--serve-artifacts", "--host", settings.mlflow_host, "--port", str(settings.mlflow_port),
                "--workers", "1",
                "--allowed-hosts", f"{host},{host}:{settings.mlflow_port},localhost,localhost:{settings.mlflow_port},"
                                   f"127.0.0.1,127.0.0.1:{settings.mlflow_port}"]
    airflow = str(bin_dir / "airflow")
    if component == "api-server":
        return [airflow, "api-server", "--host", settings.airflow_host, "--port", str(settings.airflow_port)]
    if component in ("scheduler", "dag-processor", "triggerer"):
        return [airflow, component]
    if component == "celery-worker":
        return [airflow, "celery", "worker", "--celery-hostname", f"{worker_name}@%h",
                "--concurrency", str(settings.celery_worker_concurrency)]
    raise ValueError(f"unknown component {component!r}; known: init, up, role, airflow, {', '.join(COMPONENTS)}")


def _in_airflow(function: str, settings: LooplineSettings, **arguments: str) -> str:
    """Run ``function`` of this module in a process configured as the production Airflow; return its output.

    Airflow reads its configuration once, at import: a child process gets it right whatever this process
    imported. ``arguments`` travel as ``LOOPLINE_AUTH_<NAME>`` variables (passwords never on a command line).
    """
    env = {**os.environ, **production_environment(settings),
           **{f"LOOPLINE_AUTH_{name.upper()}": value for name, value in arguments.items()}}
    result = subprocess.run([sys.executable, "-c", f"from pipelines.core.production import {function}; {function}()"],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{function} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def _sync_auth_in_airflow() -> None:
    """(In Airflow's process) FAB's roles, the Loopline page's permission, and the ``admin`` user."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
    from werkzeug.security import check_password_hash

    with get_application_builder() as appbuilder:
        manager = appbuilder.sm
        manager.sync_roles()
        page = manager.create_permission("can_read", LOOPLINE_RESOURCE)
        for role in PAGE_ROLES:
            manager.add_permission_to_role(manager.find_role(role), page)
        password = os.environ["LOOPLINE_AUTH_PASSWORD"]
        user = manager.find_user(username=ADMIN_USER)
        if user is None:
            if not manager.add_user(ADMIN_USER, "Loopline", "Admin", "admin@loopline.invalid",
                                    manager.find_role("Admin"), password):
                raise SystemExit(f"FAB could not create the user {ADMIN_USER}; see the messages above")
        elif not check_password_hash(user.password, password):
            # The environment (or the file) is the truth: a changed LOOPLINE_ADMIN_PASSWORD takes effect here.
            manager.reset_password(user.id, password)


def _ensure_role_in_airflow() -> None:
    """(In Airflow's process) role ``LOOPLINE_AUTH_ROLE`` that may read the DAGs ``LOOPLINE_AUTH_DAGS`` and the page."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    name, dag_ids = os.environ["LOOPLINE_AUTH_ROLE"], os.environ["LOOPLINE_AUTH_DAGS"].split()
    page = [LOOPLINE_RESOURCE] if os.environ.get("LOOPLINE_AUTH_PAGE", "1") == "1" else []
    with get_application_builder() as appbuilder:
        manager = appbuilder.sm
        role = manager.find_role(name) or manager.add_role(name)
        # "DAG:<id>" is FAB's per-DAG resource; created here if the dag-processor has not synced it yet.
        for resource in [*page, *(f"DAG:{dag_id}" for dag_id in dag_ids)]:
            manager.add_permission_to_role(role, manager.create_permission("can_read", resource))


def _add_user_in_airflow() -> None:
    """(In Airflow's process) user ``LOOPLINE_AUTH_USERNAME`` in role ``LOOPLINE_AUTH_ROLE``."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    username, role = os.environ["LOOPLINE_AUTH_USERNAME"], os.environ["LOOPLINE_AUTH_ROLE"]
    with get_application_builder() as appbuilder:
        manager = appbuilder.sm
        if manager.find_user(username=username) is None and not manager.add_user(
                username, username, "-", f"{username}@loopline.invalid", manager.find_role(role),
                os.environ["LOOPLINE_AUTH_PASSWORD"]):
            raise SystemExit(f"FAB could not create the user {username} in role {role}")


def ensure_role(name: str, dag_ids: list[str], settings: LooplineSettings | None = None, *,
                page: bool = True) -> None:
    """A FAB role that may read ``dag_ids`` (their runs and logs) and, with ``page``, the Loopline page, where it
    sees those DAGs' rows only. Permissions are added, never removed: an existing role keeps what it had."""
    settings = settings or get_settings()
    _in_airflow("_ensure_role_in_airflow", settings, role=name, dags=" ".join(dag_ids), page="1" if page else "0")


def add_user(username: str, role: str, password: str, settings: LooplineSettings | None = None) -> None:
    """A FAB user in ``role`` (nothing happens if the user exists). The password travels by environment."""
    settings = settings or get_settings()
    _in_airflow("_add_user_in_airflow", settings, username=username, role=role, password=password)


def init(settings: LooplineSettings | None = None, log=print) -> None:
    """Create the databases, migrate Airflow's (MLflow migrates its own at server start), create the roles,
    the Loopline page's permission and the ``admin`` user."""
    settings = settings or get_settings()
    _require_production(settings)
    created = create_databases(settings)
    log(f"Databases created: {', '.join(created)}" if created else "Databases already exist")
    env = {**os.environ, **production_environment(settings)}
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    log("Airflow metadata database migrated")
    _in_airflow("_sync_auth_in_airflow", settings, password=admin_password(settings))
    log(f"Airflow user {ADMIN_USER} (role Admin): password in {admin_password_source(settings)}")


def _wait_http(url: str, process: subprocess.Popen, log_file: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{log_file.stem} exited with {process.returncode}; end of {log_file}:\n"
                               f"{log_file.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(1)
    raise TimeoutError(f"{url} not answering after {timeout_s:.0f} s; see {log_file}")


def celery_ping(settings: LooplineSettings) -> list[str]:
    """Names of the Celery workers that answer a ping through the broker."""
    from celery import Celery

    app = Celery(broker=settings.redis_db_url(settings.redis_db))
    try:
        replies = app.control.ping(timeout=3) or []
    finally:
        app.close()
    return sorted(name.split("@")[0] for reply in replies for name in reply)


@dataclass(frozen=True)
class ProductionStack:
    """A running one-machine production stack: the API client and what runs where."""

    client: AirflowClient
    settings: LooplineSettings
    worker_names: list[str]
    log_dir: Path
    processes: dict[str, subprocess.Popen]  # by name (mlflow-server, api-server, …, worker-1); each leads a group


@contextmanager
def production_stack(settings: LooplineSettings | None = None, *, workers: int = CELERY_WORKERS,
                     timeout_s: float = 300, log=print, dags_folder: Path | None = None) -> Iterator[ProductionStack]:
    """Start MLflow, Airflow's api-server, scheduler, dag-processor, triggerer and Celery workers here.

    Each process logs to ``$LOOPLINE_HOME/airflow/production/<component>.log``; everything started
    is stopped on exit.
    """
    settings = settings or get_settings()
    _require_production(settings)
    port = free_port(settings.airflow_port)
    settings = settings.model_copy(update={"airflow_port": port})
    init(settings, log=log)
    log_dir = settings.airflow_home / "production"
    log_dir.mkdir(parents=True, exist_ok=True)
    trigger_logs = free_port(8794, avoid={port})
    base_env = {**os.environ, **production_environment(settings, port=port, log_server_ports=(8793, trigger_logs),
                                                        dags_folder=dags_folder)}
    names = [f"worker-{index}" for index in range(1, workers + 1)]
    processes: dict[str, subprocess.Popen] = {}

    def start(component: str, name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        if component == "mlflow-server":
            extra_env = {**mlflow_server_environment(settings), **(extra_env or {})}
        with open(log_dir / f"{name}.log", "ab") as out:
            processes[name] = subprocess.Popen(
                command_for(component, settings, worker_name=name), env={**base_env, **(extra_env or {})},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return processes[name]

    with ExitStack() as cleanup:
        cleanup.callback(lambda: [stop_process_group(p) for p in reversed(list(processes.values()))])
        cleanup.callback(lambda: log("Stopping the production stack"))
        log(f"Starting MLflow server on port {settings.mlflow_port}")
        mlflow = start("mlflow-server", "mlflow-server")
        log(f"Starting Airflow api-server on port {port}, scheduler, dag-processor, triggerer, "
            f"{workers} Celery workers; logs in {log_dir}")
        api = start("api-server", "api-server")
        for component in ("scheduler", "dag-processor", "triggerer"):
            start(component, component)
        used_ports = {port, trigger_logs, settings.mlflow_port}
        for index, name in enumerate(names, start=1):
            log_port = free_port(8793 + 10 * index, avoid=used_ports)
            used_ports.add(log_port)
            start("celery-worker", name,
                  {WORKER_NAME_ENV: name, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port)})
        _wait_http(f"http://127.0.0.1:{settings.mlflow_port}/health", mlflow, log_dir / "mlflow-server.log", timeout_s)
        check_mlflow(with_mlflow_password(settings))
        client = wait_until_ready(settings.airflow_home, port, api, timeout_s, log_dir / "api-server.log",
                                  password=admin_password(settings))
        deadline = time.monotonic() + timeout_s
        while set(celery_ping(settings)) != set(names):
            for name in names:
                if processes[name].poll() is not None:
                    raise RuntimeError(f"Celery {name} exited; see {log_dir / (name + '.log')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Celery workers {names} not all answering after {timeout_s:.0f} s")
            time.sleep(2)
        log(f"Production stack ready: {client.base_url}, MLflow {settings.mlflow_uri}, workers {', '.join(names)}")
        yield ProductionStack(client=client, settings=settings, worker_names=names, log_dir=log_dir,
                              processes=processes)


def _exec(component: str, settings: LooplineSettings) -> None:
    worker_name = "worker-1"
    if component == "celery-worker":  # each container or machine is a worker of its own name
        worker_name = os.environ.setdefault(WORKER_NAME_ENV, socket.gethostname())
    env = {**os.environ, **production_environment(settings)}
    if component == "mlflow-server":
        env.update(mlflow_server_environment(settings))
    command = command_for(component, settings, worker_name=worker_name)
    os.execvpe(command[0], command, env)


def main(argv: list[str]) -> None:
    settings = get_settings()
    component = argv[0] if argv else "up"
    if component == "init":
        init(settings)
    elif component == "role":
        if len(argv) < 2:
            raise SystemExit("usage: python -m pipelines.core.production role NAME [DAG_ID...]")
        ensure_role(argv[1], argv[2:], settings)
        print(f"Role {argv[1]} may read the Loopline page and the DAGs: {', '.join(argv[2:]) or 'none'}")
    elif component == "airflow":  # e.g. `airflow users create …` against this stack's metadata database
        env = {**os.environ, **production_environment(settings)}
        os.execvpe(str(Path(sys.executable).parent / "airflow"), ["airflow", *argv[1:]], env)
    elif component == "up":
        with production_stack(settings) as stack:
            # Passwords are never printed (terminals are logged and shared): only where they are kept.
            mlflow_source = ("LOOPLINE_MLFLOW_TRACKING_PASSWORD" if settings.mlflow_tracking_password
                             else settings.mlflow_password_file)
            print(f"\nAirflow UI: {stack.client.base_url.replace('127.0.0.1', 'localhost')} (user {ADMIN_USER}, "
                  f"password in {admin_password_source(settings)}); MLflow: {settings.mlflow_uri} (user "
                  f"{settings.mlflow_tracking_username}, password in {mlflow_source}). Ctrl-C stops everything.")
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
    else:
        command_for(component, settings)  # unknown names fail here with the list of known ones
        _exec(component, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
