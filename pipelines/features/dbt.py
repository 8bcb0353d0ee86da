"""Build one day of a dbt project (landing files -> staging -> mart) and read or delete mart days.

``run_dbt_build`` drives dbt through its programmatic ``dbtRunner`` so a task gets a typed result
or a :class:`DbtBuildError` whose message names the day and each failing node. dbt's
``target/`` and ``logs/`` go under the caller's ``work_dir``, never inside the repository.

Only the standard library is imported at module level; dbt, duckdb and pandas load inside the
functions that use them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.core.errors import NotRetryable

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_MART = "customer_daily_features"
DUCKDB_PATH_ENV = "LOOPLINE_DBT_DUCKDB_PATH"
# The var of dbt_project.yml naming the longest window (days ending on ds) a model reads from landing.
LOOKBACK_VAR = "loopline_lookback_days"
DEFAULT_LOOKBACK_DAYS = 30
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DbtBuildError(RuntimeError):
    """A dbt build of one day failed; the message names the day and every failing node.

    Takes a plain message like any RuntimeError, so a caller can re-raise with more context
    (``DbtBuildError(f"{exc}; quarantined to {where}")``).

    Attributes:
        ds: the day that was being built, when known.
        failures: one ``"<resource type> <node name>: <dbt's message>"`` per failing node.
        log_path: the folder holding dbt.log for the run, when known.
        data_fault: True when the day's data caused every failure (a data test failed, a value does not
            convert, a file is corrupt or missing): the day is bad and a retry cannot help. False for a
            fault of the infrastructure (a DuckDB file lock, a dropped Postgres connection, a full disk, an
            I/O error, dbt itself crashing) or anything not recognised as data: the build is retried and
            nothing is quarantined.
    """

    def __init__(
        self,
        message: str,
        *,
        ds: date | None = None,
        failures: Sequence[str] = (),
        log_path: Path | None = None,
        data_fault: bool = False,
    ) -> None:
        super().__init__(message)
        self.ds = ds
        self.failures = tuple(failures)
        self.log_path = log_path
        self.data_fault = data_fault


# What dbt's adapters say when the infrastructure, not the data, failed. Checked first: a lock or a cut
# connection inside an otherwise "data-looking" message is still a fault to retry.
INFRASTRUCTURE_MESSAGES = re.compile(
    r"could not set lock|conflicting lock|lock on file|database is locked|server closed the connection"
    r"|terminating connection|connection (?:refused|reset|timed out|already closed|is closed|to server)"
    r"|could not connect|could not translate host|no space left|disk (?:is )?full|input/output error"
    r"|out of memory|too many open files|permission denied|broken pipe|ssl syscall|admin shutdown"
    r"|the database system is (?:starting up|shutting down|in recovery)|deadlock detected|canceling statement",
    re.IGNORECASE,
)
# What the day's data causes: casts that fail, corrupt or mis-shaped files, a file not landed (read_landing),
# values Postgres rejects.
DATA_MESSAGES = re.compile(
    r"conversion error|could not convert|invalid input error|binder error|no magic bytes|not a parquet"
    r"|csv error|landed for ds=|rows staged for ds=|invalid input syntax|out of range|column .* does not exist"
    r"|referenced column|numeric field overflow|value too long|invalid byte sequence",
    re.IGNORECASE,
)


def is_data_failure(status: str, message: str) -> bool:
    """Whether one failing node failed because of the day's data (see :attr:`DbtBuildError.data_fault`)."""
    if INFRASTRUCTURE_MESSAGES.search(message or ""):
        return False
    return status == "fail" or bool(DATA_MESSAGES.search(message or ""))


def _build_error(ds: date, failures: list[str], log_path: Path, *, data_fault: bool) -> DbtBuildError:
    kind = "" if data_fault else " (an infrastructure fault, not the data: retry; nothing was quarantined)"
    return DbtBuildError(
        f"dbt build for {ds.isoformat()} failed{kind}: {'; '.join(failures)} "
        f"(full log: {log_path / 'dbt.log'})",
        ds=ds,
        failures=failures,
        log_path=log_path,
        data_fault=data_fault,
    )


class DbtProjectError(NotRetryable, ValueError):
    """The dbt project breaks Loopline's contract (docs/adding-a-use-case.md); fix the project, then clear the run."""


def built_models(work_dir: Path) -> tuple[str, list[str]]:
    """The project's name and the models of the last ``dbt build`` in ``work_dir``, upstream first, from dbt's own
    manifest (``target/manifest.json``): the model-level lineage of a day's mart."""
    manifest = json.loads((Path(work_dir) / "target" / "manifest.json").read_text())
    models = {node_id: node for node_id, node in manifest["nodes"].items() if node["resource_type"] == "model"}
    ordered: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in ordered or node_id not in models:
            return
        for upstream in models[node_id].get("depends_on", {}).get("nodes", []):
            visit(upstream)
        ordered.append(node_id)

    for node_id in sorted(models):
        visit(node_id)
    project = manifest.get("metadata", {}).get("project_name") or next(iter(models.values()))["package_name"]
    return project, [models[node_id]["name"] for node_id in ordered]


def project_name(project_dir: Path) -> str:
    """The ``name`` of the project's ``dbt_project.yml`` (its manifest's ``project_name``)."""
    import yaml

    return str(yaml.safe_load((Path(project_dir) / "dbt_project.yml").read_text())["name"])


def staging_window_days(project_dir: Path) -> int:
    """How many days of landing, ending on ``ds``, the project's models read: var ``loopline_lookback_days``.

    Postgres cannot read the landing files, so ``build_mart`` stages exactly this window before dbt runs;
    the ``read_landing`` macro refuses a model that reads further back. Read from ``dbt_project.yml``'s
    ``vars`` (top level or under the project's name); a project without it gets 30 days.

    Raises:
        DbtProjectError: the file is missing or the var is not a whole number of days, 1 or more.
    """
    import yaml

    path = Path(project_dir) / "dbt_project.yml"
    if not path.exists():
        raise DbtProjectError(f"no dbt project at {project_dir}: expected {path}; fix dbt.project in the YAML")
    project = yaml.safe_load(path.read_text()) or {}
    project_vars = project.get("vars") or {}
    scoped = project_vars.get(project.get("name"))
    value = project_vars.get(LOOKBACK_VAR, (scoped or {}).get(LOOKBACK_VAR) if isinstance(scoped, dict) else None)
    if value is None:
        log.warning("%s sets no vars.%s: staging %d days of landing per build", path, LOOKBACK_VAR,
                    DEFAULT_LOOKBACK_DAYS)
        return DEFAULT_LOOKBACK_DAYS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DbtProjectError(f"{path}: vars.{LOOKBACK_VAR} must be a whole number of days, 1 or more (the longest "
                              f"window a model reads from landing, ending on ds), got {value!r}")
    return value


@dataclass(frozen=True)
class DbtBuildResult:
    """What one successful ``dbt build`` of a day did.

    Attributes:
        ds: the day built.
        nodes_run: nodes dbt executed (models and tests).
        models_built: models materialized.
        tests_passed: data tests that passed.
        mart_rows: rows the mart holds for ``ds`` afterwards; None unless the DuckDB file was given
            as ``warehouse_path`` (callers with a ``pipelines.features.warehouse.Warehouse`` count through it).
    """

    ds: date
    nodes_run: int
    models_built: int
    tests_passed: int
    mart_rows: int | None


@contextmanager
def _env_vars(values: Mapping[str, str]) -> Iterator[None]:
    # dbt's env_var() reads os.environ; set the target's values for this run only.
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _release_duckdb() -> None:
    # dbt-duckdb keeps its DuckDB instance open in a class attribute after the run. Closing it
    # releases the file lock, so other processes (Great Expectations, Feast) and this process's
    # own duckdb.connect() with a different configuration can open the warehouse.
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:
        return
    env = DuckDBConnectionManager._ENV
    if env is not None:
        try:
            env.close()
        finally:
            DuckDBConnectionManager.close_all_connections()


_MAX_NODE_MESSAGE = 600
_NODE_PREFIX = re.compile(r"^(?:Runtime|Compilation|Database) Error in \w+ \S+ \([^)]*\)\s*")
_READER_OPTION = re.compile(r"^\w+ = ")


def _one_line(message: str | None) -> str:
    """dbt's node message on one line, without the parts a person does not need here.

    DuckDB follows its errors with reader options, "Possible Solution" hints and the SQL line;
    dbt adds the macro call stack. dbt.log keeps all of that; the error keeps the cause and the
    file it came from.
    """
    kept = []
    for line in (message or "no message from dbt").splitlines():
        line = line.strip()
        if re.match(r"LINE \d+:", line):
            break
        if not line or line.startswith("Possible Solution:"):
            continue
        if _READER_OPTION.match(line) and not line.startswith("file = "):
            continue
        kept.append(line)
    text = _NODE_PREFIX.sub("", " ".join(kept)).split(" > in macro ")[0]
    return text if len(text) <= _MAX_NODE_MESSAGE else text[: _MAX_NODE_MESSAGE - 1] + "…"


def run_dbt_build(
    project_dir: Path,
    *,
    ds: date,
    landing_path: Path,
    file_format: str,
    warehouse_path: Path | None = None,
    target: str = "duckdb",
    work_dir: Path,
    mart: str = DEFAULT_MART,
    target_env: Mapping[str, str] | None = None,
    target_vars: Mapping[str, str] | None = None,
    partition: str = "ds={ds}",
    table_files: Mapping[str, str] | None = None,
    ready_marker: str | None = "_SUCCESS",
) -> DbtBuildResult:
    """Run ``dbt build`` for one day: staging views over the landing files, the mart, the tests.

    Re-running a day replaces that day's mart rows (the mart is delete+insert by ``ds``).

    Args:
        project_dir: the dbt project, holding its own profiles.yml.
        ds: the day to build (var ``ds``).
        landing_path: the landing folder holding ``ds=YYYY-MM-DD/`` partitions.
        file_format: ``parquet`` or ``csv``.
        warehouse_path: the DuckDB file the duckdb target writes (else ``target_env`` names it).
        target: the profile target (``duckdb`` or ``postgres``).
        work_dir: where dbt's target/ and logs/ go for this run.
        mart: the mart counted into ``mart_rows``.
        target_env: environment the target's profile reads (``LOOPLINE_DBT_PG_*`` for postgres).
        target_vars: extra dbt vars of the target (``landing_schema`` for postgres).
        partition: the partition folder name, ``{ds}`` standing for the day (the YAML's ``landing.partition``).
        table_files: file stem per table the models read (the YAML's ``landing.tables.<t>.file``); a table
            not named reads ``<table>.<format>``.
        ready_marker: the file landed last, named in the error for a day that was not landed.

    Returns:
        Counts of what ran and the mart's rows for ``ds``.

    Raises:
        DbtBuildError: when dbt could not run or any node errored or failed; its ``data_fault`` says
            whether the day's data is to blame.
    """
    if "{ds}" not in partition:
        raise ValueError(f"partition must contain {{ds}}, got {partition!r}")
    work_dir = Path(work_dir).resolve()
    env = dict(target_env or {})
    if warehouse_path is not None:
        warehouse_path = Path(warehouse_path).resolve()
        warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        env[DUCKDB_PATH_ENV] = str(warehouse_path)
    dbt_vars = {
        "landing_path": str(Path(landing_path).resolve()),
        "file_format": file_format,
        "ds": ds.isoformat(),
        "partition": partition,
        "table_files": dict(table_files or {}),
        "ready_marker": ready_marker or "",
        **(target_vars or {}),
    }
    outcome = _invoke_dbt(_build_args(Path(project_dir).resolve(), work_dir, target, dbt_vars), env)
    executed = _executed_or_raise(outcome, ds, log_path=work_dir / "logs")
    return DbtBuildResult(
        ds=ds,
        nodes_run=len(executed),
        models_built=sum(str(r.node.resource_type) == "model" for r in executed),
        tests_passed=sum(
            str(r.node.resource_type) == "test" and str(r.status) == "pass" for r in executed
        ),
        mart_rows=count_mart_day(warehouse_path, ds, mart) if warehouse_path and target == "duckdb" else None,
    )


def _build_args(project_dir: Path, work_dir: Path, target: str, dbt_vars: Mapping[str, object]) -> list[str]:
    """dbt's command line for one build; target/ and logs/ go under ``work_dir``."""
    return [
        "build",
        "--project-dir", str(project_dir),
        "--profiles-dir", str(project_dir),
        "--target", target,
        "--target-path", str(work_dir / "target"),
        "--log-path", str(work_dir / "logs"),
        "--vars", json.dumps(dict(dbt_vars)),
        "--no-use-colors",
    ]  # fmt: skip


def _invoke_dbt(args: list[str], env: Mapping[str, str]):  # -> dbtRunnerResult
    """Run dbt in this process with the target's environment, releasing DuckDB's file lock afterwards."""
    from dbt.cli.main import dbtRunner

    with _env_vars(env):
        try:
            return dbtRunner().invoke(args)
        finally:
            _release_duckdb()


def _executed_or_raise(outcome, ds: date, log_path: Path) -> list:
    """The node results dbt executed (not skipped), or a :class:`DbtBuildError` naming every failing node."""
    if outcome.exception is not None:
        # dbt itself could not run (no connection, a locked file, a broken project): never the day's data.
        raise _build_error(ds, [_one_line(str(outcome.exception))], log_path, data_fault=False)
    results = list(getattr(outcome.result, "results", None) or [])
    failing = [r for r in results if str(r.status) in {"error", "fail", "runtime error"}]
    failures = [f"{r.node.resource_type} {r.node.name}: {_one_line(r.message)}" for r in failing]
    if failures or not outcome.success:
        data_fault = bool(failing) and all(is_data_failure(str(r.status), r.message or "") for r in failing)
        skipped = sum(str(r.status) == "skipped" for r in results)
        if skipped:
            failures.append(f"{skipped} downstream node(s) skipped")
        raise _build_error(ds, failures or ["dbt reported failure without a failing node"], log_path,
                           data_fault=data_fault)
    return [r for r in results if str(r.status) != "skipped"]


@contextmanager
def _warehouse(warehouse_path: Path, *, read_only: bool):  # -> Iterator[duckdb.DuckDBPyConnection]
    import duckdb

    connection = duckdb.connect(str(warehouse_path), read_only=read_only)
    try:
        yield connection
    finally:
        connection.close()


def _table_exists(connection, mart: str) -> bool:
    found = connection.execute(
        "select count(*) from information_schema.tables where table_name = ?", [mart]
    ).fetchone()
    return bool(found and found[0])


def checked_identifier(name: str, what: str = "mart") -> str:
    """``name`` unchanged if it is a plain SQL identifier (it is interpolated into SQL), else ValueError."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{what} must be a plain SQL identifier, got {name!r}")
    return name


def count_mart_day(warehouse_path: Path, ds: date, mart: str) -> int:
    mart = checked_identifier(mart)
    with _warehouse(warehouse_path, read_only=True) as connection:
        if not _table_exists(connection, mart):
            return 0
        row = connection.execute(f"select count(*) from {mart} where ds = ?", [ds]).fetchone()
        return int(row[0]) if row else 0


def delete_mart_day(warehouse_path: Path, ds: date, mart: str = DEFAULT_MART) -> int:
    """Delete one day's rows from a mart in the DuckDB warehouse (used when quarantining a day).

    Args:
        warehouse_path: the DuckDB file.
        ds: the day to delete.
        mart: the mart table.

    Returns:
        The number of rows deleted; 0 when the warehouse or the table does not exist yet.
    """
    mart = checked_identifier(mart)
    if not Path(warehouse_path).exists():
        return 0
    with _warehouse(warehouse_path, read_only=False) as connection:
        if not _table_exists(connection, mart):
            return 0
        row = connection.execute(f"delete from {mart} where ds = ?", [ds]).fetchone()
        return int(row[0]) if row else 0


def sort_by_keys(frame: pd.DataFrame, keys: Sequence[str] = ()) -> pd.DataFrame:
    """Rows in a stable order: by ``keys`` when given and present, else by ``customer_id`` when present."""
    order = [key for key in keys if key in frame] if keys else [c for c in ("customer_id",) if c in frame]
    if order:
        frame = frame.sort_values(order, kind="stable").reset_index(drop=True)
    return frame


def read_mart_day(warehouse_path: Path, ds: date, mart: str = DEFAULT_MART, keys: Sequence[str] = ()) -> pd.DataFrame:
    """Read one day of a mart from the DuckDB warehouse.

    Args:
        warehouse_path: the DuckDB file.
        ds: the day to read.
        mart: the mart table.
        keys: the entity's join keys, which the rows are sorted by (``customer_id`` when none are given).

    Returns:
        The mart's columns as built by dbt, sorted by ``keys``; for
        ``customer_daily_features`` these are ``customer_id`` (int64), ``ds``
        (``datetime.date``), ``feature_timestamp`` (``datetime64[us, UTC]``), ``tenure_days``
        (int64), ``plan``, ``region``, ``monthly_charges`` (float64), ``sessions_7d``,
        ``sessions_30d``, ``purchases_30d`` (int64), ``spend_30d`` (float64),
        ``support_tickets_30d`` and ``days_since_last_session`` (int64).

    Raises:
        FileNotFoundError: when the warehouse file does not exist.
        LookupError: when the mart table does not exist in it.
    """
    import pandas as pd

    mart = checked_identifier(mart)
    if not Path(warehouse_path).exists():
        raise FileNotFoundError(f"no DuckDB warehouse at {warehouse_path}; run dbt build first")
    with _warehouse(warehouse_path, read_only=True) as connection:
        if not _table_exists(connection, mart):
            raise LookupError(f"table {mart} not found in {warehouse_path}; run dbt build first")
        frame = connection.execute(f"select * from {mart} where ds = ?", [ds]).df()
    # DuckDB hands DATE over as datetime64; the contract's ds is a calendar day.
    if "ds" in frame:
        frame["ds"] = pd.to_datetime(frame["ds"]).dt.date
    # DuckDB names the zone Etc/UTC; the contract (and the simulator's truth) say UTC.
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.DatetimeTZDtype):
            frame[column] = frame[column].dt.tz_convert("UTC")
    return sort_by_keys(frame, keys)
