"""One contract for every vector-store backend: versions, the alias, upserts, deletes, search.

Runs against LanceDB always, and against Weaviate when ``WEAVIATE_URL`` (or ``LOOPLINE_WEAVIATE_URL``) names
a server (1.32 or later). No Weaviate server can be started on the machines this repository is developed
on, and nothing stands in for one: without the variable those cases are skipped, saying so.
"""

from __future__ import annotations

import threading
import uuid

import pytest

from pipelines.rag.stores.base import IndexedChunk, StoreError
from pipelines.rag.stores.weaviate_store import weaviate_url

pytestmark = pytest.mark.integration

DIM = 8
NO_WEAVIATE = ("no Weaviate server: set WEAVIATE_URL (e.g. http://localhost:8080, Weaviate >= 1.32) to run "
               "the store contract against it; none can be started on the machines this repository is "
               "tested on")
BACKENDS = [
    pytest.param("lancedb", id="lancedb"),
    pytest.param("weaviate", id="weaviate", marks=pytest.mark.skipif(not weaviate_url(), reason=NO_WEAVIATE)),
]

TOPICS = {
    "airflow.md": "Airflow schedules DAG runs and retries failed tasks",
    "feast.md": "Feast serves online features from the SQLite store",
    "lancedb.md": "LanceDB keeps vectors in columnar tables on disk",
    "mlflow.md": "MLflow tracks experiments and registers models",
}


def axis(i: int, scale: float = 1.0) -> list[float]:
    return [scale if j == i else 0.0 for j in range(DIM)]


def chunks(version_tag: str = "") -> list[IndexedChunk]:
    """Two chunks per topic; topic i's chunks point along axis i (the second a little off it)."""
    out = []
    for i, (doc, text) in enumerate(TOPICS.items()):
        second = axis(i)
        second[DIM - 1] = 0.3
        name = doc.removesuffix(".md")
        out.append(IndexedChunk(f"{doc}#0{version_tag}", doc, name.title(), f"{text}.", axis(i)))
        out.append(IndexedChunk(f"{doc}#1{version_tag}", doc, name.title(),
                                f"More about {name}: {text.lower()} again.", second))
    return out


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    name = f"contract{uuid.uuid4().hex[:8]}"
    if request.param == "lancedb":
        from pipelines.rag.stores.lancedb_store import LanceDBStore

        s = LanceDBStore(name, tmp_path / "lancedb")
    else:
        from pipelines.rag.stores.weaviate_store import WeaviateStore

        s = WeaviateStore(name)
    yield s
    if request.param == "weaviate":  # leave the shared server as it was
        s.client.alias.delete(alias_name=s.alias_name)
        for version in s.list_versions():
            s.client.collections.delete(version)
    s.close()


@pytest.fixture
def filled(store):
    version = store.next_version_name()
    store.create_version(version, DIM)
    store.write(version, chunks())
    store.finalize(version)
    return store, version


def test_a_new_index_has_no_versions_and_no_live_version(store):
    assert store.list_versions() == [] and store.live_version() is None
    assert store.next_version_name() == store.version_name(1)


def test_versions_are_created_once_and_listed_in_number_order(store):
    for n in (2, 10, 1, 2):
        store.create_version(store.version_name(n), DIM)
    assert store.list_versions() == [store.version_name(n) for n in (1, 2, 10)]
    assert store.next_version_name() == store.version_name(11)
    with pytest.raises(StoreError, match="is not a version name"):
        store.create_version("someone_elses_table", DIM)


def test_written_chunks_are_listed_counted_and_upserted_by_id(filled):
    store, version = filled
    expected = {c.chunk_id: c.doc_id for c in chunks()}
    assert store.chunk_ids(version) == expected and store.count(version) == 8
    store.write(version, chunks())  # the same ids again: still one row each
    assert store.count(version) == 8
    replaced = IndexedChunk("feast.md#0", "feast.md", "Feast", "Feast now reads from Redis.", axis(1))
    store.write(version, [replaced])
    store.finalize(version)
    assert store.count(version) == 8
    top = store.search("Redis", axis(1), 1, mode="hybrid", version=version)[0]
    assert (top.chunk_id, top.text) == ("feast.md#0", "Feast now reads from Redis.")


def test_deletes_remove_exactly_the_named_ids(filled):
    store, version = filled
    store.delete(version, ["airflow.md#0", "airflow.md#1", "not-there"])
    store.finalize(version)
    assert set(store.chunk_ids(version)) == {c.chunk_id for c in chunks()} - {"airflow.md#0", "airflow.md#1"}
    hits = store.search("Airflow", axis(0), 8, mode="hybrid", version=version)
    assert "airflow.md" not in {h.doc_id for h in hits}


def test_vector_search_returns_the_nearest_chunks_best_first(filled):
    store, version = filled
    hits = store.search("", axis(2), 3, mode="vector", version=version)
    assert [h.chunk_id for h in hits[:2]] == ["lancedb.md#0", "lancedb.md#1"]
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    assert (hits[0].doc_id, hits[0].heading) == ("lancedb.md", "Lancedb")
    assert hits[0].text == TOPICS["lancedb.md"] + "."


def test_text_and_hybrid_search_find_words(filled):
    store, version = filled
    assert store.search("experiments", None, 2, mode="text", version=version)[0].doc_id == "mlflow.md"
    # Full-text says feast, the vector says airflow: both documents come back, fused.
    hits = store.search("online features SQLite", axis(0), 4, mode="hybrid", version=version)
    hybrid = {h.doc_id for h in hits}
    assert {"feast.md", "airflow.md"} <= hybrid


def two_finalized_versions(store) -> tuple[str, str]:
    """Versions 1 and 2 written and finalized (chunk ids of version 2 end in ``-v2``); neither is live."""
    v1, v2 = store.version_name(1), store.version_name(2)
    for version, tag in ((v1, ""), (v2, "-v2")):
        store.create_version(version, DIM)
        store.write(version, chunks(tag))
        store.finalize(version)
    return v1, v2


def test_the_alias_names_the_live_version_and_moves_atomically(store):
    v1, v2 = two_finalized_versions(store)
    with pytest.raises(StoreError):
        store.search("Airflow", axis(0), 2)  # no live version yet
    store.switch_live(v1)
    assert store.live_version() == v1
    assert store.search("Airflow", axis(0), 1)[0].chunk_id == "airflow.md#0"
    store.switch_live(v2)
    assert store.live_version() == v2
    assert store.search("Airflow", axis(0), 1)[0].chunk_id == "airflow.md#0-v2"
    with pytest.raises(StoreError):
        store.switch_live(store.version_name(9))
    assert store.live_version() == v2, "a failed switch leaves the alias where it was"


def test_readers_see_one_whole_version_while_the_alias_flips(store):
    """Fault: the alias flips 30 times under a reader thread. Invariant: every read sees one whole version.

    Each flip waits until the reader has finished a read since the flip before, so the reads really do
    interleave with the flips: the test fails if the reader read nothing, or never saw one of the versions.
    """
    v1, v2 = two_finalized_versions(store)
    store.switch_live(v1)
    seen: list[str] = []
    errors: list[Exception] = []
    done, read_once = threading.Event(), threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                ids = {h.chunk_id for h in store.search("Airflow", axis(0), 8, mode="vector")}
                seen.append("v2" if ids and all(i.endswith("-v2") for i in ids) else
                            "v1" if ids and not any(i.endswith("-v2") for i in ids) else "mixed")
            except Exception as exc:  # noqa: BLE001 - any failure of a reader is what we look for
                errors.append(exc)
            read_once.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(30):
            assert read_once.wait(timeout=30), "the reader thread made no read within 30 s"
            read_once.clear()
            store.switch_live(v2 if i % 2 == 0 else v1)
        assert read_once.wait(timeout=30)
    finally:
        done.set()
        reader.join()
    assert errors == [] and "mixed" not in seen
    assert len(seen) >= 31 and {"v1", "v2"} <= set(seen), f"reads: {len(seen)}, versions seen: {set(seen)}"


def test_the_live_version_cannot_be_dropped_others_can(store):
    v1, v2 = store.version_name(1), store.version_name(2)
    store.create_version(v1, DIM)
    store.create_version(v2, DIM)
    store.switch_live(v2)
    with pytest.raises(StoreError, match=f"refusing to drop {v2}"):
        store.drop_version(v2)
    store.drop_version(v1)
    store.drop_version(v1)  # already gone: fine
    assert store.list_versions() == [v2]


def test_vectors_of_the_wrong_length_are_refused(filled):
    store, version = filled
    with pytest.raises(StoreError):
        store.write(version, [IndexedChunk("odd#0", "odd.md", "Odd", "odd", [1.0, 0.0])])
    assert "odd#0" not in store.chunk_ids(version)


def test_apply_upserts_and_deletes_and_a_preview_leaves_the_version_as_it_was(filled):
    store, version = filled
    before = store.chunk_ids(version)
    new = IndexedChunk("feast.md#2", "feast.md", "Feast", "Feast materializes features into Redis.", axis(5))
    with store.preview(version, [new], ["airflow.md#0"]) as preview:
        if preview is not None:  # stores that cannot copy a version cheaply yield None
            assert preview not in store.list_versions(), "readers and retirement never see a preview"
            assert set(store.chunk_ids(preview)) == (set(before) - {"airflow.md#0"}) | {"feast.md#2"}
            assert store.search("Redis", axis(5), 1, mode="vector", version=preview)[0].chunk_id == "feast.md#2"
    assert store.chunk_ids(version) == before, "the preview changed nothing"
    if preview is not None:
        with pytest.raises(StoreError):
            store.count(preview)  # dropped on exit
    store.apply(version, [new], ["airflow.md#0", "not-there"])
    store.apply(version, [new], ["airflow.md#0"])  # applying again changes nothing
    store.finalize(version)
    assert store.chunk_ids(version) == {**{i: d for i, d in before.items() if i != "airflow.md#0"},
                                        "feast.md#2": "feast.md"}
    assert store.count(version) == len(before)
