"""What both kinds of drift check share: the window, the reasons to skip, the evidence, the report's MLflow run.

A check (:func:`pipelines.drift.tabular.check_tabular`, :func:`pipelines.drift.rag.check_rag`) measures the
days of a :class:`CheckWindow`, saves its HTML report at :func:`report_path` (``reports/<instance>/drift/
<day>.html`` under the data home), logs it to the DAG run's MLflow run (:func:`log_check`), records a
:func:`history_row` in the drift history and returns its evidence (:class:`TabularEvidence` or
:class:`RagEvidence`), which ``judge_drift`` and the emit task read.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pipelines.core.errors import NotRetryable
from pipelines.core.home import DataHome
from pipelines.core.windows import DayWindow

if TYPE_CHECKING:
    from pipelines.core.settings import LooplineSettings
    from pipelines.drift.config import DriftCheckConfig


class NothingToCheck(Exception):
    """No reference yet, or no current data: the check is skipped, and the message says why."""


class ReferenceUnavailable(NotRetryable, ValueError):
    """The reference cannot be read: the champion's training set is gone or changed, or the live index is not
    in its catalog. The message says what to fix (the lineage, or retrain / re-index)."""


class CheckWindow(DayWindow):
    """Current data of the days ``[start, end)``; the report is named after ``end - 1``."""

    @property
    def check_day(self) -> date:
        return self.end - timedelta(days=1)


def window_for(config: DriftCheckConfig, run_after: date, window_end: str | None = None) -> CheckWindow:
    """``window_days`` days ending the day the run starts (or at ``window_end``, exclusive)."""
    return CheckWindow.ending(date.fromisoformat(window_end) if window_end else run_after, config.window_days)


# --- the evidence a check returns (check_drift's XCom) --------------------------------------------------------

class DriftEvidence(TypedDict):
    """What every check returns: who checked what, where the report is, and the reference it compared with."""

    kind: Literal["tabular", "rag"]
    instance: str
    dag_id: str
    run_id: str
    run_after: str
    window: list[str]
    check_day: str
    reference: dict[str, Any]
    report_path: str
    report_uri: str
    mlflow_run_id: str


class TabularEvidence(DriftEvidence):
    """A tabular check: Evidently's per-column and prediction drift, performance on late labels."""

    columns: int
    drifted_columns: list[str]
    drift_share: float
    column_scores: dict[str, float]
    prediction_drift: float | None
    prediction_drifted: bool
    roc_auc: float | None
    labelled_rows: int
    performance_note: str | None
    champion_roc_auc: float | None
    performance_metric: str | None  # roc_auc (binary), the promotion metric (regression), None (multiclass)
    performance: float | None  # that metric on the late labels (None until min_labels arrived)
    champion_performance: float | None  # the champion's holdout value of it
    current: dict[str, Any]


class RagEvidence(DriftEvidence):
    """A retrieval check: hit rate now and recorded, corpus change, corpus and query embedding drift."""

    k: int
    hit_rate: dict[str, float]
    baseline_hit_rate: dict[str, float] | None
    corpus_change_share: float
    chunks_now: int
    chunks_indexed: int
    corpus_drift: float | None
    corpus_note: str | None
    query_drift: float | None
    queries: int
    query_note: str | None


def evidence_head(config: DriftCheckConfig, run_id: str, run_after: datetime, window: CheckWindow) -> dict[str, Any]:
    """The first keys of a check's evidence: the kind, the instance, the DAG run and the window."""
    return {"kind": config.kind, "instance": config.instance, "dag_id": config.dag_id, "run_id": run_id,
            "run_after": run_after.isoformat(), "window": [str(window.start), str(window.end)],
            "check_day": str(window.check_day)}


# --- where a check leaves its traces ----------------------------------------------------------------------------

def report_path(config: DriftCheckConfig, day: date, settings: LooplineSettings | None = None) -> Path:
    """``<data home>/reports/<instance>/drift/<day>.html``: the report of the check of ``day``."""
    return DataHome(settings).drift_report(config.instance, day)


def log_check(config: DriftCheckConfig, run_id: str, run_name: str, *, params: dict[str, Any],
              metrics: dict[str, float | None], tags: dict[str, Any], report: Path,
              settings: LooplineSettings | None = None) -> str:
    """Log into the MLflow run of the DAG run ``run_id`` in experiment ``<instance>_drift``; return its id.

    A re-run of the task lands in the same MLflow run; params already logged are not logged again. The
    report goes to the run's ``drift_report`` artifact folder.
    """
    from pipelines.core import tracking

    return tracking.log_to_run_by_key(config.experiment_name, run_id, run_name, params=params, metrics=metrics,
                                      tags=tags, start_tags={"loopline.dag_id": config.dag_id},
                                      artifacts={"drift_report": report}, settings=settings)


def history_row(config: DriftCheckConfig, run_id: str, run_after: datetime, window: CheckWindow) -> dict[str, Any]:
    """The keys of the check's row in the drift history (one row per instance and DAG run)."""
    return {"instance": config.instance, "kind": config.kind, "dag_run_id": run_id,
            "run_after": run_after.isoformat(), "check_day": str(window.check_day)}
