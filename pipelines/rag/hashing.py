"""Content hashing: a stable id per chunk, and what a corpus changes against an index.

A chunk's id is a hash of the document id, the chunk text, the chunker config and the embedding model
(and, for a text that repeats inside one document, its occurrence number). The same corpus chunked the
same way for the same model always gives the same ids, so comparing id sets says exactly which chunks
must be embedded and which must go: nothing else is compared, and an unchanged corpus embeds nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field

from pipelines.rag.corpus import CHUNKER_VERSION, Corpus, chunk_document_with


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document, with its stable id. ``text`` is what gets embedded and searched."""

    chunk_id: str
    doc_id: str
    heading: str
    text: str


def chunker_digest(size_chars: int, overlap_chars: int, strategy: str = "structure") -> str:
    """The chunker config (and algorithm version) as a short digest: a change means new chunk ids.

    The default ``structure`` strategy is left out of the digest, so indexes built before strategies existed
    keep their chunk ids.
    """
    spec = {"algorithm": CHUNKER_VERSION, "size_chars": size_chars, "overlap_chars": overlap_chars}
    if strategy != "structure":
        spec["strategy"] = strategy
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def chunk_id(doc_id: str, text: str, chunker: str, model_id: str, occurrence: int = 0) -> str:
    """The stable id of a chunk: sha256 of its document id, text, chunker digest, model id and occurrence."""
    key = "\x1f".join([doc_id, text, chunker, model_id, str(occurrence)])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def chunk_corpus(corpus: Corpus, size_chars: int, overlap_chars: int, model_id: str,
                 strategy: str = "structure") -> list[Chunk]:
    """Every chunk of a corpus with its id, documents in id order, chunks in document order."""
    chunker = chunker_digest(size_chars, overlap_chars, strategy)
    chunks = []
    for doc in sorted(corpus.documents, key=lambda d: d.doc_id):
        seen: dict[str, int] = defaultdict(int)
        for heading, text in chunk_document_with(doc, size_chars, overlap_chars, strategy):
            occurrence = seen[text]
            seen[text] += 1
            cid = chunk_id(doc.doc_id, text, chunker, model_id, occurrence)
            chunks.append(Chunk(cid, doc.doc_id, heading, text))
    return chunks


@dataclass
class IndexDiff:
    """What a corpus changes in an index: document sets, the chunks to embed and the chunk ids to delete."""

    docs_new: list[str] = field(default_factory=list)
    docs_changed: list[str] = field(default_factory=list)
    docs_deleted: list[str] = field(default_factory=list)
    docs_unchanged: list[str] = field(default_factory=list)
    docs_kept: list[str] = field(default_factory=list)  # skipped as bad input: their indexed chunks stay
    chunks_to_embed: list[Chunk] = field(default_factory=list)
    chunk_ids_to_delete: list[str] = field(default_factory=list)
    chunks_unchanged: int = 0

    @property
    def is_empty(self) -> bool:
        return not self.chunks_to_embed and not self.chunk_ids_to_delete

    def counts(self) -> dict[str, int]:
        return {
            "docs_new": len(self.docs_new), "docs_changed": len(self.docs_changed),
            "docs_deleted": len(self.docs_deleted), "docs_unchanged": len(self.docs_unchanged),
            "docs_kept_bad_input": len(self.docs_kept),
            "chunks_to_embed": len(self.chunks_to_embed), "chunks_to_delete": len(self.chunk_ids_to_delete),
            "chunks_unchanged": self.chunks_unchanged,
        }


def diff_against_index(chunks: list[Chunk], indexed: dict[str, str],
                       keep_docs: set[str] | frozenset = frozenset()) -> IndexDiff:
    """Compare a corpus's chunks with the chunk ids an index holds.

    Args:
        chunks: The corpus's chunks (from :func:`chunk_corpus`).
        indexed: chunk id → document id of every chunk in the index.
        keep_docs: Documents whose file was skipped as bad input: whatever the index holds for them stays.

    Returns:
        New documents (not in the index), changed (in both, other chunk ids), deleted (only in the index),
        unchanged (same ids); the chunks whose id the index lacks, and the indexed ids the corpus lacks.
    """
    corpus_ids: dict[str, set[str]] = defaultdict(set)
    for chunk in chunks:
        corpus_ids[chunk.doc_id].add(chunk.chunk_id)
    index_ids: dict[str, set[str]] = defaultdict(set)
    for cid, doc_id in indexed.items():
        index_ids[doc_id].add(cid)

    diff = IndexDiff()
    for doc_id in sorted(corpus_ids.keys() | index_ids.keys()):
        if doc_id not in index_ids:
            diff.docs_new.append(doc_id)
        elif doc_id not in corpus_ids:
            (diff.docs_kept if doc_id in keep_docs else diff.docs_deleted).append(doc_id)
        elif corpus_ids[doc_id] == index_ids[doc_id]:
            diff.docs_unchanged.append(doc_id)
        else:
            diff.docs_changed.append(doc_id)
    kept = set(diff.docs_kept)
    diff.chunks_to_embed = [c for c in chunks if c.chunk_id not in indexed]
    diff.chunk_ids_to_delete = sorted(cid for cid, doc_id in indexed.items()
                                      if doc_id not in kept and cid not in corpus_ids.get(doc_id, ()))
    diff.chunks_unchanged = len(chunks) - len(diff.chunks_to_embed)
    return diff
