"""The steps of the ``features`` template, one function per task, each keyed by the day ``ds``.

Every step is idempotent: re-running a day rebuilds the same mart rows, writes the same offline file
and leaves the online store as it was. A step that finds bad data quarantines the landing partition,
removes the day from the mart and raises an error that says what was wrong and where the data went;
the online store is never touched by a failing day.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from pipelines.features.config import FeaturesConfig
from pipelines.core.settings import LooplineSettings, get_settings
from pipelines.features.warehouse import warehouse_for
from pipelines.core.errors import NotRetryable

log = logging.getLogger(__name__)


class BatchQuarantined(NotRetryable, ValueError):
    """A day's data was bad: it is quarantined, and retrying the task cannot help until it is re-landed."""

    def __init__(self, message: str, quarantined_to: Path):
        super().__init__(message)
        self.quarantined_to = quarantined_to


class _Paths:
    """Where one instance keeps its state, all under the data home."""

    def __init__(self, config: FeaturesConfig, settings: LooplineSettings):
        self.landing = settings.resolve(config.landing.path)
        self.dbt_project = settings.resolve(config.dbt.project)
        self.suite = settings.resolve(config.validation.suite)
        self.feast_repo = settings.resolve(config.feast.repo)
        self.warehouse = warehouse_for(config.instance, settings)
        self.dbt_work = settings.path("dbt", config.instance)
        self.quarantine = settings.quarantine_dir / config.instance
        self.reports = settings.reports_dir / config.instance / "validation"
        # Feast resolves the relative source paths of feature_repo/ against <data home>/offline/<project>.
        self.offline = settings.path("offline", config.feast.project, config.dbt.mart)


def paths(config: FeaturesConfig, settings: LooplineSettings | None = None) -> _Paths:
    return _Paths(config, settings or get_settings())


def _quarantine(config: FeaturesConfig, p: _Paths, ds: date, reason: str, details: dict | None = None) -> Path:
    from pipelines.features.landing import partition_dir, quarantine_partition

    p.warehouse.delete_day(ds, config.dbt.mart)
    where = quarantine_partition(partition_dir(config.landing, p.landing, ds), p.quarantine, reason, details)
    log.error("Quarantined landing partition %s to %s: %s", ds, where, reason)
    return where


def partition_ready(config: FeaturesConfig, ds: date) -> bool:
    """Whether the day's landing partition is complete (the sensor's poke)."""
    from pipelines.features.landing import partition_ready as ready

    is_ready = ready(config.landing, paths(config).landing, ds)
    log.info("Landing partition %s of %s: %s", ds, config.instance, "ready" if is_ready else "not yet")
    return is_ready


def check_landing(config: FeaturesConfig, ds: date) -> dict[str, int]:
    """Check the day's raw files against the YAML contract; quarantine the partition if they break it.

    Returns:
        Row count per raw table.
    """
    from pipelines.features.landing import LandingContractError, check_partition

    p = paths(config)
    try:
        check = check_partition(config.landing, p.landing, ds)
    except LandingContractError as exc:
        where = _quarantine(config, p, ds, str(exc))
        raise BatchQuarantined(f"{exc}; quarantined to {where}", where) from exc
    log.info("Landing partition %s matches its contract: %s", ds, check.rows)
    return check.rows


def build_mart(config: FeaturesConfig, ds: date) -> dict[str, Any]:
    """Run ``dbt build`` for the day (staging → marts, with dbt's tests)."""
    from dataclasses import replace

    from pipelines.features.dbt import DbtBuildError, run_dbt_build

    p = paths(config)
    warehouse = p.warehouse
    log.info("dbt build of %s for %s into %s", config.dbt.mart, ds, warehouse.describe())
    warehouse.stage_landing(config.landing, p.landing, ds)
    try:
        result = run_dbt_build(
            p.dbt_project, ds=ds, landing_path=p.landing, file_format=config.landing.format,
            target=warehouse.dbt_target, work_dir=p.dbt_work, mart=config.dbt.mart,
            target_env=warehouse.dbt_env(), target_vars=warehouse.dbt_vars(),
        )
    except DbtBuildError as exc:
        where = _quarantine(config, p, ds, str(exc))
        raise BatchQuarantined(f"{exc}; quarantined to {where}", where) from exc
    result = replace(result, mart_rows=warehouse.count_day(ds, config.dbt.mart))
    log.info("dbt build for %s: %s", ds, result)
    return asdict(result)


def validate_mart(config: FeaturesConfig, ds: date) -> dict[str, Any]:
    """Validate the day's mart rows with the Great Expectations suite kept in the repo.

    On failure the partition is quarantined, the day leaves the mart, and the error lists every
    failed expectation. The report is saved as JSON either way.
    """
    from pipelines.core.expectations import DataValidationError, raise_for_failures, validate_dataframe

    p = paths(config)
    frame = p.warehouse.read_day(ds, config.dbt.mart)
    report = validate_dataframe(frame, p.suite, batch_name=f"{config.instance} {ds}")
    p.reports.mkdir(parents=True, exist_ok=True)
    (p.reports / f"{ds}.json").write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    if not report.success:
        where = _quarantine(config, p, ds, report.summary(), report.to_dict())
        try:
            raise_for_failures(report, quarantined_to=where)
        except DataValidationError as exc:
            raise BatchQuarantined(str(exc), where) from exc
    log.info("%s: %d expectations passed on %d rows", report.batch_name, report.evaluated, len(frame))
    return {"rows": len(frame), "expectations": report.evaluated, "success": True}


def publish_features(config: FeaturesConfig, ds: date) -> dict[str, Any]:
    """Copy the validated day of the mart to where Feast's offline source reads it."""
    from pipelines.features.feast_store import publish_offline_day

    p = paths(config)
    frame = p.warehouse.read_day(ds, config.dbt.mart)
    path = publish_offline_day(frame, p.offline, ds)
    log.info("Published %d rows of %s to %s", len(frame), ds, path)
    return {"rows": len(frame), "path": str(path)}


def apply_definitions(config: FeaturesConfig) -> dict[str, Any]:
    """``feast apply``, only when the definitions in the repo changed."""
    from pipelines.features.feast_store import apply_if_changed

    return asdict(apply_if_changed(config.feast.project, paths(config).feast_repo))


def materialize_day(config: FeaturesConfig, ds: date, rows: int) -> dict[str, Any]:
    """Materialize exactly the day's interval into the online store."""
    from pipelines.features.feast_store import day_bounds, materialize_interval

    start, end = day_bounds(ds)
    result = materialize_interval(
        config.feast.project, config.feast.feature_views, start, end,
        rows_in_interval=rows,
    )
    return {
        "feature_views": list(result.feature_views), "start": start.isoformat(), "end": end.isoformat(),
        "rows": rows, "replayed_to": result.replayed_to.isoformat() if result.replayed_to else None,
    }
