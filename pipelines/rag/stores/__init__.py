"""Vector-store backends behind one interface (:class:`~pipelines.rag.stores.base.VectorStore`).

``lancedb`` (embedded, under the data home) is the default; ``weaviate`` is the production counterpart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.core.home import DataHome

if TYPE_CHECKING:
    from pipelines.core.settings import LooplineSettings
    from pipelines.rag.stores.base import VectorStore

BACKENDS = ("lancedb", "weaviate")


def open_store(backend: str, index_name: str, settings: LooplineSettings | None = None) -> VectorStore:
    """The store of index ``index_name`` on ``backend`` (LanceDB: ``<data home>/rag/<index>/lancedb``)."""
    if backend == "lancedb":
        from pipelines.rag.stores.lancedb_store import LanceDBStore

        return LanceDBStore(index_name, DataHome(settings).rag(index_name, "lancedb"))
    if backend == "weaviate":
        from pipelines.rag.stores.weaviate_store import WeaviateStore

        return WeaviateStore(index_name)
    raise ValueError(f"unknown vector store backend {backend!r}; known: {', '.join(BACKENDS)}")
