"""The data home's layout: every path Loopline derives under ``LOOPLINE_HOME``, in one place.

Paths that a pipeline's YAML names (landing folders, dbt projects, suites) are resolved by
:meth:`LooplineSettings.resolve`; everything Loopline itself keeps is derived here, so a reader (the
Loopline page, a drift check reading training's predictions) and the writer always agree.

```
<home>/airflow/                     Airflow's home (SQLite, logs)
<home>/mlflow/{mlflow.db,artifacts/} the embedded MLflow store
<home>/warehouse/<instance>.duckdb   dbt's DuckDB warehouse
<home>/dbt/<instance>/               dbt's target/ and logs/
<home>/offline/<project>/<mart>/     validated feature days (Feast's offline source)
<home>/feast/<project>/              Feast registry, online store, ledgers
<home>/quarantine/<instance>/        quarantined landing partitions
<home>/reports/<instance>/<kind>/    validation and drift reports (HTML)
<home>/training/<instance>/          training sets by window
<home>/predictions/<instance>/       batch predictions by day
<home>/rag/<instance>/               index catalogs, plans, staged embeddings, LanceDB tables
<home>/lora/<instance>/              LoRA datasets and adapters (the tiny base model: <home>/models/)
<home>/drift/                        drift history, references, corpus samples
<home>/query_log/<instance>/         logged assistant queries by day
```
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from pipelines.core.errors import NotRetryable
from pipelines.core.settings import LooplineSettings, get_settings


class PathOutsideDataHome(NotRetryable, ValueError):
    """A path handed between steps (an XCom, an Asset event's extra, a run's lineage) lies outside the data home.

    Loopline writes every such path under the data home, so one elsewhere was altered or comes from another
    deployment; reading or writing it could reach any file the worker can. A retry reads the same value.
    """


class DataHome:
    """Paths under one data home. ``DataHome()`` uses the process's settings."""

    def __init__(self, settings: LooplineSettings | None = None):
        self.settings = settings or get_settings()
        self.root = self.settings.data_home

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def contains(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is an absolute path that resolves (``..`` and symlinks followed) inside the data home."""
        candidate = Path(path)
        if not candidate.is_absolute():  # Loopline hands on absolute paths only; a relative one depends on the cwd
            return False
        return candidate.resolve().is_relative_to(self.root.resolve())

    def require_inside(self, path: str | os.PathLike[str], what: str) -> Path:
        """``path`` resolved, if it lies inside the data home; else :class:`PathOutsideDataHome`.

        Args:
            path: a path read from an XCom, an Asset event's extra or a run's lineage.
            what: where it was read, for the message (``"XCom build_training_set.path"``).

        Raises:
            PathOutsideDataHome: ``path`` is relative, or resolves (through ``..`` or a symlink) outside the
                data home. Nothing was read or written.
        """
        if not self.contains(path):
            shown = Path(path).resolve() if Path(path).is_absolute() else "a relative path"
            raise PathOutsideDataHome(
                f"{what} is {str(path)!r} ({shown}), outside the data home {self.root}: refusing to read or write "
                "it. Loopline only hands on paths under the data home, so this value was altered or comes from "
                "another deployment; clear the upstream task so that it writes the path again")
        return Path(path).resolve()

    # --- features ---------------------------------------------------------------------------------------
    def warehouse(self, instance: str) -> Path:
        """The DuckDB file dbt builds the instance's marts into (embedded warehouse)."""
        return self.path("warehouse", f"{instance}.duckdb")

    def dbt_work(self, instance: str) -> Path:
        return self.path("dbt", instance)

    def offline(self, project: str, *parts: str) -> Path:
        """Feast's offline files of ``project`` (feature_repo/ resolves its relative sources against it)."""
        return self.path("offline", project, *parts)

    def feast(self, project: str) -> Path:
        return self.path("feast", project)

    def quarantine(self, instance: str) -> Path:
        return self.path("quarantine", instance)

    @property
    def reports(self) -> Path:
        """Every HTML report; the Loopline page serves files from here only."""
        return self.path("reports")

    def report_dir(self, instance: str, kind: str) -> Path:
        return self.reports / instance / kind

    # --- training ---------------------------------------------------------------------------------------
    def training_set(self, instance: str, start: date, end: date) -> Path:
        return self.path("training", instance, f"window={start}_{end}", "training_set.parquet")

    def predictions(self, instance: str, day: date) -> Path:
        return self.path("predictions", instance, f"ds={day.isoformat()}", "predictions.parquet")

    # --- rag ----------------------------------------------------------------------------------------------
    def rag(self, instance: str, *parts: str) -> Path:
        return self.path("rag", instance, *parts)

    # --- lora ---------------------------------------------------------------------------------------------
    def lora(self, instance: str, *parts: str) -> Path:
        return self.path("lora", instance, *parts)

    # --- drift --------------------------------------------------------------------------------------------
    @property
    def drift_history(self) -> Path:
        return self.path("drift", "history.db")

    def drift(self, instance: str, *parts: str) -> Path:
        return self.path("drift", instance, *parts)

    def drift_report(self, instance: str, day: date) -> Path:
        return self.report_dir(instance, "drift") / f"{day.isoformat()}.html"

    def query_log(self, instance: str, day: date) -> Path:
        return self.path("query_log", instance, f"ds={day.isoformat()}")
