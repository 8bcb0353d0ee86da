"""The drift history: every check and every Asset event, in one SQLite file under the data home.

``$LOOPLINE_HOME/drift/history.db`` holds two tables:

- ``checks``: one row per drift check instance and DAG run (a re-run replaces its row): the day checked,
  status (``drift``, ``no_drift``, ``skipped``, ``failed``), drift share and drifted columns, prediction
  drift, ROC AUC, hit rate, the report's URI, the MLflow run, the verdict and what was done about it.
- ``emissions``: one row per Asset event (asset, DAG run, logical time, the event's extra). The guard
  rails are computed from it, and its primary key (asset, DAG run) makes a second claim by the same run
  impossible: :meth:`DriftHistory.claim_emission` checks the guard rails and records the emission in one
  write transaction, so two runs cannot both pass the cap. A row is a *claim*: the run is entitled to emit.
  Airflow records the event itself when the emit task succeeds, so a claim whose task died before that is
  completed by the retry (``pipelines.drift.steps.emit_trigger``), never taken again by another run.

Read it with ``sqlite3 .loopline/drift/history.db 'select * from checks'`` or :meth:`DriftHistory.checks`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.drift.policy import Emission, GuardDecision

SCHEMA = """
CREATE TABLE IF NOT EXISTS checks (
    instance TEXT NOT NULL,
    kind TEXT NOT NULL,
    dag_run_id TEXT NOT NULL,
    run_after TEXT NOT NULL,
    check_day TEXT,
    status TEXT NOT NULL,
    drift_share REAL,
    drifted_columns TEXT,
    prediction_drift REAL,
    roc_auc REAL,
    champion_roc_auc REAL,
    hit_rate TEXT,
    report_uri TEXT,
    mlflow_run_id TEXT,
    reference TEXT,
    verdict TEXT,
    action TEXT,
    PRIMARY KEY (instance, dag_run_id)
);
CREATE TABLE IF NOT EXISTS emissions (
    asset TEXT NOT NULL,
    instance TEXT NOT NULL,
    dag_run_id TEXT NOT NULL,
    run_after TEXT NOT NULL,
    try_number INTEGER,
    extra TEXT NOT NULL,
    PRIMARY KEY (asset, dag_run_id)
);
"""

CHECK_COLUMNS = ("instance", "kind", "dag_run_id", "run_after", "check_day", "status", "drift_share",
                 "drifted_columns", "prediction_drift", "roc_auc", "champion_roc_auc", "hit_rate", "report_uri",
                 "mlflow_run_id", "reference", "verdict", "action")
JSON_COLUMNS = {"drifted_columns", "hit_rate", "reference"}


def history_path(settings=None) -> Path:
    """``<data home>/drift/history.db`` (:attr:`pipelines.core.home.DataHome.drift_history`)."""
    from pipelines.core.home import DataHome

    return DataHome(settings).drift_history


def open_history(settings=None) -> DriftHistory:
    """The drift history of the settings' data home, created if new."""
    return DriftHistory(history_path(settings))


class DriftHistory:
    """The drift history of one data home."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60)
        try:
            db.executescript(SCHEMA)  # IF NOT EXISTS: a no-op once the tables are there
        finally:
            db.close()

    @contextmanager
    def _connect(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # --- checks ---------------------------------------------------------------------------------------------

    def record_check(self, **row: Any) -> None:
        """Insert or replace the row of (instance, dag_run_id); unknown keys are refused."""
        unknown = set(row) - set(CHECK_COLUMNS)
        if unknown:
            raise ValueError(f"unknown drift history column(s): {sorted(unknown)}")
        values = {c: row.get(c) for c in CHECK_COLUMNS}
        for c in JSON_COLUMNS:
            if values[c] is not None:
                values[c] = json.dumps(values[c])
        with self._connect() as db:
            db.execute(f"INSERT OR REPLACE INTO checks ({', '.join(CHECK_COLUMNS)}) "
                       f"VALUES ({', '.join('?' * len(CHECK_COLUMNS))})", [values[c] for c in CHECK_COLUMNS])

    def set_action(self, instance: str, dag_run_id: str, action: str, verdict: str | None = None) -> None:
        """Record what was done about a check (emitted, or why not)."""
        with self._connect() as db:
            if verdict is None:
                db.execute("UPDATE checks SET action = ? WHERE instance = ? AND dag_run_id = ?",
                           (action, instance, dag_run_id))
            else:
                db.execute("UPDATE checks SET action = ?, verdict = ? WHERE instance = ? AND dag_run_id = ?",
                           (action, verdict, instance, dag_run_id))

    def checks(self, instance: str | None = None) -> list[dict[str, Any]]:
        """Checks, oldest first (by logical time), optionally of one instance."""
        query = "SELECT * FROM checks" + (" WHERE instance = ?" if instance else "") + " ORDER BY run_after, dag_run_id"
        with self._connect() as db:
            rows = [dict(r) for r in db.execute(query, (instance,) if instance else ())]
        for row in rows:
            for c in JSON_COLUMNS:
                if row[c] is not None:
                    row[c] = json.loads(row[c])
        return rows

    def check(self, instance: str, dag_run_id: str) -> dict[str, Any] | None:
        return next((c for c in self.checks(instance) if c["dag_run_id"] == dag_run_id), None)

    # --- emissions ------------------------------------------------------------------------------------------

    @staticmethod
    def _emission(row: sqlite3.Row) -> Emission:
        return Emission(row["asset"], row["dag_run_id"], datetime.fromisoformat(row["run_after"]))

    def emissions(self, asset: str | None = None) -> list[dict[str, Any]]:
        """Recorded emissions, oldest first, with their extra decoded."""
        query = "SELECT * FROM emissions" + (" WHERE asset = ?" if asset else "") + " ORDER BY run_after"
        with self._connect() as db:
            rows = [dict(r) for r in db.execute(query, (asset,) if asset else ())]
        for row in rows:
            row["extra"] = json.loads(row["extra"])
        return rows

    def emission(self, asset: str, dag_run_id: str) -> dict[str, Any] | None:
        """The emission claimed by one DAG run for ``asset`` (its extra decoded), or None."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM emissions WHERE asset = ? AND dag_run_id = ?",
                             (asset, dag_run_id)).fetchone()
        if row is None:
            return None
        found = dict(row)
        found["extra"] = json.loads(found["extra"])
        return found

    def claim_emission(self, asset: str, instance: str, dag_run_id: str, run_after: datetime, try_number: int | None,
                       extra: Mapping[str, Any], guard: Callable[[list[Emission]], GuardDecision]) -> GuardDecision:
        """Judge ``guard`` on the recorded emissions and, if it allows, record this one: one transaction.

        Returns:
            The guard's decision; the emission is recorded only when ``decision.emit``.
        """
        with self._connect(immediate=True) as db:
            known = [self._emission(r) for r in db.execute("SELECT * FROM emissions WHERE asset = ?", (asset,))]
            decision = guard(known)
            if decision.emit:
                db.execute("INSERT INTO emissions (asset, instance, dag_run_id, run_after, try_number, extra) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (asset, instance, dag_run_id, run_after.isoformat(), try_number, json.dumps(extra)))
        return decision
