"""The catalog of an index's versions, retiring old ones, and rollback.

The store knows which versions exist and which one is live (its alias); the catalog, a JSON file under the
data home (``rag/<instance>/<backend>/catalog.json``), knows what each version is: the model and chunker
that built it (its *fingerprint*), the corpus it last held, its evaluation, its status, and the order in
which versions went live (for rollback).

Statuses: ``building`` (a candidate being written or re-planned), ``approved`` (passed the evaluation gate,
about to go live), ``rejected`` (blocked by the gate, kept for inspection and reused by the next build of the
same fingerprint), ``live``, ``previous`` (was live, kept for rollback).

Command line::

    python -m pipelines.rag.versions dags/configs/docs_rag_index.yaml list
    python -m pipelines.rag.versions dags/configs/docs_rag_index.yaml rollback [--to docs_v2]

Writers (the ``rag_index`` steps and :func:`rollback`) hold :func:`index_lock`, the instance's lock, while
they change the store or the catalog, and every change of the catalog re-reads the file first, so a
rollback and a build never undo each other's record. The store's alias is the truth about which version is
live: a crash between moving the alias and recording it is repaired by the next writer
(:meth:`VersionCatalog.follow_alias`), so the catalog never has two live versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import NotRetryable
from pipelines.core.files import write_json_atomic
from pipelines.core.home import DataHome
from pipelines.core.locks import LockTimeout, instance_lock

if TYPE_CHECKING:
    from pipelines.core.settings import LooplineSettings
    from pipelines.rag.config import RagIndexConfig
    from pipelines.rag.stores.base import VectorStore

log = logging.getLogger(__name__)


class VersionError(NotRetryable, ValueError):
    """A version operation that cannot be done; the message says why and what to do."""


@contextmanager
def index_lock(config: RagIndexConfig, settings: LooplineSettings | None = None,
               timeout_s: float = 600) -> Iterator[None]:
    """Hold the lock ``rag:<instance>`` (one writer of the index and its catalog at a time).

    Raises:
        LockTimeout: another run, backfill or rollback held it for ``timeout_s`` (retryable; nothing changed).
    """
    with instance_lock(f"rag:{config.instance}", settings=settings, timeout_s=timeout_s):
        yield


def catalog_path(config: RagIndexConfig, settings: LooplineSettings | None = None) -> Path:
    """``<data home>/rag/<instance>/<backend>/catalog.json``."""
    return DataHome(settings).rag(config.instance, config.index.backend, "catalog.json")


def fingerprint(model_id: str, chunker: str) -> str:
    """What makes a version: the model and the chunker. Another fingerprint means another version."""
    return hashlib.sha256(f"{model_id}|{chunker}".encode()).hexdigest()[:16]


def version_number(name: str) -> int:
    """The ``<n>`` of a version name ``<index>_v<n>`` (0 when the name has none): versions sort by it."""
    tail = name.rsplit("_v", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class VersionCatalog:
    """What each version of one index is; saved atomically on every change.

    Every change re-reads the file before applying itself (under the instance lock, see :func:`index_lock`),
    so a long step never writes back a stale copy over what a rollback recorded meanwhile.
    """

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        return (json.loads(self.path.read_text()) if self.path.exists()
                else {"versions": {}, "history": [], "last_number": 0})

    def reload(self) -> VersionCatalog:
        self.data = self._read()
        return self

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    @property
    def versions(self) -> dict[str, dict[str, Any]]:
        return self.data["versions"]

    @property
    def history(self) -> list[str]:
        """Versions in the order they went live (a version appears again after a rollback to it)."""
        return self.data["history"]

    def get(self, version: str | None) -> dict[str, Any] | None:
        return self.versions.get(version) if version else None

    def put(self, version: str, **fields: Any) -> dict[str, Any]:
        self.reload()
        record = self.versions.setdefault(version, {})
        record.update(fields)
        self.save()
        return record

    def remove(self, version: str) -> None:
        self.reload()
        self.versions.pop(version, None)
        self.save()

    def allocate_number(self, store_numbers: list[int]) -> int:
        """A version number never used before by this index (numbers only grow, even after drops)."""
        self.reload()
        number = max([self.data.get("last_number", 0), *store_numbers]) + 1
        self.data["last_number"] = number
        self.save()
        return number

    def candidate_for(self, fingerprint: str) -> str | None:
        """The newest version built with ``fingerprint`` that never went live: resumed, not restarted."""
        names = [name for name, record in self.versions.items()
                 if record.get("fingerprint") == fingerprint
                 and record.get("status") in ("building", "approved", "rejected")]
        return max(names, key=version_number, default=None)

    def live_versions(self) -> list[str]:
        """The versions the catalog records as live: one, or none before the first switch."""
        return [name for name, record in self.versions.items() if record.get("status") == "live"]

    def mark_live(self, version: str, previous: str | None, reason: str) -> None:
        """Record ``version`` as the live one; every other version recorded live becomes ``previous``."""
        self.reload()
        for name in {previous, *self.live_versions()} - {None, version}:
            if name in self.versions:
                self.versions[name]["status"] = "previous"
        self.versions.setdefault(version, {})["status"] = "live"
        self.versions[version]["went_live_because"] = reason
        if not self.history or self.history[-1] != version:
            self.history.append(version)
        self.save()

    def follow_alias(self, live: str | None) -> bool:
        """Make the catalog agree with the store's alias (``live``), which is what readers see.

        A writer that died between moving the alias and recording it leaves the catalog behind; the next
        writer calls this under the lock. Returns whether anything had to be repaired.
        """
        self.reload()
        if live is None or self.live_versions() == [live]:
            return False
        log.warning("Catalog %s records %s as live but the alias points at %s (a writer died between the two): "
                    "recording %s as live", self.path, self.live_versions() or "nothing", live, live)
        self.mark_live(live, None, reason="repaired: the alias pointed here")
        return True

    def previous_versions(self, live: str | None) -> list[str]:
        """Versions that were live before, most recent first, without repeats and without ``live``."""
        seen: list[str] = []
        for name in reversed(self.history):
            if name != live and name not in seen and name in self.versions:
                seen.append(name)
        return seen


def retire_versions(store: VectorStore, catalog: VersionCatalog, keep_previous: int) -> list[str]:
    """Drop every catalogued version except the live one and the ``keep_previous`` last live before it.

    Candidates that never went live (building, approved or rejected) are dropped too: the switch made them
    obsolete.
    Versions in the store that the catalog does not know are left alone and logged.
    """
    live = store.live_version()
    keep = {live, *catalog.previous_versions(live)[:keep_previous]}
    dropped = []
    for name in store.list_versions():
        if name in keep:
            continue
        if name not in catalog.versions:
            log.warning("Version %s of index %s is not in the catalog %s: left alone", name, store.index_name,
                        catalog.path)
            continue
        store.drop_version(name)
        catalog.remove(name)
        dropped.append(name)
    for name in [n for n in catalog.versions if n not in keep and n not in store.list_versions()]:
        catalog.remove(name)  # records of versions that no longer exist
    if dropped:
        log.info("Retired versions %s of index %s (kept %s)", dropped, store.index_name,
                 sorted(v for v in keep if v))
    return dropped


def list_versions(config: RagIndexConfig, settings: LooplineSettings | None = None) -> list[dict[str, Any]]:
    """Every version in the store with its catalog record, the live one marked."""
    from pipelines.rag.stores import open_store

    catalog = VersionCatalog(catalog_path(config, settings))
    with open_store(config.index.backend, config.instance, settings) as store:
        live = store.live_version()
        return [{"version": name, "live": name == live, "rows": store.count(name),
                 **(catalog.get(name) or {})} for name in store.list_versions()]


def rollback(config: RagIndexConfig, to: str | None = None, settings: LooplineSettings | None = None,
             lock_timeout_s: float = 600) -> dict:
    """Point the alias back at a previous version (the last one live before the current, or ``to``).

    Holds the instance's lock, so it waits for a running step of the ``rag_index`` DAG to finish (up to
    ``lock_timeout_s``) and no step starts while it moves the alias.

    The version rolled back from stays, as a previous version. Note that the next scheduled run compares
    the live version with the YAML: if the YAML still names the model or chunker you rolled back from, it
    builds a new version with them again. Revert the YAML too, or pause the DAG.

    Raises:
        VersionError: there is no version to roll back to, or ``to`` is not one.
        LockTimeout: a run held the lock for ``lock_timeout_s``; nothing changed, try again.
    """
    from pipelines.rag.stores import open_store

    with index_lock(config, settings, timeout_s=lock_timeout_s), \
            open_store(config.index.backend, config.instance, settings) as store:
        catalog = VersionCatalog(catalog_path(config, settings))
        live = store.live_version()
        catalog.follow_alias(live)
        available = store.list_versions()
        if to is None:
            previous = [v for v in catalog.previous_versions(live) if v in available]
            if not previous:
                raise VersionError(f"index {config.instance} ({config.index.backend}) has no previous "
                                   f"version to roll back to (live: {live}; versions: {available}); "
                                   f"index.previous_versions_kept is {config.index.previous_versions_kept}")
            to = previous[0]
        if to not in available:
            raise VersionError(f"index {config.instance} has no version {to}; versions: {available}")
        if to == live:
            return {"from": live, "to": to, "changed": False}
        store.switch_live(to)
        catalog.mark_live(to, live, reason=f"rollback from {live}")
    log.info("Rolled index %s back from %s to %s", config.instance, live, to)
    return {"from": live, "to": to, "changed": True}


def load_rag_config(path: Path) -> RagIndexConfig:
    """Read and validate a ``rag_index`` YAML file; errors name the file and the field, as load_config's."""
    from pipelines.rag.config import RagIndexConfig
    from pipelines.templates import PipelineConfigError, load_config

    config = load_config(Path(path))
    if not isinstance(config, RagIndexConfig):
        raise PipelineConfigError(Path(path), [f"template: expected rag_index, got {config.template}"])
    return config


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="List or roll back the versions of a rag_index instance.")
    parser.add_argument("config", type=Path,
                        help="the instance's YAML, e.g. dags/configs/docs_rag_index.yaml")
    parser.add_argument("action", choices=["list", "rollback"])
    parser.add_argument("--to", help="version to roll back to (default: the one live before the current)")
    parser.add_argument("--wait", type=float, default=600,
                        help="seconds to wait for a running rag_index step to release the index (default 600)")
    args = parser.parse_args(argv)
    config = load_rag_config(args.config)
    if args.action == "list":
        for row in list_versions(config):
            print(f"{'*' if row['live'] else ' '} {row['version']:<28} {row.get('status', '?'):<9} "
                  f"{row['rows']:>8} rows  model {row.get('model_id', '?')}  "
                  f"chunker {row.get('chunker', {})}")
        return 0
    try:
        result = rollback(config, args.to, lock_timeout_s=args.wait)
    except LockTimeout as exc:
        print(f"{config.instance}: not rolled back, nothing changed: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: try again
    if result["changed"]:
        print(f"{config.instance}: rolled back from {result['from']} to {result['to']}")
    else:
        print(f"{config.instance}: already on {result['to']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
