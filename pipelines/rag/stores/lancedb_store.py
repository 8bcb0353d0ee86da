"""LanceDB, the embedded default: one table per index version under the data home, vector, full-text and
hybrid (reciprocal rank fusion) search.

LanceDB has no table aliases, so the alias is a small JSON file beside the tables (``aliases.json``),
replaced atomically (:func:`pipelines.core.files.write_json_atomic`): a reader resolves it on every query
and opens either the old or the new table, never a half-written one. Every LanceDB write (add, merge,
delete) commits a new table version atomically; an incremental update (:meth:`LanceDBStore.apply`) is one
``merge_insert`` that upserts and deletes in a single commit, so it is seen whole or not at all, and a writer
killed during it leaves the table as it was.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from pipelines.core.files import write_json_atomic
from pipelines.rag.stores.base import IndexedChunk, SearchHit, SearchMode, StoreError, VectorStore

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"
DELETE_BATCH = 500
COLUMNS = ["id", "doc_id", "heading", "text"]


class LanceDBStore(VectorStore):
    """Versions ``<index>_v<n>`` as LanceDB tables in ``root``; the alias ``<index>`` in ``aliases.json``."""

    backend = "lancedb"

    def __init__(self, index_name: str, root: Path):
        import lancedb

        super().__init__(index_name)
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # Always read the latest committed table version: in-place updates are visible to the next query.
        self.db = lancedb.connect(str(root), read_consistency_interval=timedelta(0))

    @property
    def alias_name(self) -> str:
        return self.index_name

    @property
    def version_prefix(self) -> str:
        return f"{self.index_name}_v"

    # --- versions and the alias ---------------------------------------------------------------------------

    def _table_names(self) -> list[str]:
        names, token = [], None
        while True:
            page = self.db.list_tables(page_token=token)
            names.extend(page.tables)
            token = page.page_token
            if not token:
                return names

    def list_versions(self) -> list[str]:
        versions = [n for n in self._table_names() if self.version_number(n) is not None]
        return sorted(versions, key=lambda n: self.version_number(n) or 0)

    def _schema(self, dimension: int):
        import pyarrow as pa

        return pa.schema([
            pa.field("id", pa.string(), nullable=False),
            pa.field("doc_id", pa.string()),
            pa.field("heading", pa.string()),
            pa.field("text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dimension)),
        ])

    def create_version(self, version: str, dimension: int) -> None:
        if self.version_number(version) is None:
            raise StoreError(f"{version!r} is not a version name of index {self.index_name} "
                             f"(expected {self.version_prefix}<n>)")
        self.db.create_table(version, schema=self._schema(dimension), exist_ok=True)

    def drop_version(self, version: str) -> None:
        if version == self.live_version():
            raise StoreError(f"refusing to drop {version}: it is the live version of index "
                             f"{self.index_name}; switch the alias to another version first")
        self.db.drop_table(version, ignore_missing=True)

    def _aliases(self) -> dict[str, str]:
        path = self.root / ALIASES_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def live_version(self) -> str | None:
        return self._aliases().get(self.alias_name)

    def switch_live(self, version: str) -> None:
        if version not in self.list_versions():
            raise StoreError(f"cannot point alias {self.alias_name} at {version}: no such table in "
                             f"{self.root}")
        write_json_atomic(self.root / ALIASES_FILE, {**self._aliases(), self.alias_name: version})
        log.info("Alias %s → %s (LanceDB, %s)", self.alias_name, version, self.root)

    # --- rows ---------------------------------------------------------------------------------------------

    def _table(self, version: str):
        try:
            return self.db.open_table(version)
        except (FileNotFoundError, ValueError) as exc:
            raise StoreError(f"index {self.index_name} has no version {version} in {self.root}") from exc

    def chunk_ids(self, version: str) -> dict[str, str]:
        table = self._table(version)
        if table.count_rows() == 0:
            return {}
        rows = table.search().select(["id", "doc_id"]).limit(None).to_arrow()
        return dict(zip(rows.column("id").to_pylist(), rows.column("doc_id").to_pylist(), strict=True))

    def write(self, version: str, chunks: Sequence[IndexedChunk]) -> None:
        if not chunks:
            return
        table = self._table(version)
        table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(
            self._rows(table, version, chunks))

    atomic_apply = True

    def apply(self, version: str, chunks: Sequence[IndexedChunk], delete_ids: Sequence[str]) -> None:
        """Upsert and delete in one commit (``merge_insert`` … ``when_not_matched_by_source_delete``)."""
        upserted = {c.chunk_id for c in chunks}
        doomed = [i for i in dict.fromkeys(delete_ids) if i not in upserted]
        if not chunks and not doomed:
            return
        table = self._table(version)
        merge = table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
        if doomed:
            merge = merge.when_not_matched_by_source_delete(_id_filter(doomed))
        merge.execute(self._rows(table, version, chunks))

    @contextmanager
    def preview(self, version: str, chunks: Sequence[IndexedChunk],
                delete_ids: Sequence[str]) -> Iterator[str | None]:
        """A shallow clone of ``version`` (shares its files, copies nothing) with the update applied."""
        prefix = f"{self.index_name}_preview_"
        for leftover in [n for n in self._table_names() if n.startswith(prefix)]:
            self.db.drop_table(leftover, ignore_missing=True)  # of an evaluation that was killed
        name = f"{prefix}{uuid.uuid4().hex[:12]}"
        self.db.clone_table(name, self._table(version).uri)
        try:
            self.apply(name, chunks, delete_ids)
            yield name
        finally:
            self.db.drop_table(name, ignore_missing=True)

    def _rows(self, table: Any, version: str, chunks: Sequence[IndexedChunk]):
        import pyarrow as pa

        schema = table.schema
        dimension = schema.field("vector").type.list_size
        bad = [c.chunk_id for c in chunks if len(c.vector) != dimension]
        if bad:
            raise StoreError(f"{len(bad)} chunk(s) for {version} have vectors of another length than its "
                             f"{dimension} dimensions (first: {bad[0]}): the model changed under a running "
                             "build")
        vectors = pa.array([list(map(float, c.vector)) for c in chunks], type=schema.field("vector").type)
        return pa.table({
            "id": [c.chunk_id for c in chunks],
            "doc_id": [c.doc_id for c in chunks],
            "heading": [c.heading for c in chunks],
            "text": [c.text for c in chunks],
            "vector": vectors,
        }, schema=schema)

    def delete(self, version: str, chunk_ids: Sequence[str]) -> None:
        table = self._table(version)
        ids = list(chunk_ids)
        for start in range(0, len(ids), DELETE_BATCH):
            table.delete(_id_filter(ids[start:start + DELETE_BATCH]))

    def count(self, version: str) -> int:
        return self._table(version).count_rows()

    def finalize(self, version: str) -> None:
        """Create the full-text index on ``text`` (first time), then compact and bring indexes up to date."""
        from lancedb.index import FTS

        table = self._table(version)
        if table.count_rows() == 0:
            return
        if not any(ix.index_type == "FTS" for ix in table.list_indices()):
            table.create_index("text", config=FTS(), replace=True)
        table.optimize()

    # --- search -------------------------------------------------------------------------------------------

    def search(self, text: str, vector: Sequence[float] | None, k: int, mode: SearchMode = "hybrid",
               version: str | None = None) -> list[SearchHit]:
        version = version or self.live_version()
        if version is None:
            raise StoreError(f"index {self.index_name} has no live version yet: run its rag_index DAG first")
        table = self._table(version)
        if mode == "vector":
            rows = (table.search(list(vector), vector_column_name="vector").distance_type("cosine")
                    .select([*COLUMNS, "_distance"]).limit(k).to_list())
            return [_hit(r, 1.0 - float(r["_distance"])) for r in rows]
        if mode == "text":
            rows = (table.search(text, query_type="fts", fts_columns="text")
                    .select([*COLUMNS, "_score"]).limit(k).to_list())
            return [_hit(r, float(r["_score"])) for r in rows]
        if mode == "hybrid":
            # No select(): LanceDB warns on every hybrid query that names its output columns.
            rows = (table.search(query_type="hybrid", vector_column_name="vector", fts_columns="text")
                    .vector(list(vector)).text(text).distance_type("cosine").limit(k).to_list())
            return [_hit(r, float(r["_relevance_score"])) for r in rows]
        raise StoreError(f"unknown search mode {mode!r}: use vector, hybrid or text")


def _id_filter(ids: Sequence[str]) -> str:
    return "id IN (" + ", ".join("'" + i.replace("'", "''") + "'" for i in ids) + ")"


def _hit(row: dict[str, Any], score: float) -> SearchHit:
    return SearchHit(row["id"], row["doc_id"], row["heading"], row["text"], score)
