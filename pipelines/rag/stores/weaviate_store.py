"""Weaviate, for production (weaviate-client v4): one collection per index version, batch import with
per-object error handling, vector, BM25 and hybrid search, and a collection alias as the live pointer.

Needs Weaviate 1.32 or later (collection aliases). The server is named by ``LOOPLINE_WEAVIATE_URL`` (or
``WEAVIATE_URL``), e.g. ``http://weaviate:8080``; the gRPC port is ``LOOPLINE_WEAVIATE_GRPC_PORT``
(default 50051, or 443 for an https URL on port 443), the gRPC host ``LOOPLINE_WEAVIATE_GRPC_HOST`` (default:
the URL's host), an API key ``LOOPLINE_WEAVIATE_API_KEY`` (or ``WEAVIATE_API_KEY``).

Collections are ``Loopline_<index>_v<n>``, the alias ``Loopline_<index>``; vectors are self-provided (no
server-side vectorizer) in a named vector ``default`` with cosine distance. Object UUIDs are uuid5 of the
chunk id, so importing a chunk twice replaces it.

The API key is a secret: inside an Airflow task it is registered with Airflow's secrets masker when it is
read (a log line that shows it shows ``***``), and it is kept out of this module's error messages and reprs
(as is a password in the URL).

No Weaviate server can be started on the machines this repository is developed on, so this backend is
exercised by the contract tests only where ``WEAVIATE_URL`` is set; see docs/rag.md.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from pipelines.rag.stores.base import IndexedChunk, SearchHit, SearchMode, StoreError, VectorStore

log = logging.getLogger(__name__)

VECTOR_NAME = "default"
BATCH_SIZE = 200
MAX_FAILED_OBJECTS = 100  # stop sending once this many objects failed: something is wrong with all of them
FILTER_BATCH = 500
PROPERTIES = ["chunk_id", "doc_id", "heading", "text"]
MIN_VERSION = (1, 32)


def weaviate_url() -> str | None:
    """The Weaviate server URL from ``LOOPLINE_WEAVIATE_URL`` or ``WEAVIATE_URL``, or None."""
    return os.environ.get("LOOPLINE_WEAVIATE_URL") or os.environ.get("WEAVIATE_URL") or None


def weaviate_api_key() -> str | None:
    """The API key from ``LOOPLINE_WEAVIATE_API_KEY`` or ``WEAVIATE_API_KEY``, or None; masked in task logs.

    Inside an Airflow task the key is registered with Airflow's secrets masker as it is read, the way
    :func:`pipelines.core.settings.get_settings` registers URL passwords: a log line that shows it shows ``***``.
    """
    key = os.environ.get("LOOPLINE_WEAVIATE_API_KEY") or os.environ.get("WEAVIATE_API_KEY") or None
    if key and "airflow.sdk.execution_time.task_runner" in sys.modules:
        from airflow.sdk.log import mask_secret

        mask_secret(key)
    return key


def _secrets(url: str | None, api_key: str | None) -> set[str]:
    from pipelines.core.settings import passwords_in

    return {s for s in ({api_key} | passwords_in(url or "")) if s}


def redacted(text: str, secrets: set[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ``***`` (for messages that quote a client's error or the URL)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def connect(url: str | None = None):
    """A connected ``weaviate.WeaviateClient`` for ``url`` (default: from the environment).

    Raises:
        StoreError: no URL is set, the URL is malformed, or the server is older than 1.32.
    """
    import weaviate
    from weaviate.classes.init import Auth

    url = url or weaviate_url()
    if not url:
        raise StoreError("index.backend is weaviate but neither LOOPLINE_WEAVIATE_URL nor WEAVIATE_URL is "
                         "set: set one to the server's URL, e.g. http://weaviate:8080")
    api_key = weaviate_api_key()
    secrets = _secrets(url, api_key)
    shown = redacted(url, secrets)
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise StoreError(f"Weaviate URL {shown!r} is not an http(s) URL like http://weaviate:8080")
    secure = parsed.scheme == "https"
    port = parsed.port or (443 if secure else 8080)
    env = os.environ.get
    default_grpc_port = 443 if port == 443 else 50051
    grpc_port = int(env("LOOPLINE_WEAVIATE_GRPC_PORT") or env("WEAVIATE_GRPC_PORT") or default_grpc_port)
    grpc_host = env("LOOPLINE_WEAVIATE_GRPC_HOST") or parsed.hostname
    auth = Auth.api_key(api_key) if api_key else None
    try:
        if parsed.hostname in ("localhost", "127.0.0.1") and not secure and grpc_host == parsed.hostname:
            client = weaviate.connect_to_local(host=parsed.hostname, port=port, grpc_port=grpc_port,
                                               auth_credentials=auth)
        else:
            client = weaviate.connect_to_custom(http_host=parsed.hostname, http_port=port, http_secure=secure,
                                                grpc_host=grpc_host, grpc_port=grpc_port, grpc_secure=secure,
                                                auth_credentials=auth)
        version = str(client.get_meta().get("version", "0"))
    except Exception as exc:
        # The client's error (and its chained causes) may quote the request, headers included: say what
        # failed with the secrets taken out, and leave the original unchained.
        raise StoreError(f"cannot connect to Weaviate at {shown} (gRPC {grpc_host}:{grpc_port}): "
                         f"{type(exc).__name__}: {redacted(str(exc), secrets)}. Check the URL, that the server is "
                         "up, and its API key (LOOPLINE_WEAVIATE_API_KEY)") from None
    numbers = tuple(int(part) for part in version.split("-")[0].split(".")[:2] if part.isdigit())
    if numbers < MIN_VERSION:
        client.close()
        raise StoreError(f"Weaviate at {shown} is version {version}; Loopline needs 1.32 or later for "
                         "collection aliases (blue/green switches). Upgrade the server")
    return client


def collection_definition(name: str, index_name: str, dimension: int) -> dict[str, Any]:
    """The keyword arguments of ``client.collections.create`` for one index version."""
    from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances

    return {
        "name": name,
        "description": f"Loopline RAG index {index_name}: {dimension}-dimensional chunk embeddings",
        "properties": [
            Property(name="chunk_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                     index_searchable=False, index_filterable=True),
            Property(name="doc_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                     index_searchable=False, index_filterable=True),
            Property(name="heading", data_type=DataType.TEXT, index_searchable=False, index_filterable=False),
            Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
        ],
        "vector_config": Configure.Vectors.self_provided(
            name=VECTOR_NAME,
            vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE),
        ),
    }


class WeaviateStore(VectorStore):
    """Versions ``Loopline_<index>_v<n>`` as Weaviate collections; the alias ``Loopline_<index>``."""

    backend = "weaviate"

    def __init__(self, index_name: str, url: str | None = None, client: Any = None):
        super().__init__(index_name)
        self.client = client or connect(url)

    def __repr__(self) -> str:  # never the client's: its connection parameters hold the API key
        return f"WeaviateStore(index={self.index_name!r})"

    @property
    def alias_name(self) -> str:
        return f"Loopline_{self.index_name}"

    @property
    def version_prefix(self) -> str:
        return f"Loopline_{self.index_name}_v"

    # --- versions and the alias ---------------------------------------------------------------------------

    def list_versions(self) -> list[str]:
        names = [n for n in self.client.collections.list_all(simple=True)
                 if self.version_number(n) is not None]
        return sorted(names, key=lambda n: self.version_number(n) or 0)

    def create_version(self, version: str, dimension: int) -> None:
        if self.version_number(version) is None:
            raise StoreError(f"{version!r} is not a version name of index {self.index_name} "
                             f"(expected {self.version_prefix}<n>)")
        if not self.client.collections.exists(version):
            self.client.collections.create(**collection_definition(version, self.index_name, dimension))
            log.info("Created Weaviate collection %s", version)

    def drop_version(self, version: str) -> None:
        if version == self.live_version():
            raise StoreError(f"refusing to drop {version}: alias {self.alias_name} points at it; switch the "
                             "alias to another version first")
        if self.client.collections.exists(version):
            self.client.collections.delete(version)
            log.info("Dropped Weaviate collection %s", version)

    def live_version(self) -> str | None:
        alias = self.client.alias.get(alias_name=self.alias_name)
        return alias.collection if alias is not None else None

    def switch_live(self, version: str) -> None:
        if not self.client.collections.exists(version):
            raise StoreError(f"cannot point alias {self.alias_name} at {version}: no such collection")
        if self.client.alias.get(alias_name=self.alias_name) is None:
            self.client.alias.create(alias_name=self.alias_name, target_collection=version)
        elif not self.client.alias.update(alias_name=self.alias_name, new_target_collection=version):
            raise StoreError(f"Weaviate did not move alias {self.alias_name} to {version}")
        log.info("Alias %s → %s (Weaviate)", self.alias_name, version)

    # --- rows ---------------------------------------------------------------------------------------------

    def _collection(self, version: str):
        if not self.client.collections.exists(version):
            raise StoreError(f"index {self.index_name} has no version {version} in Weaviate")
        return self.client.collections.use(version)

    def chunk_ids(self, version: str) -> dict[str, str]:
        collection = self._collection(version)
        return {obj.properties["chunk_id"]: obj.properties["doc_id"]
                for obj in collection.iterator(return_properties=["chunk_id", "doc_id"])}

    def write(self, version: str, chunks: Sequence[IndexedChunk]) -> None:
        if not chunks:
            return
        from weaviate.util import generate_uuid5

        collection = self._collection(version)
        uuid_to_chunk = {}
        with collection.batch.fixed_size(batch_size=BATCH_SIZE, concurrent_requests=2) as batch:
            for chunk in chunks:
                uuid = generate_uuid5(chunk.chunk_id)
                uuid_to_chunk[str(uuid)] = chunk.chunk_id
                batch.add_object(
                    properties={"chunk_id": chunk.chunk_id, "doc_id": chunk.doc_id, "heading": chunk.heading,
                                "text": chunk.text},
                    uuid=uuid,
                    vector={VECTOR_NAME: [float(x) for x in chunk.vector]},
                )
                if batch.number_errors > MAX_FAILED_OBJECTS:
                    break
        failed = collection.batch.failed_objects
        if failed:
            named = [(uuid_to_chunk.get(str(f.object_.uuid), f.object_.uuid), f.message) for f in failed[:3]]
            examples = "; ".join(f"chunk {chunk}: {message}" for chunk, message in named)
            raise StoreError(f"Weaviate refused {len(failed)} of {len(chunks)} objects for {version} "
                             f"({examples}). The objects that went in stay; the retry re-embeds and writes "
                             "only the missing ones")

    def delete(self, version: str, chunk_ids: Sequence[str]) -> None:
        from weaviate.classes.query import Filter

        collection = self._collection(version)
        ids = list(chunk_ids)
        for start in range(0, len(ids), FILTER_BATCH):
            result = collection.data.delete_many(
                where=Filter.by_property("chunk_id").contains_any(ids[start:start + FILTER_BATCH]))
            if result.failed:
                raise StoreError(f"Weaviate failed to delete {result.failed} of {result.matches} objects "
                                 f"from {version}; the retry deletes them again")

    def count(self, version: str) -> int:
        return int(self._collection(version).aggregate.over_all(total_count=True).total_count or 0)

    # --- search -------------------------------------------------------------------------------------------

    def search(self, text: str, vector: Sequence[float] | None, k: int, mode: SearchMode = "hybrid",
               version: str | None = None) -> list[SearchHit]:
        from weaviate.classes.query import MetadataQuery

        if version is None and self.live_version() is None:
            raise StoreError(f"index {self.index_name} has no live version yet (no alias {self.alias_name}): "
                             "run its rag_index DAG first")
        # An alias works wherever a collection name does (1.32+): readers query through it.
        collection = self.client.collections.use(version or self.alias_name)
        if mode == "vector":
            result = collection.query.near_vector(
                near_vector=[float(x) for x in vector], target_vector=VECTOR_NAME, limit=k,
                return_metadata=MetadataQuery(distance=True), return_properties=PROPERTIES)
            return [_hit(o, 1.0 - float(o.metadata.distance)) for o in result.objects]
        if mode == "text":
            result = collection.query.bm25(query=text, query_properties=["text"], limit=k,
                                           return_metadata=MetadataQuery(score=True),
                                           return_properties=PROPERTIES)
            return [_hit(o, float(o.metadata.score)) for o in result.objects]
        if mode == "hybrid":
            result = collection.query.hybrid(
                query=text, vector=[float(x) for x in vector], target_vector=VECTOR_NAME,
                query_properties=["text"], alpha=0.5, limit=k, return_metadata=MetadataQuery(score=True),
                return_properties=PROPERTIES)
            return [_hit(o, float(o.metadata.score)) for o in result.objects]
        raise StoreError(f"unknown search mode {mode!r}: use vector, hybrid or text")

    def close(self) -> None:
        self.client.close()


def _hit(obj: Any, score: float) -> SearchHit:
    p = obj.properties
    return SearchHit(p["chunk_id"], p["doc_id"], p.get("heading") or "", p["text"], score)
