"""The steps of the ``features`` template, one function per task, each keyed by the day ``ds``.

Every step is idempotent: re-running a day rebuilds the same mart rows, writes the same offline file
and leaves the online store as it was. A step that finds bad data quarantines the landing partition,
removes the day from the mart and raises an error that says what was wrong and where the data went;
the online store is never touched by a failing day. A fault of the infrastructure (a lock, a dropped
connection, a full disk, an I/O error) is not bad data: it propagates, the task is retried, and nothing
is quarantined. Writer steps hold the instance's lock (``features:<instance>``), materialization the Feast
project's (``feast:<project>``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path
from typing import TypedDict

from pipelines.core.errors import NotRetryable
from pipelines.core.files import write_json_atomic
from pipelines.core.home import DataHome
from pipelines.core.settings import LooplineSettings, get_settings
from pipelines.features.config import FeaturesConfig
from pipelines.features.warehouse import warehouse_for

log = logging.getLogger(__name__)

# What each step returns: its XCom, read by the next task and by `make demo`'s summary (pipelines/demo/run.py).

LandingRows = dict[str, int]
"""``check_landing``: rows per raw table of the day's partition, e.g. ``{"customers": 3000, "events": 41250}``."""


class MartBuild(TypedDict):
    """``build_mart``: what ``dbt build`` did for the day (:class:`pipelines.features.dbt.DbtBuildResult`)."""

    ds: date
    nodes_run: int
    models_built: int
    tests_passed: int
    mart_rows: int | None


class MartValidation(TypedDict):
    """``validate_mart``: the day's mart rows passed every expectation of the suite."""

    rows: int
    expectations: int
    success: bool


class PublishedDay(TypedDict):
    """``publish_features``: the validated day's offline file, which Feast's source reads."""

    rows: int
    path: str


class DefinitionsApplied(TypedDict):
    """``apply_definitions``: whether ``feast apply`` ran (:class:`pipelines.features.feast_store.ApplyResult`)."""

    applied: bool
    digest: str
    objects: int


class MaterializedDay(TypedDict):
    """``materialize_day``: the interval that went online (ISO datetimes) and how far it was replayed."""

    feature_views: list[str]
    start: str
    end: str
    rows: int
    replayed_to: str | None


class BatchQuarantined(NotRetryable, ValueError):
    """A day's data was bad: it is quarantined, and retrying the task cannot help until it is re-landed."""

    def __init__(self, message: str, quarantined_to: Path):
        super().__init__(message)
        self.quarantined_to = quarantined_to


class FeaturePaths:
    """Where one features instance reads its inputs (as its YAML names them) and keeps its state (data home).

    Attributes:
        landing, dbt_project, suite, feast_repo: the YAML's paths, resolved.
        warehouse: the :class:`pipelines.features.warehouse.Warehouse` dbt builds the marts into.
        dbt_work, quarantine, reports, offline: under the data home (:class:`pipelines.core.home.DataHome`);
            ``offline`` is the mart's folder that Feast's file source reads.
    """

    def __init__(self, config: FeaturesConfig, settings: LooplineSettings | None = None):
        settings = settings or get_settings()
        home = DataHome(settings)
        self.landing = settings.resolve(config.landing.path)
        self.dbt_project = settings.resolve(config.dbt.project)
        self.suite = settings.resolve(config.validation.suite)
        self.feast_repo = settings.resolve(config.feast.repo)
        self.warehouse = warehouse_for(config.instance, settings)
        self.dbt_work = home.dbt_work(config.instance)
        self.quarantine = home.quarantine(config.instance)
        self.reports = home.report_dir(config.instance, "validation")
        # Feast resolves the relative source paths of feature_repo/ against <data home>/offline/<project>.
        self.offline = home.offline(config.feast.project, config.dbt.mart)


def _lock(config: FeaturesConfig):
    """The instance's writer lock (warehouse, landing, quarantine); a :class:`LockTimeout` is retried."""
    from pipelines.core.locks import instance_lock

    return instance_lock(f"features:{config.instance}")


def _read_mart_day(config: FeaturesConfig, p: FeaturePaths, ds: date):
    """The day's mart rows, sorted by the entity's join keys.

    DuckDB lets no other process open the warehouse file while one writes it: on DuckDB the read waits for the
    instance's lock, so another run's dbt build (a backfill beside the daily run, or two backfill runs at once)
    delays it by seconds instead of failing it into a retry minutes later.
    """
    if p.warehouse.dbt_target != "duckdb":
        return p.warehouse.read_day(ds, config.dbt.mart, keys=config.feast.join_keys)
    with _lock(config):
        return p.warehouse.read_day(ds, config.dbt.mart, keys=config.feast.join_keys)


def _quarantine(config: FeaturesConfig, p: FeaturePaths, ds: date, reason: str, details: dict | None = None) -> Path:
    """Take the day out of the mart and move its landing partition to quarantine; the caller holds the lock."""
    from pipelines.features.landing import partition_dir, quarantine_partition

    p.warehouse.delete_day(ds, config.dbt.mart)
    partition = partition_dir(config.landing, p.landing, ds)
    where = quarantine_partition(partition, p.quarantine, reason, details)
    if where is None:  # neither in landing nor in quarantine: nothing to move, nothing to lose
        log.error("Landing partition %s is not in landing nor in quarantine: nothing to quarantine (%s)", ds, reason)
        return partition
    log.error("Quarantined landing partition %s to %s: %s", ds, where, reason)
    return where


def _already_quarantined(config: FeaturesConfig, p: FeaturePaths, ds: date) -> Path | None:
    """The newest quarantined copy of the day when its partition is no longer in landing (a retried task)."""
    from pipelines.features.landing import partition_dir, quarantined_copies

    partition = partition_dir(config.landing, p.landing, ds)
    if partition.exists():
        return None
    copies = quarantined_copies(p.quarantine, partition.name)
    return copies[-1] if copies else None


def _raise_already_quarantined(ds: date, where: Path) -> None:
    import json

    reason_file = where / "reason.json"
    reason = json.loads(reason_file.read_text())["reason"] if reason_file.exists() else "see the quarantined copy"
    raise BatchQuarantined(
        f"landing partition {ds} was already quarantined to {where} ({reason}); land the day again, then "
        "clear the run", where)


def partition_ready(config: FeaturesConfig, ds: date) -> bool:
    """Whether the day's landing partition is complete (the sensor's poke)."""
    from pipelines.features.landing import partition_ready as ready

    is_ready = ready(config.landing, FeaturePaths(config).landing, ds)
    log.info("Landing partition %s of %s: %s", ds, config.instance, "ready" if is_ready else "not yet")
    return is_ready


def check_landing(config: FeaturesConfig, ds: date) -> LandingRows:
    """Check the day's raw files against the YAML contract; quarantine the partition if they break it.

    Returns:
        Row count per raw table.
    """
    from pipelines.features.landing import LandingContractError, check_partition

    p = FeaturePaths(config)
    already = _already_quarantined(config, p, ds)
    if already is not None:
        # A retry after the worker was killed past the move: the copy in quarantine is the day, whole.
        with _lock(config):
            _quarantine(config, p, ds, "partition left landing before this attempt")  # writes a missing reason
        _raise_already_quarantined(ds, already)
    try:
        check = check_partition(config.landing, p.landing, ds)
    except LandingContractError as exc:
        with _lock(config):
            where = _quarantine(config, p, ds, str(exc))
        raise BatchQuarantined(f"{exc}; quarantined to {where}", where) from exc
    log.info("Landing partition %s matches its contract: %s", ds, check.rows)
    return check.rows


def build_mart(config: FeaturesConfig, ds: date) -> MartBuild:
    """Run ``dbt build`` for the day (staging → marts, with dbt's tests)."""
    from dataclasses import replace

    from pipelines.features.dbt import DbtBuildError, run_dbt_build, staging_window_days
    from pipelines.features.landing import LandingContractError

    p = FeaturePaths(config)
    warehouse = p.warehouse
    already = _already_quarantined(config, p, ds)
    if already is not None:
        _raise_already_quarantined(ds, already)
    window_days = staging_window_days(p.dbt_project)  # a project fault: raised before anything is touched
    log.info("dbt build of %s for %s into %s", config.dbt.mart, ds, warehouse.describe())
    # Only the day's data is quarantined. A DuckDB lock, a dropped connection, a full disk or an I/O error
    # (DbtBuildError.data_fault False, OSError, psycopg's OperationalError) propagates and is retried.
    with _lock(config):
        try:
            warehouse.stage_landing(config.landing, p.landing, ds, window_days=window_days)
            result = run_dbt_build(
                p.dbt_project, ds=ds, landing_path=p.landing, file_format=config.landing.format,
                target=warehouse.dbt_target, work_dir=p.dbt_work, mart=config.dbt.mart,
                target_env=warehouse.dbt_env(), target_vars=warehouse.dbt_vars(),
                partition=config.landing.partition, ready_marker=config.landing.ready_marker,
                table_files={name: table.file for name, table in config.landing.tables.items()},
            )
        except (DbtBuildError, LandingContractError) as exc:
            if isinstance(exc, DbtBuildError) and not exc.data_fault:
                log.warning("dbt build for %s failed on an infrastructure fault; retrying, nothing quarantined", ds)
                raise
            where = _quarantine(config, p, ds, str(exc))
            raise BatchQuarantined(f"{exc}; quarantined to {where}", where) from exc
        result = replace(result, mart_rows=warehouse.count_day(ds, config.dbt.mart))
    log.info("dbt build for %s: %s", ds, result)
    _declare_build_lineage(config, p, ds, window_days)
    return MartBuild(**asdict(result))


def _declare_build_lineage(config: FeaturesConfig, p: FeaturePaths, ds: date, window_days: int) -> None:
    """build_mart read the landing files of its staging window and wrote the day of each model dbt built."""
    from pipelines import lineage
    from pipelines.features.dbt import built_models
    from pipelines.features.landing import partition_dir, table_file
    from pipelines.lineage import uris

    project, models = built_models(p.dbt_work)
    read = [table_file(config.landing, partition_dir(config.landing, p.landing, ds - timedelta(days=back)), table)
            for back in range(window_days) for table in config.landing.tables]
    lineage.declare(inputs=[uris.file(path) for path in read if path.exists()],
                    outputs=[uris.dbt_model(project, model, ds) for model in models])


def _mart_uri(config: FeaturesConfig, p: FeaturePaths, ds: date) -> str:
    from pipelines.features.dbt import project_name
    from pipelines.lineage import uris

    return uris.dbt_model(project_name(p.dbt_project), config.dbt.mart, ds)


def _suite_result_uri(config: FeaturesConfig, p: FeaturePaths, ds: date) -> str:
    from pipelines.lineage import uris

    return uris.expectations_result(config.instance, p.suite.stem, ds)


def validate_mart(config: FeaturesConfig, ds: date) -> MartValidation:
    """Validate the day's mart rows: one row per entity per day, then the Great Expectations suite in the repo.

    On failure the partition is quarantined, the day leaves the mart, and the error names the repeated keys
    (with their count and examples) or lists every failed expectation. The suite's report is saved as JSON
    whenever the suite runs.
    """
    from pipelines import lineage
    from pipelines.core.expectations import DataValidationError, raise_for_failures, validate_dataframe
    from pipelines.features.entity import duplicate_entity_days

    p = FeaturePaths(config)
    already = _already_quarantined(config, p, ds)
    if already is not None:
        # A cleared validate_mart of a day quarantined before: its copy stays as it is.
        _raise_already_quarantined(ds, already)
    frame = _read_mart_day(config, p, ds)
    # The grain is the template's, whatever the user's suite checks: Feast would serve an arbitrary one of
    # two rows of the same entity and day, and training would join both.
    duplicates = duplicate_entity_days(frame, config.feast.join_keys)
    if duplicates is not None:
        reason = f"mart {config.dbt.mart} for {ds} is not one row per entity per day: {duplicates}"
        with _lock(config):
            where = _quarantine(config, p, ds, reason)
        raise BatchQuarantined(f"{reason}; fix the mart model's grain or the day's data; quarantined to {where}",
                               where)
    report = validate_dataframe(frame, p.suite, batch_name=f"{config.instance} {ds}")
    write_json_atomic(p.reports / f"{ds}.json", report.to_dict(), sort_keys=False)
    if not report.success:
        with _lock(config):
            where = _quarantine(config, p, ds, report.summary(), report.to_dict())
        try:
            raise_for_failures(report, quarantined_to=where)
        except DataValidationError as exc:
            raise BatchQuarantined(str(exc), where) from exc
    log.info("%s: %d expectations passed on %d rows", report.batch_name, report.evaluated, len(frame))
    lineage.declare(inputs=[_mart_uri(config, p, ds)], outputs=[_suite_result_uri(config, p, ds)])
    return MartValidation(rows=len(frame), expectations=report.evaluated, success=True)


def publish_features(config: FeaturesConfig, ds: date) -> PublishedDay:
    """Copy the validated day of the mart to where Feast's offline source reads it."""
    from pipelines import lineage
    from pipelines.features.feast_store import publish_offline_day
    from pipelines.lineage import uris

    p = FeaturePaths(config)
    frame = _read_mart_day(config, p, ds)
    path = publish_offline_day(frame, p.offline, ds)
    log.info("Published %d rows of %s to %s", len(frame), ds, path)
    lineage.declare(inputs=[_mart_uri(config, p, ds), _suite_result_uri(config, p, ds)],
                    outputs=[uris.feature_view_day(config.feast.project, view, ds)
                             for view in config.feast.feature_views])
    return PublishedDay(rows=len(frame), path=str(path))


def apply_definitions(config: FeaturesConfig) -> DefinitionsApplied:
    """``feast apply``, only when the definitions in the repo changed."""
    from pipelines.core.locks import instance_lock
    from pipelines.features.feast_store import apply_if_changed

    with instance_lock(f"feast:{config.feast.project}"):  # the registry is the project's, like the online store
        return DefinitionsApplied(**asdict(apply_if_changed(config.feast.project, FeaturePaths(config).feast_repo)))


def materialize_day(config: FeaturesConfig, ds: date, rows: int) -> MaterializedDay:
    """Materialize exactly the day's interval into the online store.

    Args:
        rows: the day's row count, from :class:`PublishedDay` (logged with the interval).
    """
    from pipelines.core.locks import instance_lock
    from pipelines.features.feast_store import day_bounds, materialize_interval

    start, end = day_bounds(ds)
    # Two configs may share one Feast project (its online store and ledger): the lock is the project's.
    with instance_lock(f"feast:{config.feast.project}"):
        result = materialize_interval(
            config.feast.project, config.feast.feature_views, start, end,
            rows_in_interval=rows,
        )
    return MaterializedDay(
        feature_views=list(result.feature_views), start=start.isoformat(), end=end.isoformat(),
        rows=rows, replayed_to=result.replayed_to.isoformat() if result.replayed_to else None,
    )
