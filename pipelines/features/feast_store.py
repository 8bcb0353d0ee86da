"""Feast: build the store from settings, apply definitions when they changed, publish and materialize.

The store's parts come from :mod:`pipelines.core.settings`: SQLite online store and file registry by
default, Redis and a SQL registry in production. Definitions are the modules of ``feature_repo/``. Its files
live where :class:`pipelines.core.home.DataHome` says: ``offline/<project>/`` (the offline sources) and
``feast/<project>/`` (registry, online store, the applied-definitions marker and the materialization ledger).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.faults import crash_point
from pipelines.core.files import write_atomic, write_json_atomic
from pipelines.core.home import DataHome
from pipelines.core.settings import LooplineSettings, get_settings

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

log = logging.getLogger(__name__)


def repo_config(project: str, settings: LooplineSettings | None = None) -> Any:
    """A Feast ``RepoConfig`` for ``project`` with the parts the settings choose.

    Its ``repo_path`` is the project's offline folder, so the same definitions serve every instance:
    a source declared as ``customer_daily_features`` reads ``<data home>/offline/<project>/customer_daily_features``.
    """
    from feast.repo_config import RegistryConfig, RepoConfig

    settings = settings or get_settings()
    home = DataHome(settings)
    feast_home = home.feast(project)
    feast_home.mkdir(parents=True, exist_ok=True)
    if settings.feast_registry == "sql":
        from feast.infra.registry.sql import SqlRegistryConfig

        # No cache: workers on other machines apply and materialize; every task reads the registry afresh.
        registry = SqlRegistryConfig(registry_type="sql", path=settings.feast_registry_url, cache_ttl_seconds=0)
    else:
        registry = RegistryConfig(registry_type="file", path=str(feast_home / "registry.db"), cache_ttl_seconds=0)
    if settings.feast_online_store == "redis":
        # skip_dedup: write every row, as the SQLite store does. Feast's default Redis path skips a row whose
        # event time is not newer than the stored one, so a corrected, re-landed day would never reach
        # production while it does on SQLite. With it, both stores hold what the last materialization wrote.
        online: dict[str, Any] = {"type": "redis", "connection_string": settings.feast_redis_connection,
                                  "skip_dedup": True}
    else:
        online = {"type": "sqlite", "path": str(feast_home / "online_store.db")}
    return RepoConfig(
        project=project,
        provider="local",
        registry=registry,
        online_store=online,
        offline_store={"type": settings.feast_offline_store},
        repo_path=home.offline(project),  # relative source paths in feature_repo/ resolve here
        entity_key_serialization_version=3,
    )


def feature_store(project: str, settings: LooplineSettings | None = None) -> FeatureStore:
    """A ``FeatureStore`` for ``project`` (no definitions are applied by this call)."""
    from feast import FeatureStore

    return FeatureStore(config=repo_config(project, settings))


def load_definitions(repo_path: Path) -> list[Any]:
    """Import every module of a Feast definitions folder and collect the Feast objects it declares.

    Returns:
        Entities, data sources, feature views and feature services, each once, in a stable order.
    """
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    kinds = (Entity, DataSource, FeatureView, FeatureService)
    found: dict[tuple[str, str], Any] = {}
    sys.path.insert(0, str(repo_path))
    try:
        for module_file in sorted(repo_path.glob("*.py")):
            if module_file.name.startswith("_"):
                continue
            # Fresh import each time, so an edited definition is seen by a long-lived worker too.
            sys.modules.pop(module_file.stem, None)
            spec = importlib.util.spec_from_file_location(module_file.stem, module_file)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[module_file.stem] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            for value in vars(module).values():
                if isinstance(value, kinds):
                    found.setdefault((type(value).__name__, value.name), value)
    finally:
        sys.path.remove(str(repo_path))
    return [found[key] for key in sorted(found)]


_VOLATILE_FIELDS = {"meta", "created_timestamp", "last_updated_timestamp"}


def _without_timestamps(message: Any) -> Any:
    """Clear, in place and at any depth, the fields Feast stamps with the time an object was built."""
    for field, value in message.ListFields():
        if field.name in _VOLATILE_FIELDS:
            message.ClearField(field.name)
        elif field.message_type is not None:
            items = value if field.is_repeated else [value]
            if field.message_type.GetOptions().map_entry:
                items = [v for v in value.values() if hasattr(v, "ListFields")]
            for item in items:
                _without_timestamps(item)
    return message


def definitions_digest(objects: list[Any]) -> str:
    """A digest of the objects' specs: it changes exactly when a definition changes."""
    digest = hashlib.sha256()
    for obj in objects:
        proto = obj.to_proto()
        spec = _without_timestamps(getattr(proto, "spec", proto))
        digest.update(type(obj).__name__.encode())
        digest.update(spec.SerializeToString(deterministic=True))
    return digest.hexdigest()


@dataclass(frozen=True)
class ApplyResult:
    applied: bool
    digest: str
    objects: int


def apply_if_changed(project: str, repo_path: Path, settings: LooplineSettings | None = None) -> ApplyResult:
    """Apply the definitions only when they differ from what the registry holds.

    Re-applying unchanged feature views is not free: Feast replaces them in the registry, which is
    how incremental materialization state gets lost. So an unchanged repo is a no-op.
    """
    settings = settings or get_settings()
    objects = load_definitions(repo_path)
    digest = definitions_digest(objects)
    store = feature_store(project, settings)
    marker = DataHome(settings).feast(project) / "applied_definitions.sha256"
    registered = {fv.name for fv in store.list_feature_views()}
    declared = {obj.name for obj in objects if type(obj).__name__ == "FeatureView"}
    if marker.exists() and marker.read_text().strip() == digest and declared <= registered:
        log.info("Feast definitions of %s unchanged (%s…): nothing to apply", project, digest[:12])
        return ApplyResult(applied=False, digest=digest, objects=len(objects))
    log.info("Applying %d Feast objects to project %s (%s…)", len(objects), project, digest[:12])
    store.apply(objects)
    write_atomic(marker, digest + "\n")
    return ApplyResult(applied=True, digest=digest, objects=len(objects))


def offline_day_path(offline_dir: Path, ds: date) -> Path:
    return offline_dir / f"{ds.isoformat()}.parquet"


def publish_offline_day(frame: pd.DataFrame, offline_dir: Path, ds: date) -> Path:
    """Write one validated day of a mart where the Feast file source reads it (atomically).

    The temporary file's leading dot keeps it invisible to Feast's reader, which skips hidden files.
    """
    return write_atomic(offline_day_path(offline_dir, ds), lambda partial: frame.to_parquet(partial, index=False))


@dataclass(frozen=True)
class MaterializeResult:
    feature_views: tuple[str, ...]
    start: datetime
    end: datetime
    rows_in_interval: int
    replayed_to: datetime | None


def _ledger_path(settings: LooplineSettings, project: str) -> Path:
    return DataHome(settings).feast(project) / "materialized_intervals.json"


def _read_ledger(path: Path) -> dict[str, dict[str, Any]]:
    """Per feature view: ``latest_end`` (ISO datetime) and ``days`` (ISO dates) that went online."""
    return json.loads(path.read_text()) if path.exists() else {}


def materialized_days(project: str, feature_views: list[str], settings: LooplineSettings | None = None) -> set[date]:
    """The days whose interval every one of ``feature_views`` has materialized."""
    ledger = _read_ledger(_ledger_path(settings or get_settings(), project))
    per_view = [{date.fromisoformat(d) for d in ledger.get(name, {}).get("days", [])} for name in feature_views]
    return set.intersection(*per_view) if per_view else set()


def materialize_interval(
    project: str,
    feature_views: list[str],
    start: datetime,
    end: datetime,
    *,
    rows_in_interval: int,
    settings: LooplineSettings | None = None,
) -> MaterializeResult:
    """Load exactly one data interval of features into the online store, idempotently.

    Feast writes the latest row per entity in the window, whatever is already online (on both online stores:
    see :func:`repo_config`). Re-running an old interval after later ones would put stale values online, so
    the window is stretched to the latest end already materialized: the online store ends exactly as it was.

    The ledger records the interval's end *before* Feast writes (``latest_end``) and the day only after
    (``days``): a worker killed in between leaves an end that a later re-run of an older day still stretches
    to, so no crash can let older values overwrite newer ones. The caller holds the project's lock.
    """
    settings = settings or get_settings()
    store = feature_store(project, settings)
    ledger_file = _ledger_path(settings, project)
    ledger = _read_ledger(ledger_file)
    ends = [datetime.fromisoformat(ledger[name]["latest_end"]) for name in feature_views if name in ledger]
    latest_done = max(ends, default=None)
    window_end = end
    replayed_to = None
    if latest_done is not None and latest_done > end:
        window_end = replayed_to = latest_done
        log.info("Interval %s–%s is older than what is online (%s): replaying to it", start, end, latest_done)
    for name in feature_views:
        entry = ledger.setdefault(name, {"latest_end": end.isoformat(), "days": []})
        entry["latest_end"] = max(end, datetime.fromisoformat(entry["latest_end"])).isoformat()
    write_json_atomic(ledger_file, ledger)  # the intent: what may be online from now on
    crash_point("materialize:before-write")
    log.info("Materializing %s for %s → %s (%d rows in the interval)", ", ".join(feature_views), start, window_end,
             rows_in_interval)
    store.materialize(start_date=start, end_date=window_end, feature_views=feature_views)
    crash_point("materialize:before-ledger")
    for name in feature_views:
        ledger[name]["days"] = sorted({*ledger[name]["days"], start.date().isoformat()})
    write_json_atomic(ledger_file, ledger)
    return MaterializeResult(tuple(feature_views), start, end, rows_in_interval, replayed_to)


def read_online(
    project: str, feature_service: str, entity_key: str | list[str], keys: list[Any],
    settings: LooplineSettings | None = None,
) -> pd.DataFrame:
    """Online features of a feature service for some entities.

    Args:
        entity_key: the entity's join key (``feast.entity_key``), or its join keys for a composite key.
        keys: one value per entity, in the key's own type (``"S01"`` for a string key, never ``int()``-ed); a
            tuple of values, one per join key, for a composite key.

    Returns:
        One row per key: the entity key column(s), then one column per feature of the service.
    """
    from pipelines.features.entity import entity_rows

    store = feature_store(project, settings)
    service = store.get_feature_service(feature_service)
    join_keys = [entity_key] if isinstance(entity_key, str) else list(entity_key)
    return store.get_online_features(features=service, entity_rows=entity_rows(join_keys, keys)).to_df()


def day_bounds(ds: date) -> tuple[datetime, datetime]:
    """The UTC interval [ds 00:00, ds+1 00:00) that one daily run covers."""
    start = datetime(ds.year, ds.month, ds.day, tzinfo=UTC)
    return start, start + timedelta(days=1)
