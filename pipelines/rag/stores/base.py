"""The one small interface every vector-store backend implements, and what flows through it.

An index is a set of *versions* (a LanceDB table, a Weaviate collection), one of which is *live*: the
alias readers query points at it. A full rebuild writes a new version while readers keep using the live
one, then moves the alias in one atomic step. Rows are keyed by chunk id, so writing a chunk twice
leaves one row.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

SearchMode = Literal["vector", "hybrid", "text"]


class StoreError(RuntimeError):
    """A backend refused an operation; the message names the index, version and what to do."""


@dataclass(frozen=True)
class IndexedChunk:
    """A chunk as stored: id, document, heading path, text and its embedding."""

    chunk_id: str
    doc_id: str
    heading: str
    text: str
    vector: Sequence[float]


@dataclass(frozen=True)
class SearchHit:
    """One search result, best first; ``score`` is higher-is-better within one query and mode."""

    chunk_id: str
    doc_id: str
    heading: str
    text: str
    score: float


@dataclass(frozen=True)
class HybridFusion:
    """Loopline's own hybrid search: weighted reciprocal rank fusion of a vector list and a BM25 list.

    Each list holds ``candidates`` hits; a chunk scores ``sum(weight / (rrf_k + rank))`` over the lists it is
    in (rank from 1), so ``text_weight`` > 1 trusts BM25 more than the embedding, < 1 less.
    """

    rrf_k: int = 60
    text_weight: float = 1.0
    vector_weight: float = 1.0
    candidates: int = 50


def fuse_reciprocal_rank(weighted_lists: Sequence[tuple[float, Sequence[SearchHit]]], k: int,
                         rrf_k: int = 60) -> list[SearchHit]:
    """The ``k`` best hits of several ranked lists by weighted reciprocal rank fusion, best first.

    Args:
        weighted_lists: (weight, hits best first) per retriever.
        rrf_k: The RRF constant: larger flattens the difference between ranks.

    Returns:
        Hits with ``score`` = their fused score; a chunk in several lists appears once (its first hit).
    """
    scores: dict[str, float] = {}
    first: dict[str, SearchHit] = {}
    for weight, hits in weighted_lists:
        for rank, hit in enumerate(hits, 1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight / (rrf_k + rank)
            first.setdefault(hit.chunk_id, hit)
    ranked = sorted(scores, key=lambda cid: (-scores[cid], cid))[:k]
    return [SearchHit(first[c].chunk_id, first[c].doc_id, first[c].heading, first[c].text, scores[c]) for c in ranked]


def limit_per_document(hits: Sequence[SearchHit], k: int, per_document: int) -> list[SearchHit]:
    """The first ``k`` hits, best first, skipping a document's hits after its first ``per_document``."""
    seen: dict[str, int] = {}
    kept = []
    for hit in hits:
        if seen.get(hit.doc_id, 0) < per_document:
            seen[hit.doc_id] = seen.get(hit.doc_id, 0) + 1
            kept.append(hit)
            if len(kept) == k:
                break
    return kept


class VectorStore(ABC):
    """Versions of one index, the alias that names the live one, and search.

    Subclasses name versions ``<prefix>_v<n>``; ``n`` only grows, so a name is never reused.
    """

    backend: str = ""
    fusion: HybridFusion | None = None
    """When set (``search.hybrid: weighted_rrf``), :meth:`retrieve`'s ``hybrid`` is :meth:`fused_search` instead of
    the backend's own hybrid query."""
    max_chunks_per_document: int | None = None
    """When set (``search.max_chunks_per_document``), :meth:`retrieve` keeps at most this many chunks of one
    document, so the k results span more documents."""
    overfetch: int = 4

    def __init__(self, index_name: str):
        self.index_name = index_name

    # names
    @property
    @abstractmethod
    def alias_name(self) -> str:
        """The name readers use; it points at the live version."""

    @property
    @abstractmethod
    def version_prefix(self) -> str:
        """Version names are ``f"{version_prefix}{n}"``."""

    def version_name(self, number: int) -> str:
        return f"{self.version_prefix}{number}"

    def version_number(self, name: str) -> int | None:
        match = re.fullmatch(re.escape(self.version_prefix) + r"(\d+)", name)
        return int(match.group(1)) if match else None

    def next_version_name(self) -> str:
        numbers = [self.version_number(v) or 0 for v in self.list_versions()]
        return self.version_name(max(numbers, default=0) + 1)

    # versions and the alias
    @abstractmethod
    def list_versions(self) -> list[str]:
        """Every version of this index in the store, oldest first."""

    @abstractmethod
    def create_version(self, version: str, dimension: int) -> None:
        """Create an empty version for vectors of ``dimension``; nothing happens if it exists."""

    @abstractmethod
    def drop_version(self, version: str) -> None:
        """Delete a version and its rows. Refuses the live version; a missing version is fine."""

    @abstractmethod
    def live_version(self) -> str | None:
        """The version the alias points at, or None before the first switch."""

    @abstractmethod
    def switch_live(self, version: str) -> None:
        """Point the alias at ``version`` in one atomic step: a reader sees the old or the new version."""

    # rows
    @abstractmethod
    def chunk_ids(self, version: str) -> dict[str, str]:
        """chunk id → document id of every row of ``version``."""

    @abstractmethod
    def write(self, version: str, chunks: Sequence[IndexedChunk]) -> None:
        """Insert or replace rows by chunk id. Raises :class:`StoreError` naming the rows it refused."""

    @abstractmethod
    def delete(self, version: str, chunk_ids: Sequence[str]) -> None:
        """Delete rows by chunk id; ids that are not there are ignored."""

    def apply(self, version: str, chunks: Sequence[IndexedChunk], delete_ids: Sequence[str]) -> None:
        """Upsert ``chunks`` and delete ``delete_ids`` from ``version``: an incremental update of the live version.

        ``atomic_apply`` says whether a reader sees the update whole or not at all. This default, for stores
        without multi-row commits, writes first and deletes after, so no document is ever missing but a
        reader may see a changed chunk's old and new text for a moment; re-applying is harmless.
        """
        self.write(version, chunks)
        self.delete(version, [i for i in delete_ids if i not in {c.chunk_id for c in chunks}])

    atomic_apply: bool = False

    @contextmanager
    def preview(self, version: str, chunks: Sequence[IndexedChunk],
                delete_ids: Sequence[str]) -> Iterator[str | None]:
        """A short-lived copy of ``version`` with :meth:`apply` done to it, to evaluate an update before readers
        see it; dropped on exit. Yields None where the store cannot copy a version cheaply."""
        yield None

    @abstractmethod
    def count(self, version: str) -> int:
        """Rows in ``version``."""

    def finalize(self, version: str) -> None:  # noqa: B027 - optional
        """Bring text indexes up to date and compact after writes (a no-op where the store does it itself)."""

    # search
    @abstractmethod
    def search(self, text: str, vector: Sequence[float] | None, k: int, mode: SearchMode = "hybrid",
               version: str | None = None) -> list[SearchHit]:
        """The ``k`` best chunks for a query, in ``version`` or, when None, the live version via the alias.

        ``vector`` is the query's embedding (from the model that built the version); ``text`` feeds the
        full-text side of ``hybrid`` and ``text`` search.
        """

    def fused_search(self, text: str, vector: Sequence[float], k: int, version: str | None = None,
                     fusion: HybridFusion | None = None) -> list[SearchHit]:
        """Hybrid search by :func:`fuse_reciprocal_rank` of this store's own vector and BM25 searches."""
        fusion = fusion or self.fusion or HybridFusion()
        version = version or self.live_version()  # resolved once for both lists
        n = max(k, fusion.candidates)
        by_vector = self.search(text, vector, n, mode="vector", version=version)
        by_text = self.search(text, vector, n, mode="text", version=version) if fusion.text_weight > 0 else []
        return fuse_reciprocal_rank([(fusion.vector_weight, by_vector), (fusion.text_weight, by_text)], k,
                                    fusion.rrf_k)

    def retrieve(self, text: str, vector: Sequence[float] | None, k: int, mode: SearchMode = "hybrid",
                 version: str | None = None) -> list[SearchHit]:
        """What readers and the evaluation search with: :meth:`search`, or :meth:`fused_search` for ``hybrid``
        when ``fusion`` is set; with ``max_chunks_per_document`` set, ``k * overfetch`` hits are fetched and the k
        best kept with at most that many chunks per document."""
        n = k if self.max_chunks_per_document is None else k * self.overfetch
        if mode == "hybrid" and self.fusion is not None:
            hits = self.fused_search(text, vector, n, version)
        else:
            hits = self.search(text, vector, n, mode=mode, version=version)
        if self.max_chunks_per_document is None:
            return hits
        return limit_per_document(hits, k, self.max_chunks_per_document)

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
