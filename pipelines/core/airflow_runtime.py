"""Run Airflow for Loopline: its environment, ``airflow standalone`` under the data home, a REST client.

Used by ``make up``, ``make demo`` and the integration tests. Everything Airflow keeps (metadata
database, logs, generated passwords) lives in ``$LOOPLINE_HOME/airflow``. The api-server binds to
``LOOPLINE_AIRFLOW_HOST`` (loopback by default) and no password is ever printed: only the path of the
0600 file that holds it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipelines.core.settings import REPO_ROOT, LooplineSettings, get_settings, write_private_file

ADMIN_USER = "admin"
SIMPLE_AUTH_PASSWORDS = "simple_auth_manager_passwords.json.generated"


def simple_auth_password_file(settings: LooplineSettings) -> Path:
    """The embedded profile's password file (SimpleAuthManager's format: ``{"admin": "…"}``), mode 0600."""
    return settings.airflow_home / SIMPLE_AUTH_PASSWORDS


def ensure_simple_auth_password(settings: LooplineSettings) -> Path:
    """Write the admin password into SimpleAuthManager's file before Airflow starts; return the file's path.

    Airflow would generate the password itself, print it to its log and write the file with the umask's
    mode. Written here first (``LOOPLINE_ADMIN_PASSWORD`` or a generated one), 0600 from the start, Airflow
    finds the user already there, prints nothing, and opens the file in place, which keeps the mode.
    """
    path = simple_auth_password_file(settings)
    known = json.loads(path.read_text() or "{}") if path.exists() else None
    wanted = settings.admin_password or (known or {}).get(ADMIN_USER) or secrets.token_urlsafe(18)
    if known is None or known.get(ADMIN_USER) != wanted or path.stat().st_mode & 0o077:
        # A file from before (another password, or readable by others) is replaced whole, never chmod'ed.
        write_private_file(path, json.dumps({**(known or {}), ADMIN_USER: wanted}) + "\n", replace=True)
    return path


def openlineage_transport(settings: LooplineSettings) -> str:
    """The OpenLineage transport: HTTP to ``LOOPLINE_OPENLINEAGE_URL``, else one JSON line per event appended to
    :func:`pipelines.lineage.graph.events_file` (no server needed)."""
    from pipelines.lineage.graph import events_file

    if settings.openlineage_url:
        return json.dumps({"type": "http", "url": settings.openlineage_url})
    events_file(settings).parent.mkdir(parents=True, exist_ok=True)
    return json.dumps({"type": "file", "log_file_path": str(events_file(settings)), "append": True})


def airflow_environment(settings: LooplineSettings | None = None, *, port: int | None = None,
                        log_server_ports: tuple[int, int] | None = None,
                        dags_folder: Path | None = None) -> dict[str, str]:
    """Environment variables that point Airflow at this repository (or ``dags_folder``) and the data home."""
    settings = settings or get_settings()
    home = settings.airflow_home
    env = {
        "LOOPLINE_HOME": str(settings.data_home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": settings.airflow_executor,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / SIMPLE_AUTH_PASSWORDS),
        # Loopback unless LOOPLINE_AIRFLOW_HOST says otherwise (compose, inside its private network).
        "AIRFLOW__API__HOST": settings.airflow_host,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.airflow_database_url or f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        # Pick up new and edited DAG files quickly on a laptop.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "15",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "15",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_PROXY": "*",
        # Nothing phones home, and no model is fetched from a hub at run time.
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # Every task's OpenLineage run events (Airflow's provider), with what a step declared (pipelines/lineage).
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "loopline",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": openlineage_transport(settings),
        "AIRFLOW__OPENLINEAGE__EXTRACTORS": "pipelines.lineage.extractor.LooplineTaskExtractor",
    }
    if port:
        env["AIRFLOW__API__PORT"] = str(port)
        env["AIRFLOW__API__BASE_URL"] = f"http://localhost:{port}"
    if log_server_ports:  # so that two Airflows on one machine (make up beside the tests) do not collide
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(log_server_ports[0])
        env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(log_server_ports[1])
    return env


@dataclass
class AirflowClient:
    """A small client of Airflow's REST API v2, authenticated as ``username`` (the admin by default).

    Tokens come from ``POST /auth/token``, which SimpleAuthManager (embedded) and the FAB auth manager
    (production) both serve with the same body and answer.
    """

    base_url: str
    password: str = field(repr=False)
    username: str = ADMIN_USER
    _token: str | None = field(default=None, repr=False)

    def _request(self, method: str, path: str, body: dict | None = None, *, auth: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {self.token()}")
        # On SQLite the api-server answers 500 when a write waits too long for the database lock (a task
        # writing at the same moment); requests that are safe to repeat are tried again.
        attempts = 4 if method in ("GET", "PATCH", "PUT", "DELETE") else 1
        for attempt in range(1, attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    payload = response.read()
                return json.loads(payload) if payload else None
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == attempts:
                    raise
                time.sleep(2 * attempt)

    def token(self) -> str:
        if self._token is None:
            answer = self._request("POST", "/auth/token", {"username": self.username, "password": self.password},
                                   auth=False)
            self._token = answer["access_token"]
        return self._token

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: dict) -> Any:
        return self._request("POST", path, body)

    def patch(self, path: str, body: dict) -> Any:
        return self._request("PATCH", path, body)

    def dag_ids(self) -> list[str]:
        return [d["dag_id"] for d in self.get("/api/v2/dags?limit=100")["dags"]]

    def import_errors(self) -> list[dict]:
        return self.get("/api/v2/importErrors")["import_errors"]

    def unpause(self, dag_id: str) -> None:
        self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def set_scheduled_runs_aside(self, dag_id: str, wait_s: float = 30) -> list[str]:
        """Mark failed the scheduled run(s) that unpausing ``dag_id`` just started; return their ids.

        Unpausing makes the scheduler create the DAG's latest cron run at once. With ``max_active_runs=1`` it
        holds back a run triggered by hand, and its window may need data nobody built (a weekly training run
        needs the feature day before last Sunday's), so it would wait for hours. Waits up to ``wait_s`` for it.
        """
        deadline = time.monotonic() + wait_s
        while True:
            runs = self.get(f"/api/v2/dags/{dag_id}/dagRuns?run_type=scheduled")["dag_runs"]
            active = [r["dag_run_id"] for r in runs if r["state"] in ("queued", "running")]
            for run_id in active:
                self.patch(f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}", {"state": "failed"})
            if active or time.monotonic() > deadline:
                return active
            time.sleep(2)

    def trigger(self, dag_id: str, *, logical_date: str, run_id: str | None = None, conf: dict | None = None,
                data_interval: tuple[str, str] | None = None) -> dict:
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        if data_interval:
            body["data_interval_start"], body["data_interval_end"] = data_interval
        return self.post(f"/api/v2/dags/{dag_id}/dagRuns", body)

    def clear_run(self, dag_id: str, run_id: str) -> None:
        """Run ``run_id`` again: clear all its task instances and reset the run."""
        self.post(f"/api/v2/dags/{dag_id}/clearTaskInstances",
                  {"dag_run_id": run_id, "dry_run": False, "reset_dag_runs": True, "only_failed": False})

    def trigger_or_rerun(self, dag_id: str, run_id: str, *, logical_date: str, conf: dict | None = None,
                         data_interval: tuple[str, str] | None = None) -> str:
        """Trigger ``run_id``; if a run of that id exists already (409, a demo run twice), run it again."""
        try:
            self.trigger(dag_id, logical_date=logical_date, run_id=run_id, conf=conf, data_interval=data_interval)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise
            self.clear_run(dag_id, run_id)
        return run_id

    def xcom_or_none(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """The task's return value, or None when it has none (it failed, or did not run)."""
        try:
            return self.xcom(dag_id, run_id, task_id)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            return None

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        entry = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
        return entry["value"]

    def backfill(self, dag_id: str, from_date: str, to_date: str, *, max_active_runs: int = 1,
                 reprocess_behavior: str = "none", attempts: int = 4) -> dict:
        """Create a backfill (``POST /api/v2/backfills``), what ``airflow backfill create`` does.

        Airflow creates a run of type ``backfill`` for each logical date in [``from_date``, ``to_date``] (for a
        daily data-interval schedule, the day itself) whose interval has ended, and the scheduler runs them in
        date order, at most ``max_active_runs`` at once (apart from the DAG's own ``max_active_runs``), while
        the DAG is unpaused. ``reprocess_behavior``: ``none`` skips days that have a run, ``failed`` re-runs the
        failed ones, ``completed`` every one. On SQLite, creating a backfill while the scheduler writes answers
        500 or 503 ("Database is locked") and creates nothing: it is tried again.
        """
        body = {"dag_id": dag_id, "from_date": from_date, "to_date": to_date, "max_active_runs": max_active_runs,
                "reprocess_behavior": reprocess_behavior}
        for attempt in range(1, attempts + 1):
            try:
                return self.post("/api/v2/backfills", body)
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == attempts:
                    raise
                time.sleep(3 * attempt)
        raise AssertionError("unreachable")

    def wait_for_backfill_runs(self, dag_id: str, expected: int, *, timeout_s: float = 900,
                               poll_s: float = 2) -> list[dict]:
        """Poll until ``expected`` runs of type ``backfill`` exist and have all finished; return them.

        (The scheduler stamps the backfill itself completed only every 30 s.)
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = self.get(f"/api/v2/dags/{dag_id}/dagRuns?run_type=backfill&limit=100")["dag_runs"]
            if len(runs) >= expected and all(run["state"] in ("success", "failed") for run in runs):
                return sorted(runs, key=lambda run: run["logical_date"])
            time.sleep(poll_s)
        raise TimeoutError(f"{expected} backfill runs of {dag_id} did not finish within {timeout_s:.0f} s")

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout_s: float = 900, poll_s: float = 3,
                     progress=None) -> str:
        """Poll until the run finishes; return its state (``success`` or ``failed``)."""
        deadline = time.monotonic() + timeout_s
        last_seen = None
        while time.monotonic() < deadline:
            state = self.dag_run(dag_id, run_id)["state"]
            if progress:
                done = sorted(t["task_id"] for t in self.task_instances(dag_id, run_id) if t["state"] == "success")
                if done != last_seen:
                    progress(f"{dag_id} {run_id}: {state}; done: {', '.join(done) or '-'}")
                    last_seen = done
            if state in ("success", "failed"):
                return state
            time.sleep(poll_s)
        raise TimeoutError(f"{dag_id} run {run_id} did not finish within {timeout_s:.0f} s")


def free_port(preferred: int, avoid: set[int] = frozenset()) -> int:
    import socket

    for port in [preferred, *range(preferred + 1, preferred + 50)]:
        if port in avoid:
            continue
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError(f"no free port near {preferred}")


@contextmanager
def standalone(settings: LooplineSettings | None = None, *, port: int | None = None, timeout_s: float = 240,
               log=print, dags_folder: Path | None = None,
               extra_env: dict[str, str] | None = None) -> Iterator[AirflowClient]:
    """Start ``airflow standalone`` (api-server, scheduler, dag-processor, triggerer); stop it on exit."""
    settings = settings or get_settings()
    port = free_port(port or settings.airflow_port)
    worker_logs = free_port(8793, avoid={port})
    trigger_logs = free_port(worker_logs + 1, avoid={port, worker_logs})
    env = {**os.environ, **airflow_environment(settings, port=port, log_server_ports=(worker_logs, trigger_logs),
                                               dags_folder=dags_folder), **(extra_env or {})}
    home = settings.airflow_home
    home.mkdir(parents=True, exist_ok=True)
    password = json.loads(ensure_simple_auth_password(settings).read_text())[ADMIN_USER]
    log_file = home / "standalone.log"
    log(f"Starting Airflow (api-server, scheduler, dag-processor, triggerer) on port {port}; log: {log_file}")
    with open(log_file, "ab") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "standalone"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        client = wait_until_ready(home, port, process, timeout_s, log_file, password=password)
        yield client
    finally:
        log("Stopping Airflow")
        stop_process_group(process)


def wait_until_ready(home: Path, port: int, process: subprocess.Popen, timeout_s: float,
                     log_file: Path, *, password: str) -> AirflowClient:
    """Wait until the api-server answers an authenticated call; return a client logged in as the admin."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"airflow standalone exited with {process.returncode}; end of {log_file}:\n{tail}")
        client = AirflowClient(f"http://127.0.0.1:{port}", password)
        try:
            client.get("/api/v2/monitor/health")
            return client
        except (urllib.error.URLError, ConnectionError, OSError, KeyError):
            pass
        time.sleep(2)
    raise TimeoutError(f"Airflow API on port {port} not ready after {timeout_s:.0f} s; see {log_file}")


def stop_process_group(process: subprocess.Popen, grace_s: float = 30) -> None:
    """Stop standalone and every process it started (scheduler, executor workers, api-server…)."""
    group = process.pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        process.poll()
        try:
            os.killpg(group, 0)  # anyone of the group still alive?
        except ProcessLookupError:
            return
        time.sleep(0.5)
    # Some children (the scheduler waiting on its executor) outlive standalone: make sure nothing stays.
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def wait_for_dags(client: AirflowClient, dag_ids: list[str], timeout_s: float = 180) -> None:
    """Wait until the dag-processor has parsed the given DAGs; fail on their import errors."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if set(dag_ids) <= set(client.dag_ids()):
            return
        time.sleep(2)
    errors = "; ".join(f"{e['filename']}: {e['stack_trace'].strip().splitlines()[-1]}" for e in client.import_errors())
    raise TimeoutError(f"DAGs {dag_ids} not parsed after {timeout_s:.0f} s. Import errors: {errors or 'none'}")


def up() -> None:
    """``make up``: Airflow with the UI on localhost until Ctrl-C."""
    settings = get_settings()
    with standalone(settings, timeout_s=600) as client:
        # The password itself is never printed (terminals are logged and shared): only where it is.
        print(f"\nAirflow UI: {client.base_url.replace('127.0.0.1', 'localhost')}  (user {ADMIN_USER}, password in "
              f"{simple_auth_password_file(settings)}, readable by you only)\nCtrl-C stops it.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    up()
