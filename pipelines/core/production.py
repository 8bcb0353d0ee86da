"""The production profile's processes: Airflow on Postgres with Celery workers, and an MLflow server.

One command starts each part, the same in docker/compose.yaml and on one machine::

    python -m pipelines.core.production init            # databases, airflow db migrate (one-shot)
    python -m pipelines.core.production mlflow-server   # MLflow tracking server, Postgres backend
    python -m pipelines.core.production api-server      # or scheduler, dag-processor, triggerer
    python -m pipelines.core.production celery-worker   # one per worker machine (LOOPLINE_WORKER_NAME)
    python -m pipelines.core.production up              # all of the above here, two workers, until Ctrl-C

Every part reads the same ``LOOPLINE_*`` settings with ``LOOPLINE_PROFILE=production``
(pipelines/core/settings.py), so the DAGs never change between the embedded and the production stack.
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
    AirflowClient,
    airflow_environment,
    free_port,
    stop_process_group,
    wait_until_ready,
)
from pipelines.core.settings import LooplineSettings, get_settings

# The long-running parts; docker/compose.yaml runs exactly these (a test holds it to that).
COMPONENTS = ("mlflow-server", "api-server", "scheduler", "dag-processor", "triggerer", "celery-worker")
CELERY_WORKERS = 2
DATABASES = ("airflow", "mlflow", "feast", "warehouse")
WORKER_NAME_ENV = "LOOPLINE_WORKER_NAME"


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
    if store.exists():
        kept = json.loads(store.read_text())
    else:
        from cryptography.fernet import Fernet

        kept = {names[0]: secrets.token_urlsafe(32), names[1]: secrets.token_urlsafe(32),
                names[2]: Fernet.generate_key().decode()}
        store.parent.mkdir(parents=True, exist_ok=True)
        store.touch(mode=0o600)
        store.write_text(json.dumps(kept))
    return {name: os.environ.get(name) or kept[name] for name in names}


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
    })
    return env


def create_databases(settings: LooplineSettings) -> list[str]:
    """Create the ``<prefix>_*`` databases that do not exist yet; return the ones created."""
    import psycopg
    from psycopg import sql

    created = []
    with psycopg.connect(settings.database_url("airflow").rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("select datname from pg_database")}
        for name in DATABASES:
            database = f"{settings.database_prefix}_{name}"
            if database not in existing:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
                created.append(database)
    return created


def drop_databases(settings: LooplineSettings) -> None:
    """Drop the ``<prefix>_*`` databases (tests clean up after themselves with this)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(settings.database_url("airflow").rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        for name in DATABASES:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(f"{settings.database_prefix}_{name}")))


def command_for(component: str, settings: LooplineSettings, *, worker_name: str = "worker-1") -> list[str]:
    """The real command behind a component."""
    bin_dir = Path(sys.executable).parent
    if component == "mlflow-server":
        host = urlsplit(settings.mlflow_uri).hostname or "127.0.0.1"
        return [str(bin_dir / "mlflow"), "server",
                "--backend-store-uri", settings.database_url("mlflow"),
                "--artifacts-destination", str(settings.mlflow_artifacts),
                "--serve-artifacts", "--host", "0.0.0.0", "--port", str(settings.mlflow_port), "--workers", "1",
                "--allowed-hosts", f"{host},{host}:{settings.mlflow_port},localhost,localhost:{settings.mlflow_port},"
                                   f"127.0.0.1,127.0.0.1:{settings.mlflow_port}"]
    airflow = str(bin_dir / "airflow")
    if component == "api-server":
        return [airflow, "api-server", "--port", str(settings.airflow_port)]
    if component in ("scheduler", "dag-processor", "triggerer"):
        return [airflow, component]
    if component == "celery-worker":
        return [airflow, "celery", "worker", "--celery-hostname", f"{worker_name}@%h",
                "--concurrency", str(settings.celery_worker_concurrency)]
    raise ValueError(f"unknown component {component!r}; known: init, up, {', '.join(COMPONENTS)}")


def init(settings: LooplineSettings | None = None, log=print) -> None:
    """Create the databases and migrate Airflow's (MLflow migrates its own at server start)."""
    settings = settings or get_settings()
    _require_production(settings)
    created = create_databases(settings)
    log(f"Databases created: {', '.join(created)}" if created else "Databases already exist")
    env = {**os.environ, **production_environment(settings)}
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    log("Airflow metadata database migrated")


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
        client = wait_until_ready(settings.airflow_home, port, api, timeout_s, log_dir / "api-server.log")
        deadline = time.monotonic() + timeout_s
        while set(celery_ping(settings)) != set(names):
            for name in names:
                if processes[name].poll() is not None:
                    raise RuntimeError(f"Celery {name} exited; see {log_dir / (name + '.log')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Celery workers {names} not all answering after {timeout_s:.0f} s")
            time.sleep(2)
        log(f"Production stack ready: {client.base_url}, MLflow {settings.mlflow_uri}, workers {', '.join(names)}")
        yield ProductionStack(client=client, settings=settings, worker_names=names, log_dir=log_dir)


def _exec(component: str, settings: LooplineSettings) -> None:
    worker_name = "worker-1"
    if component == "celery-worker":  # each container or machine is a worker of its own name
        worker_name = os.environ.setdefault(WORKER_NAME_ENV, socket.gethostname())
    env = {**os.environ, **production_environment(settings)}
    command = command_for(component, settings, worker_name=worker_name)
    os.execvpe(command[0], command, env)


def main(argv: list[str]) -> None:
    settings = get_settings()
    component = argv[0] if argv else "up"
    if component == "init":
        init(settings)
    elif component == "up":
        with production_stack(settings) as stack:
            print(f"\nAirflow UI: {stack.client.base_url.replace('127.0.0.1', 'localhost')} (user admin, password "
                  f"{stack.client.password}); MLflow: {settings.mlflow_uri}. Ctrl-C stops everything.")
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
    else:
        command_for(component, settings)  # unknown names fail here with the list of known ones
        _exec(component, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
