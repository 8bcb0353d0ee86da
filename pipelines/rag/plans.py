"""A re-index run's files under ``<data home>/rag/<instance>/``: its plan and the embeddings staged for it.

``plans/<plan_id>.json`` holds what one run does (the chunks to embed, the ids to delete); an incremental
run stages its embedded chunks as parquet parts under ``staging/<plan_id>/`` until they are applied to the
live version. A new plan supersedes every older one and its staging. Every file is written whole or not at
all (:mod:`pipelines.core.files`), so a retry after a crash resumes from the last complete part.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import NotRetryable
from pipelines.core.files import write_atomic, write_json_atomic
from pipelines.core.home import DataHome, PathOutsideDataHome
from pipelines.rag.versions import catalog_path

if TYPE_CHECKING:
    from pipelines.core.settings import LooplineSettings
    from pipelines.rag.config import RagIndexConfig
    from pipelines.rag.stores.base import IndexedChunk


class IndexStateError(RuntimeError):
    """The index is not in the state a step expects; the message says what to re-run."""


class PlanSuperseded(NotRetryable, IndexStateError):
    """A later run replaced this run's plan: re-running an old run must not undo a newer one."""


class LiveVersionMoved(NotRetryable, IndexStateError):
    """The alias moved since the plan was made (a rollback, or another run): the plan no longer applies."""


@dataclass(frozen=True)
class RagPaths:
    """Where one instance keeps its state, all under the data home."""

    root: Path
    plans: Path
    staging: Path
    catalog: Path

    def plan_file(self, plan_id: str) -> Path:
        return self.plans / f"{check_plan_id(plan_id)}.json"

    def staged(self, plan_id: str) -> Path:
        """The folder of the chunks an incremental plan embedded, before they are applied (and removed)."""
        return self.staging / check_plan_id(plan_id)


PLAN_ID = re.compile(r"[0-9a-f]{16}")


def check_plan_id(plan_id: str) -> str:
    """``plan_id`` if it is one (16 hex digits, what :func:`~pipelines.rag.steps.plan_index` makes).

    A plan id comes back through XCom and names a folder that publish removes: ``../..`` must never get there.

    Raises:
        PathOutsideDataHome: it is not a plan id; no path was built from it.
    """
    if not isinstance(plan_id, str) or not PLAN_ID.fullmatch(plan_id):
        raise PathOutsideDataHome(f"XCom plan_index.plan_id is {plan_id!r}, not a plan id (16 hex digits): refusing "
                                  "to build a path from it. Clear plan_index so that it plans again")
    return plan_id


def paths(config: RagIndexConfig, settings: LooplineSettings | None = None) -> RagPaths:
    """The state of ``config``'s index: ``<data home>/rag/<instance>/{plans,staging}`` and its catalog."""
    root = DataHome(settings).rag(config.instance)
    return RagPaths(root, root / "plans", root / "staging", catalog_path(config, settings))


# --- plans --------------------------------------------------------------------------------------------------

def save_plan(path: Path, plan: dict[str, Any]) -> None:
    """Write a plan (with its chunk lists) as compact JSON: it can hold the text of every chunk."""
    write_json_atomic(path, plan, indent=None, sort_keys=False)


def load_plan(plan_path: str | Path, plan_id: str, instance: str,
              settings: LooplineSettings | None = None) -> dict[str, Any]:
    """The whole plan a step's summary (its XCom) points at, read only from the instance's plans folder.

    Raises:
        PathOutsideDataHome: ``plan_path`` resolves outside the data home, or ``plan_id`` is not a plan id.
        PlanSuperseded: the file is gone, because a later run planned again.
    """
    check_plan_id(plan_id)
    path = DataHome(settings).require_inside(plan_path, "XCom plan_index.plan_path")
    if path.name != f"{plan_id}.json":
        raise PathOutsideDataHome(f"XCom plan_index.plan_path is {str(plan_path)!r}, not the file of plan {plan_id}: "
                                  "refusing to read it. Clear plan_index so that it plans again")
    if not path.exists():
        raise PlanSuperseded(f"plan {plan_id} of index {instance} is gone: a later run planned again and "
                             "superseded it. Nothing to do here; run the DAG again to index the corpus as it is "
                             "now")
    return json.loads(path.read_text())


def remove_other_plans(p: RagPaths, keep: str) -> None:
    """A new plan supersedes every older one (and its staged embeddings)."""
    for old in p.plans.glob("*.json"):
        if old.stem != keep:
            old.unlink(missing_ok=True)
    if p.staging.exists():
        for old in p.staging.iterdir():
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)


# --- staged embeddings --------------------------------------------------------------------------------------

def stage_batch(folder: Path, rows: list[IndexedChunk]) -> None:
    """One batch of embedded chunks as a parquet part named after its chunk ids, written whole or not at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "id": [r.chunk_id for r in rows], "doc_id": [r.doc_id for r in rows],
        "heading": [r.heading for r in rows], "text": [r.text for r in rows],
        "vector": pa.array([list(map(float, r.vector)) for r in rows], type=pa.list_(pa.float32())),
    })
    name = f"part-{hashlib.sha256(''.join(r.chunk_id for r in rows).encode()).hexdigest()[:16]}.parquet"
    write_atomic(folder / name, lambda partial: pq.write_table(table, partial))


def staged_ids(folder: Path) -> set[str]:
    """The chunk ids already staged in ``folder`` (none when it does not exist)."""
    import pyarrow.parquet as pq

    parts = sorted(folder.glob("part-*.parquet"))
    return {i for part in parts for i in pq.read_table(part, columns=["id"]).column("id").to_pylist()}


def save_gate(folder: Path, verdict: dict[str, Any]) -> None:
    """The evaluation gate's verdict on an incremental plan's update, beside its staged chunks."""
    write_json_atomic(folder / "gate.json", verdict)


def read_gate(folder: Path) -> dict[str, Any] | None:
    """The verdict :func:`save_gate` wrote, or None when the update was not evaluated."""
    path = folder / "gate.json"
    return json.loads(path.read_text()) if path.exists() else None


def read_staged(folder: Path) -> list[IndexedChunk]:
    """Every chunk staged in ``folder``, with its vector."""
    import pyarrow.parquet as pq

    from pipelines.rag.stores.base import IndexedChunk

    rows = []
    for part in sorted(folder.glob("part-*.parquet")):
        t = pq.read_table(part).to_pydict()
        rows += [IndexedChunk(*fields)
                 for fields in zip(t["id"], t["doc_id"], t["heading"], t["text"], t["vector"], strict=True)]
    return rows
