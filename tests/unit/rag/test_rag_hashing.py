"""Chunk ids and the diff against an index: exactly the new and changed chunks embed, the gone ones go."""

from __future__ import annotations

import pytest

from pipelines.rag.corpus import Corpus, Document, normalise_text
from pipelines.rag.embeddings import EmbeddingModelError, default_model_path, model_id, resolve_model_path
from pipelines.rag.hashing import chunk_corpus, chunk_id, chunker_digest, diff_against_index

pytestmark = pytest.mark.unit

MODEL = "model-a@0123456789ab"


def corpus(**docs: str) -> Corpus:
    documents = [Document(f"{name}.md", "markdown", normalise_text(text, "markdown"), str(hash(text)))
                 for name, text in docs.items()]
    return Corpus(root=None, documents=documents)  # type: ignore[arg-type]


def section(title: str, *paragraphs: str) -> str:
    return f"# {title}\n\n" + "\n\n".join(paragraphs)


A = section("Alpha", "alpha one " * 20, "alpha two " * 20, "alpha three " * 20)
B = section("Beta", "beta one " * 20, "beta two " * 20)


def chunks_of(c: Corpus, model: str = MODEL, size: int = 250, overlap: int = 0):
    return chunk_corpus(c, size, overlap, model)


def test_chunk_id_is_stable_and_depends_on_every_input():
    base = chunk_id("a.md", "text", "chunker", "model")
    assert base == chunk_id("a.md", "text", "chunker", "model")
    assert len(base) == 32
    others = {chunk_id("b.md", "text", "chunker", "model"), chunk_id("a.md", "text!", "chunker", "model"),
              chunk_id("a.md", "text", "chunker2", "model"), chunk_id("a.md", "text", "chunker", "model2"),
              chunk_id("a.md", "text", "chunker", "model", 1)}
    assert base not in others and len(others) == 5


def test_chunker_digest_changes_with_size_and_overlap():
    assert chunker_digest(1000, 150) == chunker_digest(1000, 150)
    assert len({chunker_digest(1000, 150), chunker_digest(1000, 100), chunker_digest(800, 150)}) == 3


def test_repeated_text_in_one_document_gets_distinct_ids():
    c = corpus(a=section("Same", "repeat me") + "\n\n" + section("Same", "repeat me"))
    ids = [ch.chunk_id for ch in chunks_of(c)]
    assert len(ids) == 2 and len(set(ids)) == 2


def test_a_new_model_or_chunker_changes_every_id():
    c = corpus(a=A, b=B)
    ids = {ch.chunk_id for ch in chunks_of(c)}
    assert ids.isdisjoint({ch.chunk_id for ch in chunks_of(c, model="model-b@ffffffffffff")})
    assert ids.isdisjoint({ch.chunk_id for ch in chunks_of(c, overlap=20)})


def indexed(chunks) -> dict[str, str]:
    return {c.chunk_id: c.doc_id for c in chunks}


def test_against_an_empty_index_everything_is_new():
    chunks = chunks_of(corpus(a=A, b=B))
    diff = diff_against_index(chunks, {})
    assert diff.docs_new == ["a.md", "b.md"]
    assert diff.chunks_to_embed == chunks and diff.chunk_ids_to_delete == []


def test_an_unchanged_corpus_embeds_and_deletes_nothing():
    chunks = chunks_of(corpus(a=A, b=B))
    diff = diff_against_index(chunks, indexed(chunks))
    assert diff.is_empty
    assert diff.docs_unchanged == ["a.md", "b.md"] and diff.chunks_unchanged == len(chunks)


def test_adding_a_document_embeds_only_its_chunks():
    before = chunks_of(corpus(a=A))
    after = chunks_of(corpus(a=A, b=B))
    diff = diff_against_index(after, indexed(before))
    assert diff.docs_new == ["b.md"] and diff.docs_unchanged == ["a.md"]
    assert diff.chunks_to_embed == [c for c in after if c.doc_id == "b.md"]
    assert diff.chunk_ids_to_delete == []


def test_changing_one_paragraph_embeds_and_deletes_only_the_chunks_that_differ():
    before = chunks_of(corpus(a=A, b=B))
    changed = A.replace("alpha two " * 20, "alpha TWO rewritten " * 10)
    after = chunks_of(corpus(a=changed, b=B))
    diff = diff_against_index(after, indexed(before))
    assert diff.docs_changed == ["a.md"] and diff.docs_unchanged == ["b.md"]
    old_a = {c.chunk_id for c in before if c.doc_id == "a.md"}
    new_a = {c.chunk_id for c in after if c.doc_id == "a.md"}
    assert {c.chunk_id for c in diff.chunks_to_embed} == new_a - old_a
    assert set(diff.chunk_ids_to_delete) == old_a - new_a
    assert 0 < len(diff.chunks_to_embed) < len(new_a), "an untouched paragraph of the changed document is kept"
    assert all("TWO" in c.text for c in diff.chunks_to_embed)


def test_deleting_a_document_deletes_exactly_its_chunks():
    before = chunks_of(corpus(a=A, b=B))
    diff = diff_against_index(chunks_of(corpus(a=A)), indexed(before))
    assert diff.docs_deleted == ["b.md"] and diff.chunks_to_embed == []
    assert set(diff.chunk_ids_to_delete) == {c.chunk_id for c in before if c.doc_id == "b.md"}


def test_a_document_skipped_as_bad_input_keeps_its_indexed_chunks():
    before = chunks_of(corpus(a=A, b=B))
    diff = diff_against_index(chunks_of(corpus(a=A)), indexed(before), keep_docs={"b.md"})
    assert diff.docs_kept == ["b.md"] and diff.docs_deleted == [] and diff.is_empty


# --- model identity (no model is loaded) --------------------------------------------------------------------

def fake_model(folder, weights: bytes):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_model_id_names_the_model_and_digests_its_files(tmp_path):
    one = fake_model(tmp_path / "mini", b"weights-1")
    same = fake_model(tmp_path / "copy" / "mini", b"weights-1")
    tuned = fake_model(tmp_path / "tuned" / "mini", b"weights-2")
    assert model_id(one).startswith("mini@")
    assert model_id(one).split("@")[1] == model_id(same).split("@")[1]
    assert model_id(one) != model_id(tuned), "same name and shapes, other weights: another model"


def test_the_default_model_is_the_bundled_all_minilm_folder():
    path = resolve_model_path(None)
    assert path == default_model_path() and (path / "modules.json").exists()
    assert model_id(path).startswith("all-MiniLM-L6-v2@")


def test_a_wrong_model_path_is_named(tmp_path):
    with pytest.raises(EmbeddingModelError, match=r"embedding.model .*nowhere: folder .* does not exist"):
        resolve_model_path(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbeddingModelError, match=r"holds no modules.json or config.json"):
        resolve_model_path(str(tmp_path / "empty"))
