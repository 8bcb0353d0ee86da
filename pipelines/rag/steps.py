"""The steps of the ``rag_index`` template, one function per task, and search for readers.

1. :func:`plan_index` loads, normalises, chunks and hashes the corpus and compares it with the index:
   *incremental* when the live version was built with the configured model and chunker (only new and
   changed chunks are embedded, only removed ones deleted), *unchanged* when nothing differs, *full* when
   there is no live version or the model or chunker changed: then a new version is built beside the live
   one. The plan (the chunks to embed, the ids to delete) is saved under the data home (:mod:`.plans`).
2. :func:`embed_chunks` embeds the plan's chunks in batches. A full build writes them straight into the
   new version, which no reader sees; an incremental run writes them to a staging folder. Either way the
   live version is untouched, and a retry after a crash resumes where the last committed batch ended.
3. :func:`evaluate_index` scores a full build's candidate against the live version on the frozen question
   set (hit@k, MRR@k) and blocks it when it regresses beyond the bounds.
4. :func:`publish_index` moves the alias to the candidate (full), or applies the staged chunks and the
   deletions to the live version (incremental: additions first, so no document is ever missing), then
   retires versions beyond ``previous_versions_kept``.
5. :func:`record_index` evaluates the live version (or reuses its evaluation when nothing changed) and
   logs metrics and lineage (corpus digest, model, chunker config, version) to MLflow.

Each step returns a plain dict (its XCom), typed here: :class:`IndexPlan`, :class:`EmbeddedChunks`,
:class:`IndexVerdict`, :class:`PublishedIndex`, :class:`IndexRunSummary`.

All state is under ``<data home>/rag/<instance>/``. Every step can be re-run: ids are content hashes, the
plan's id is a hash of what it does, and writes are upserts keyed by chunk id. Every step that writes the
index or the catalog holds the instance's lock (:func:`pipelines.rag.versions.index_lock`), as rollback does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from pipelines import lineage
from pipelines.core import tracking
from pipelines.core.faults import crash_point
from pipelines.core.settings import LooplineSettings, get_settings
from pipelines.lineage import uris
from pipelines.rag import embeddings, plans
from pipelines.rag.corpus import Corpus, load_corpus
from pipelines.rag.embeddings import EmbeddingModelError
from pipelines.rag.evaluation import (
    GateBlocked,
    ModeMetrics,
    evaluate_version,
    evaluation_record,
    flat_metrics,
    gate,
    load_questions,
    stored_evaluation,
)
from pipelines.rag.hashing import Chunk, IndexDiff, chunk_corpus, chunker_digest, diff_against_index
from pipelines.rag.plans import IndexStateError, LiveVersionMoved
from pipelines.rag.versions import VersionCatalog, fingerprint, index_lock, retire_versions

if TYPE_CHECKING:
    from pipelines.rag.config import RagIndexConfig
    from pipelines.rag.evaluation import QuestionSet
    from pipelines.rag.stores.base import IndexedChunk, SearchHit, VectorStore

log = logging.getLogger(__name__)

LISTED = 20  # names of documents listed in a step's result (the counts are always complete)

PlanMode = Literal["full", "incremental", "unchanged"]

# --- what the steps hand each other (XCom) ------------------------------------------------------------------

class ChunkerState(TypedDict, total=False):
    size_chars: int
    overlap_chars: int
    digest: str
    strategy: str


class IndexPlan(TypedDict):
    """:func:`plan_index`'s result: the plan without its chunk lists (those stay in the file at ``plan_path``).

    ``counts`` has docs new/changed/deleted/unchanged/kept_bad_input and chunks to embed/to delete/unchanged;
    ``docs`` the names of new, changed, deleted and kept documents (first 20 of each).
    """

    plan_id: str
    plan_path: str
    instance: str
    backend: str
    mode: PlanMode
    target_version: str
    live_version: str | None
    fingerprint: str
    model_id: str
    model_path: str
    chunker: ChunkerState
    corpus_root: str
    corpus_digest: str
    documents: int
    chunks: int
    counts: dict[str, int]
    skipped_files: list[dict[str, str]]
    skipped_files_total: int
    docs: dict[str, list[str]]


class EmbeddedChunks(TypedDict):
    """:func:`embed_chunks`'s result; ``written_to`` is the candidate version or the staging folder."""

    mode: PlanMode
    embedded: int
    resumed: int
    deleted_from_candidate: int
    seconds: float
    chunks_per_s: float
    written_to: str | None


class IndexVerdict(TypedDict):
    """:func:`evaluate_index`'s result: the gate's decision and the metrics (``{mode: {hit_rate, mrr}}``)."""

    mode: PlanMode
    decision: Literal["switch", "blocked", "in_place", "unchanged"]
    candidate: ModeMetrics | None
    live: ModeMetrics | None
    gate: str
    k: int
    unanswerable_sources: NotRequired[list[str]]


class PublishedIndex(TypedDict):
    """:func:`publish_index`'s result; ``changed`` says whether readers now see something new."""

    changed: bool
    action: Literal["switched", "updated_in_place", "unchanged"]
    live_version: str | None
    previous_version: str | None
    written: int
    deleted: int
    retired_versions: list[str]


class IndexRunSummary(TypedDict):
    """:func:`record_index`'s result: what the run did to the index, its metrics and lineage."""

    instance: str
    backend: str
    dag_run_id: str
    mode: PlanMode
    action: str
    index_changed: bool
    live_version: str | None
    previous_version: str | None
    target_version: str
    documents: int
    chunks: int
    embedded: int
    skipped_unchanged: int
    deleted: int
    docs: dict[str, int]
    skipped_files: list[dict[str, str]]
    skipped_files_total: int
    metrics: ModeMetrics | None
    k: int
    gate: str | None
    corpus_digest: str
    model_id: str
    chunker: ChunkerState
    embed_seconds: float
    mlflow_run_id: str


def _open_store(config: RagIndexConfig, settings: LooplineSettings) -> VectorStore:
    from pipelines.rag.stores import open_store

    store = open_store(config.index.backend, config.instance, settings)
    store.fusion = config.search.fusion()
    store.max_chunks_per_document = config.search.max_chunks_per_document
    return store


def _catalog(config: RagIndexConfig, settings: LooplineSettings) -> VersionCatalog:
    return VersionCatalog(plans.paths(config, settings).catalog)


def _full_plan(plan: IndexPlan, settings: LooplineSettings) -> dict[str, Any]:
    """The plan file the XCom names; its path and id are checked to lie in the data home (:func:`plans.load_plan`)."""
    return plans.load_plan(plan["plan_path"], plan["plan_id"], plan["instance"], settings)


# --- 1. plan ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _CorpusNow:
    """The corpus as it is now, chunked and hashed for the configured model and chunker."""

    root: Path
    corpus: Corpus
    model_path: Path
    model_id: str
    chunker: ChunkerState
    fingerprint: str
    chunks: list[Chunk]


def _corpus_now(config: RagIndexConfig, settings: LooplineSettings) -> _CorpusNow:
    root = settings.resolve(config.corpus.path)
    corpus = load_corpus(root, config.corpus.include, config.corpus.exclude,
                         max_bytes=int(config.corpus.max_file_mb * 1_000_000), bad_files=config.corpus.bad_files)
    model_path = embeddings.resolve_model_path(config.embedding.model, settings)
    model_id = embeddings.model_id(model_path)
    size, overlap = config.chunker.size_chars, config.chunker.overlap_chars
    strategy = config.chunker.strategy
    chunker: ChunkerState = {"size_chars": size, "overlap_chars": overlap,
                             "digest": chunker_digest(size, overlap, strategy), "strategy": strategy}
    return _CorpusNow(root, corpus, model_path, model_id, chunker, fingerprint(model_id, chunker["digest"]),
                      chunk_corpus(corpus, size, overlap, model_id, strategy))


def _compare_with_index(config: RagIndexConfig, now: _CorpusNow, store: VectorStore, catalog: VersionCatalog,
                        run_id: str) -> tuple[PlanMode, str, str | None, IndexDiff]:
    """Update the live version in place when it has the same fingerprint, else build (or resume) a new one.

    Returns:
        (mode, target version, live version, the diff of the corpus against the target).
    """
    live = store.live_version()
    live_record = catalog.get(live)
    existing = store.list_versions()
    if live and live_record and live_record.get("fingerprint") == now.fingerprint:
        bad_input = {s.doc_id for s in now.corpus.skipped}
        diff = diff_against_index(now.chunks, store.chunk_ids(live), keep_docs=bad_input)
        return ("unchanged" if diff.is_empty else "incremental"), live, live, diff
    target = catalog.candidate_for(now.fingerprint)
    if target is None:
        numbers = [store.version_number(v) or 0 for v in existing]
        target = store.version_name(catalog.allocate_number(numbers))
    # A new version holds only what the corpus has now; a resumed one keeps what it already holds.
    diff = diff_against_index(now.chunks, store.chunk_ids(target) if target in existing else {})
    if live and not live_record:
        log.warning("Live version %s of index %s is not in the catalog %s: rebuilding as %s",
                    live, config.instance, catalog.path, target)
    catalog.put(target, status="building", fingerprint=now.fingerprint, model_id=now.model_id,
                model_path=str(now.model_path), built_by=run_id, chunker=dict(now.chunker))
    return "full", target, live, diff


def plan_index(config: RagIndexConfig, run_id: str = "manual",
               settings: LooplineSettings | None = None) -> IndexPlan:
    """Load, chunk and hash the corpus, compare it with the index, and save the plan.

    Returns:
        The plan without its chunk lists (:class:`IndexPlan`): ``mode`` is full, incremental or unchanged.

    Raises:
        CorpusError: the corpus folder is missing or holds no readable document (nothing is written).
        EmbeddingModelError: the model folder is missing or not a sentence-transformers model.
    """
    settings = settings or get_settings()
    p = plans.paths(config, settings)
    now = _corpus_now(config, settings)
    with index_lock(config, settings):
        plan = _plan_locked(config, now, p, run_id, settings)
    lineage.declare(inputs=[uris.file(now.root / doc.doc_id) for doc in now.corpus.documents],
                    outputs=[uris.corpus(config.instance, now.corpus.digest)])
    return plan


def _plan_locked(config: RagIndexConfig, now: _CorpusNow, p: plans.RagPaths, run_id: str,
                 settings: LooplineSettings) -> IndexPlan:
    with _open_store(config, settings) as store:
        catalog = VersionCatalog(p.catalog)
        catalog.follow_alias(store.live_version())
        mode, target, live, diff = _compare_with_index(config, now, store, catalog, run_id)
    plan_key = json.dumps([mode, target, live, now.fingerprint, now.corpus.digest,
                           [c.chunk_id for c in diff.chunks_to_embed], diff.chunk_ids_to_delete])
    plan_id = hashlib.sha256(plan_key.encode()).hexdigest()[:16]
    skipped = now.corpus.skipped
    summary: IndexPlan = {
        "plan_id": plan_id, "plan_path": str(p.plan_file(plan_id)), "instance": config.instance,
        "backend": config.index.backend, "mode": mode, "target_version": target, "live_version": live,
        "fingerprint": now.fingerprint, "model_id": now.model_id, "model_path": str(now.model_path),
        "chunker": now.chunker, "corpus_root": str(now.root), "corpus_digest": now.corpus.digest,
        "documents": len(now.corpus.documents), "chunks": len(now.chunks), "counts": diff.counts(),
        "skipped_files": [{"file": s.doc_id, "reason": s.reason} for s in skipped[:LISTED]],
        "skipped_files_total": len(skipped),
        "docs": {"new": diff.docs_new[:LISTED], "changed": diff.docs_changed[:LISTED],
                 "deleted": diff.docs_deleted[:LISTED], "kept_bad_input": diff.docs_kept[:LISTED]},
    }
    plans.save_plan(p.plan_file(plan_id), {
        **summary, "chunks_to_embed": [[c.chunk_id, c.doc_id, c.heading, c.text] for c in diff.chunks_to_embed],
        "chunk_ids_to_delete": diff.chunk_ids_to_delete})
    plans.remove_other_plans(p, plan_id)
    counts = summary["counts"]
    log.info("Plan %s for index %s: %s into %s (live: %s); %d documents, %d chunks; docs new %d, "
             "changed %d, deleted %d, unchanged %d; chunks to embed %d, to delete %d, unchanged %d; "
             "%d files skipped", plan_id, config.instance, mode, target, live, summary["documents"],
             summary["chunks"], counts["docs_new"], counts["docs_changed"], counts["docs_deleted"],
             counts["docs_unchanged"], counts["chunks_to_embed"], counts["chunks_to_delete"],
             counts["chunks_unchanged"], len(skipped))
    return summary


# --- 2. embed -----------------------------------------------------------------------------------------------

def _embed_to(embedder: Any, chunks: Sequence[Chunk], write_batch: int,
              sink: Callable[[list[IndexedChunk]], None], label: str) -> float:
    """Embed ``chunks`` ``write_batch`` at a time, hand each batch to ``sink``, log progress.

    Returns:
        Seconds spent.
    """
    from pipelines.rag.stores.base import IndexedChunk

    # Similar lengths together: less padding per model batch, as model.encode does over a whole list.
    ordered = sorted(chunks, key=lambda c: (len(c.text), c.chunk_id))
    started = time.perf_counter()
    for offset in range(0, len(ordered), write_batch):
        batch = ordered[offset:offset + write_batch]
        vectors = embedder.encode([c.text for c in batch])
        sink([IndexedChunk(c.chunk_id, c.doc_id, c.heading, c.text, v) for c, v in zip(batch, vectors, strict=True)])
        crash_point("rag:embed:after_batch")
        done, elapsed = offset + len(batch), time.perf_counter() - started
        log.info("Embedded %d/%d chunks (%.0f%%) into %s, %.1f chunks/s", done, len(ordered),
                 100 * done / len(ordered), label, done / elapsed if elapsed else 0.0)
    return time.perf_counter() - started


def _plan_model(config: RagIndexConfig, full: dict[str, Any]) -> Callable[[], Any]:
    """Loads the plan's model when called, and refuses it if it changed since the plan was made."""
    def load():
        embedder = embeddings.load_embedder(Path(full["model_path"]), batch_size=config.embedding.batch_size,
                                            device=config.embedding.device)
        if embedder.model_id != full["model_id"]:
            raise IndexStateError(f"the model at {full['model_path']} changed since plan {full['plan_id']} "
                                  f"({full['model_id']} → {embedder.model_id}): run the DAG again")
        return embedder

    return load


def _embed_into_candidate(config: RagIndexConfig, full: dict[str, Any], todo: list[Chunk],
                          settings: LooplineSettings) -> tuple[int, float, int]:
    """A full build: the chunks go straight into the new version, which no reader sees.

    Returns:
        (chunks embedded now, seconds, stale chunks deleted from the candidate).
    """
    target, load_model = full["target_version"], _plan_model(config, full)
    seconds = 0.0
    with _open_store(config, settings) as store:
        embedder = None
        if target not in store.list_versions():
            embedder = load_model()
            store.create_version(target, embedder.dimension)
            _catalog(config, settings).put(target, dimension=embedder.dimension)
        written = store.chunk_ids(target)
        remaining = [c for c in todo if c.chunk_id not in written]
        if remaining:
            embedder = embedder or load_model()
            seconds = _embed_to(embedder, remaining, config.embedding.write_batch_chunks,
                                lambda rows: store.write(target, rows), f"{target} (candidate)")
        stale = [i for i in full["chunk_ids_to_delete"] if i in written]
        store.delete(target, stale)
        store.finalize(target)
    return len(remaining), seconds, len(stale)


def _embed_into_staging(config: RagIndexConfig, full: dict[str, Any], todo: list[Chunk],
                        folder: Path) -> tuple[int, float]:
    """An incremental run: the chunks are staged beside the live version until publish applies them.

    Returns:
        (chunks embedded now, seconds).
    """
    staged = plans.staged_ids(folder)
    remaining = [c for c in todo if c.chunk_id not in staged]
    seconds = 0.0
    if remaining:
        seconds = _embed_to(_plan_model(config, full)(), remaining, config.embedding.write_batch_chunks,
                            lambda rows: plans.stage_batch(folder, rows), f"staging for {full['target_version']}")
    return len(remaining), seconds


def embed_chunks(config: RagIndexConfig, plan: IndexPlan, settings: LooplineSettings | None = None) -> EmbeddedChunks:
    """Embed the plan's chunks in batches: into the new version (full) or the staging folder (incremental).

    Chunks already written by an earlier attempt of the same plan are not embedded again, and the model
    is loaded only when something is left to embed.

    Returns:
        ``embedded`` (chunks embedded now), ``resumed`` (written by an earlier attempt),
        ``deleted_from_candidate``, ``seconds``, ``chunks_per_s``, ``written_to``.
    """
    settings = settings or get_settings()
    full = _full_plan(plan, settings)
    mode = full["mode"]
    todo = [Chunk(*fields) for fields in full["chunks_to_embed"]]
    result: EmbeddedChunks = {"mode": mode, "embedded": 0, "resumed": 0, "deleted_from_candidate": 0,
                              "seconds": 0.0, "chunks_per_s": 0.0, "written_to": None}
    if mode == "unchanged":
        log.info("Index %s is up to date with the corpus: nothing to embed", config.instance)
        return result
    with index_lock(config, settings):
        _full_plan(plan, settings)  # not superseded while we waited
        if mode == "full":
            embedded, seconds, stale = _embed_into_candidate(config, full, todo, settings)
            result["written_to"], result["deleted_from_candidate"] = full["target_version"], stale
        else:
            folder = plans.paths(config, settings).staged(full["plan_id"])
            embedded, seconds = _embed_into_staging(config, full, todo, folder)
            result["written_to"] = str(folder)
    result["embedded"], result["resumed"], result["seconds"] = embedded, len(todo) - embedded, seconds
    if seconds:
        result["chunks_per_s"] = embedded / seconds
    log.info("Embedded %d chunks for index %s (%s; %d already written by an earlier attempt)",
             result["embedded"], config.instance, mode, result["resumed"])
    return result


# --- 3. evaluate --------------------------------------------------------------------------------------------

def _question_set(config: RagIndexConfig, settings: LooplineSettings) -> QuestionSet:
    return load_questions(settings.resolve(config.evaluation.questions))


def _query_encoder(model_path: str, config: RagIndexConfig) -> Callable[[list[str]], Any]:
    path = embeddings.resolve_model_path(model_path)
    embedder = embeddings.load_embedder(path, batch_size=config.embedding.batch_size,
                                        device=config.embedding.device)
    return embedder.encode


def _evaluate(store: VectorStore, version: str, model_path: str, config: RagIndexConfig,
              qs: QuestionSet) -> ModeMetrics:
    return evaluate_version(store, version, _query_encoder(model_path, config), qs, config.evaluation.k,
                            config.evaluation.modes)


def _recorded(record: dict[str, Any] | None, qs: QuestionSet, config: RagIndexConfig,
              corpus_digest: str | None = None) -> ModeMetrics | None:
    """The version's catalogued metrics on this question set, k and modes (and corpus, if given), or None."""
    return stored_evaluation(record, qs.digest, config.evaluation.k, modes=config.evaluation.modes,
                             corpus_digest=corpus_digest)


def _score_live(store: VectorStore, catalog: VersionCatalog, live: str, config: RagIndexConfig,
                qs: QuestionSet) -> tuple[ModeMetrics | None, str]:
    """The live version's metrics now, or its recorded ones when its model is gone; and a note saying which."""
    record = catalog.get(live)
    try:
        if record is None:
            raise EmbeddingModelError(f"live version {live} is not in the catalog")
        return _evaluate(store, live, record["model_path"], config, qs), ""
    except EmbeddingModelError as exc:
        metrics = _recorded(record, qs, config)
        source = "from its last evaluation" if metrics else "unknown"
        return metrics, f" (live metrics {source}: {exc})"


def _lineage_params(config: RagIndexConfig, plan: IndexPlan, qs: QuestionSet) -> dict[str, Any]:
    return {
        "backend": config.index.backend, "mode": plan["mode"], "index_version": plan["target_version"],
        "live_version_before": plan["live_version"] or "none", "corpus_root": plan["corpus_root"],
        "corpus_digest": plan["corpus_digest"], "documents": plan["documents"], "chunks": plan["chunks"],
        "model_id": plan["model_id"], "model_path": plan["model_path"],
        "chunker_size_chars": plan["chunker"]["size_chars"],
        "chunker_overlap_chars": plan["chunker"]["overlap_chars"],
        "chunker_digest": plan["chunker"]["digest"], "fingerprint": plan["fingerprint"],
        "chunker_strategy": plan["chunker"].get("strategy", "structure"),
        "embedding_batch_size": config.embedding.batch_size, "question_set": config.evaluation.questions,
        "question_set_digest": qs.digest, "questions": len(qs.questions), "eval_k": config.evaluation.k,
        "eval_modes": ",".join(config.evaluation.modes),
    }


def _log_run(config: RagIndexConfig, plan: IndexPlan, run_id: str, run_name: str, qs: QuestionSet,
             metrics: Mapping[str, float | None], tags: dict[str, str], settings: LooplineSettings) -> str:
    """Log into the MLflow run of this Airflow run and plan (experiment ``<instance>_rag_index``)."""
    return tracking.log_to_run_by_key(
        config.experiment_name, f"{run_id}:{plan['plan_id']}", run_name, params=_lineage_params(config, plan, qs),
        metrics=dict(metrics), tags=tags, start_tags={"loopline.instance": config.instance}, settings=settings)


def _log_gate(config: RagIndexConfig, plan: IndexPlan, run_id: str, run_name: str, qs: QuestionSet,
              candidate, live_metrics, k: int, unanswerable: int, decision: str, summary: str,
              settings: LooplineSettings) -> str:
    """Log a gate's evidence (candidate and live metrics) and its decision, full build or incremental alike."""
    return _log_run(config, plan, run_id, run_name, qs,
                    {**flat_metrics(candidate, k, "candidate_"), **flat_metrics(live_metrics, k, "live_"),
                     "unanswerable_questions": unanswerable},
                    {"loopline.decision": decision, "loopline.gate": summary}, settings)


def _blocked(config: RagIndexConfig, plan: IndexPlan, summary: str) -> GateBlocked:
    chunker = f"{plan['chunker']['size_chars']}/{plan['chunker']['overlap_chars']} chars"
    return GateBlocked(
        f"candidate {plan['target_version']} of index {config.instance} (model {plan['model_id']}, chunker "
        f"{chunker}) is blocked by the evaluation gate: {summary}. The alias stays on {plan['live_version']}; the "
        "candidate is kept as 'rejected' for inspection. Fix the model or chunker in the YAML, or change the "
        "bounds under evaluation:, then run the DAG again")


def evaluate_index(config: RagIndexConfig, plan: IndexPlan, run_id: str = "manual",
                   settings: LooplineSettings | None = None) -> IndexVerdict:
    """Gate a full build: hit@k and MRR@k of the candidate against the live version, per search mode.

    An incremental run is gated the same way: its update is applied to a preview copy of the live version
    (LanceDB: a shallow clone, dropped afterwards), which is scored against the live version; the verdict is
    saved beside the staged chunks and :func:`publish_index` applies only an update that passed. A store
    that cannot preview (Weaviate) publishes the update ungated and says so in ``gate``. An unchanged run
    returns at once.

    Returns:
        ``decision`` (switch, in_place, unchanged), ``candidate`` and ``live`` metrics (``{mode: {hit_rate,
        mrr}}``), ``gate`` (the verdict in words), ``k``.

    Raises:
        GateBlocked: the candidate (or the update) regresses beyond the bounds; the live version stays as it
            is (a candidate is kept as ``rejected``, an update stays staged).
        LiveVersionMoved: an incremental plan's live version is no longer live (a rollback moved the alias).
    """
    settings = settings or get_settings()
    mode, k = plan["mode"], config.evaluation.k
    if mode == "unchanged":
        return {"mode": mode, "decision": "unchanged", "candidate": None, "live": None, "k": k,
                "gate": "nothing changed"}
    qs = _question_set(config, settings)
    with index_lock(config, settings):
        if mode == "incremental":
            return _evaluate_update(config, plan, run_id, qs, settings)
        return _evaluate_candidate(config, plan, run_id, qs, settings)


def _evaluate_candidate(config: RagIndexConfig, plan: IndexPlan, run_id: str, qs: QuestionSet,
                        settings: LooplineSettings) -> IndexVerdict:
    """A full build: the new version against the live one."""
    mode, k = plan["mode"], config.evaluation.k
    catalog = _catalog(config, settings)
    target, live = plan["target_version"], plan["live_version"]
    with _open_store(config, settings) as store:
        if store.live_version() == target:  # a re-run after the switch: the verdict was already given
            record = catalog.get(target) or {}
            return {"mode": mode, "decision": "switch", "candidate": _recorded(record, qs, config), "live": None,
                    "gate": record.get("gate", "passed"), "k": k}
        candidate = _evaluate(store, target, plan["model_path"], config, qs)
        live_metrics, live_note = _score_live(store, catalog, live, config, qs) if live else (None, "")
        unanswerable = sorted({q.source for q in qs.questions} - set(store.chunk_ids(target).values()))
    verdict = gate(candidate, live_metrics, config.evaluation)
    if unanswerable:
        log.warning("%d expected source(s) of %s are not in the corpus, so no version can find them: %s",
                    len(unanswerable), config.evaluation.questions, unanswerable[:LISTED])
    summary = verdict.reason + live_note
    catalog.put(target, status="approved" if verdict.promote else "rejected", gate=summary,
                evaluation=evaluation_record(candidate, plan["corpus_digest"], qs, k))
    decision: Literal["switch", "blocked"] = "switch" if verdict.promote else "blocked"
    _log_gate(config, plan, run_id, f"{target} {mode}", qs, candidate, live_metrics, k, len(unanswerable),
              decision, summary, settings)
    if not verdict.promote:
        _record_audit_event(config, plan, False, summary, candidate, live_metrics, run_id, "", settings)
        raise _blocked(config, plan, summary)
    log.info("Candidate %s passes the gate: %s", target, summary)
    return {"mode": mode, "decision": decision, "candidate": candidate, "live": live_metrics, "gate": summary,
            "k": k, "unanswerable_sources": unanswerable[:LISTED]}


def _check_live(plan: dict[str, Any], live: str | None) -> None:
    """An incremental plan updates the version that was live when it was made, and only that one."""
    if live != plan["target_version"]:
        raise LiveVersionMoved(
            f"plan {plan['plan_id']} updates {plan['target_version']} of index {plan['instance']} in place, but the "
            f"live version is now {live} (a rollback or another run moved the alias): nothing was changed; run the "
            "DAG again to plan against the live version")


def _staged_for(plan: dict[str, Any], folder: Path, in_live: Mapping[str, str]) -> list[IndexedChunk]:
    """The plan's staged chunks; every chunk of the plan must be staged or already in the live version."""
    staged = plans.read_staged(folder) if folder.exists() else []
    missing = {c[0] for c in plan["chunks_to_embed"]} - {r.chunk_id for r in staged} - set(in_live)
    if missing:
        raise IndexStateError(f"staging {folder} lacks {len(missing)} of the plan's chunks: clear embed_chunks "
                              "of this run to embed them")
    return staged


def _evaluate_update(config: RagIndexConfig, plan: IndexPlan, run_id: str, qs: QuestionSet,
                     settings: LooplineSettings) -> IndexVerdict:
    """An incremental run: the live version with the staged update applied (a preview) against the live one."""
    full, k = _full_plan(plan, settings), config.evaluation.k
    target = plan["target_version"]
    folder = plans.paths(config, settings).staged(plan["plan_id"])
    with _open_store(config, settings) as store:
        _check_live(full, store.live_version())
        catalog = _catalog(config, settings)
        staged = _staged_for(full, folder, store.chunk_ids(target))
        with store.preview(target, staged, full["chunk_ids_to_delete"]) as preview:
            if preview is None:
                summary = (f"not gated before publishing: the {config.index.backend} store cannot preview an "
                           "update; record_index evaluates the live version after it")
                plans.save_gate(folder, {"plan_id": plan["plan_id"], "promote": True, "gate": summary})
                return {"mode": "incremental", "decision": "in_place", "candidate": None, "live": None,
                        "gate": summary, "k": k}
            candidate = _evaluate(store, preview, plan["model_path"], config, qs)
            unanswerable = sorted({q.source for q in qs.questions} - set(store.chunk_ids(preview).values()))
        live_metrics, live_note = _score_live(store, catalog, target, config, qs)
    verdict = gate(candidate, live_metrics, config.evaluation)
    summary = verdict.reason + live_note
    plans.save_gate(folder, {"plan_id": plan["plan_id"], "promote": verdict.promote, "gate": summary})
    decision: Literal["in_place", "blocked"] = "in_place" if verdict.promote else "blocked"
    _log_gate(config, plan, run_id, f"{target} {plan['mode']}", qs, candidate, live_metrics, k, len(unanswerable),
              decision, summary, settings)
    if not verdict.promote:
        counts = plan["counts"]
        raise GateBlocked(
            f"the update of {target} of index {config.instance} (plan {plan['plan_id']}: {counts['docs_new']} new, "
            f"{counts['docs_changed']} changed, {counts['docs_deleted']} deleted documents) is blocked by the "
            f"evaluation gate: {summary}. {target} stays live as it was; the update stays staged in {folder}. Fix "
            "the documents, or change the bounds under evaluation:, then run the DAG again")
    log.info("The update of %s passes the gate: %s", target, summary)
    return {"mode": plan["mode"], "decision": decision, "candidate": candidate, "live": live_metrics,
            "gate": summary, "k": k, "unanswerable_sources": unanswerable[:LISTED]}


# --- 4. publish ---------------------------------------------------------------------------------------------

def _switch_to_candidate(config: RagIndexConfig, plan: IndexPlan, store: VectorStore, catalog: VersionCatalog,
                         run_id: str) -> PublishedIndex:
    """A full build: move the alias to the candidate, which must have passed the gate, then record it.

    The alias moves first (readers see the new version at once); a crash before the catalog records it is
    repaired by the retry, which finds the alias on the candidate and records it as the one live version.
    """
    target, live = plan["target_version"], store.live_version()
    record = catalog.get(target) or {}
    if live not in (target, plan["live_version"]):
        raise LiveVersionMoved(
            f"plan {plan['plan_id']} switches index {config.instance} from {plan['live_version']} to {target}, "
            f"but the live version is now {live} (a rollback or another run moved the alias since the plan; the "
            f"gate compared {target} with {plan['live_version']}): nothing was switched. Run the DAG again to "
            f"evaluate {target} against {live}")
    if live != target and record.get("status") != "approved":
        raise GateBlocked(f"candidate {target} of index {config.instance} has not passed the evaluation gate "
                          f"(status {record.get('status')}: {record.get('gate', 'not evaluated')}); it cannot go "
                          "live. Run evaluate_index for this plan first")
    if live != target:
        store.switch_live(target)
        crash_point("rag:publish:after_switch")
    if catalog.reload().live_versions() != [target]:
        catalog.mark_live(target, plan["live_version"], reason=f"{run_id}: full rebuild passed the gate")
    catalog.put(target, corpus_digest=plan["corpus_digest"])
    return {"changed": live != target, "action": "switched", "live_version": target, "previous_version": live,
            "written": plan["counts"]["chunks_to_embed"], "deleted": 0, "retired_versions": []}


def _apply_staged(config: RagIndexConfig, full: dict[str, Any], store: VectorStore, catalog: VersionCatalog,
                  folder: Path) -> PublishedIndex:
    """An incremental run: apply the staged chunks and the deletions to the live version, as one commit.

    LanceDB commits the upserts and deletions together (a reader sees the old or the new state, never both
    texts of a changed chunk); other stores write first and delete after. A retry after a crash finds the
    update applied (nothing to do but clean up) or not at all (applies it).
    """
    target = full["target_version"]
    catalog.follow_alias(store.live_version())
    _check_live(full, store.live_version())
    in_live = store.chunk_ids(target)
    planned, deleted = {c[0] for c in full["chunks_to_embed"]}, full["chunk_ids_to_delete"]
    if not planned <= set(in_live) or set(deleted) & set(in_live):  # else applied before a crash
        verdict = plans.read_gate(folder)
        if not verdict or not verdict.get("promote"):
            reason = verdict["gate"] if verdict else "not evaluated"
            raise GateBlocked(f"the update of {target} of index {config.instance} (plan {full['plan_id']}) has not "
                              f"passed the evaluation gate ({reason}); it cannot go live. Run evaluate_index for "
                              "this plan first")
        staged = _staged_for(full, folder, in_live)
        crash_point("rag:publish:before_apply")
        store.apply(target, staged, deleted)
        crash_point("rag:publish:after_apply")
    store.finalize(target)
    catalog.put(target, corpus_digest=full["corpus_digest"])
    shutil.rmtree(folder, ignore_errors=True)
    log.info("Updated %s in place: %d chunks written, %d deleted", target, len(planned), len(deleted))
    return {"changed": True, "action": "updated_in_place", "live_version": target, "previous_version": target,
            "written": len(planned), "deleted": len(deleted), "retired_versions": []}


def publish_index(config: RagIndexConfig, plan: IndexPlan, run_id: str = "manual",
                  settings: LooplineSettings | None = None) -> PublishedIndex:
    """Make the run's work live: switch the alias (full) or update the live version in place (incremental).

    Returns:
        ``changed`` (whether readers now see something new), ``action`` (switched, updated_in_place,
        unchanged), ``live_version``, ``previous_version``, ``written``, ``deleted``, ``retired_versions``.

    Raises:
        GateBlocked: a full build's candidate has not passed the gate.
        LiveVersionMoved: the live version moved since the plan (a rollback); nothing was changed.
        IndexStateError: staged chunks are missing.
        PlanSuperseded: a later run replaced the plan.
    """
    settings = settings or get_settings()
    result: PublishedIndex = {"changed": False, "action": "unchanged", "live_version": plan["live_version"],
                              "previous_version": plan["live_version"], "written": 0, "deleted": 0,
                              "retired_versions": []}
    if plan["mode"] == "unchanged":
        return result
    with index_lock(config, settings), _open_store(config, settings) as store:
        full = _full_plan(plan, settings)  # a superseded plan publishes nothing
        catalog = _catalog(config, settings)
        if plan["mode"] == "full":
            result = _switch_to_candidate(config, plan, store, catalog, run_id)
        else:
            result = _apply_staged(config, full, store, catalog, plans.paths(config, settings).staged(plan["plan_id"]))
        result["retired_versions"] = retire_versions(store, catalog, config.index.previous_versions_kept)
    if result["changed"]:
        lineage.declare(inputs=[uris.corpus(config.instance, plan["corpus_digest"]),
                                uris.embedding_model(plan["model_id"])],
                        outputs=[uris.index_version(config.instance, result["live_version"])])
    return result


# --- 5. record ----------------------------------------------------------------------------------------------

def _live_metrics(config: RagIndexConfig, plan: IndexPlan, qs: QuestionSet,
                  settings: LooplineSettings) -> tuple[str | None, ModeMetrics | None]:
    """The live version and its metrics on the plan's corpus: from the catalog, else evaluated (and recorded)."""
    with index_lock(config, settings), _open_store(config, settings) as store:
        catalog = _catalog(config, settings)
        live = store.live_version()
        catalog.follow_alias(live)
        record = catalog.get(live) or {}
        metrics = _recorded(record, qs, config, plan["corpus_digest"]) if live else None
        if live and metrics is None:
            metrics = _evaluate(store, live, record.get("model_path") or plan["model_path"], config, qs)
            catalog.put(live, evaluation=evaluation_record(metrics, plan["corpus_digest"], qs, config.evaluation.k))
    return live, metrics


def _run_metrics(summary: IndexRunSummary, embedded: EmbeddedChunks, verdict: IndexVerdict) -> dict[str, float]:
    """The MLflow metrics of a run: the live and candidate scores, what was embedded, skipped and deleted."""
    k = summary["k"]
    return {
        **flat_metrics(summary["metrics"], k), **flat_metrics(verdict.get("candidate"), k, "candidate_"),
        "documents": summary["documents"], "chunks": summary["chunks"], "chunks_embedded": summary["embedded"],
        "chunks_skipped_unchanged": summary["skipped_unchanged"], "chunks_deleted": summary["deleted"],
        **{f"docs_{name}": n for name, n in summary["docs"].items()},
        "files_skipped": summary["skipped_files_total"], "embed_seconds": embedded.get("seconds", 0.0),
        "embed_chunks_per_s": embedded.get("chunks_per_s", 0.0),
    }


def record_index(config: RagIndexConfig, plan: IndexPlan, embedded: EmbeddedChunks, verdict: IndexVerdict,
                 run_id: str = "manual", settings: LooplineSettings | None = None) -> IndexRunSummary:
    """Evaluate the live version and log metrics and lineage to MLflow; return the run's summary.

    The live version's metrics are reused from the catalog when they were computed on the same corpus,
    question set and k (an unchanged re-index loads no model).

    Returns:
        ``mode``, ``action``, ``live_version``, ``previous_version``, ``documents``, ``chunks``,
        ``embedded``, ``skipped_unchanged`` (chunks already indexed), ``deleted``, ``docs`` (new/changed/
        deleted/unchanged counts), ``skipped_files``, ``metrics`` (``{mode: {hit_rate, mrr}}`` of the live
        version), ``k``, ``gate``, ``index_changed``, ``corpus_digest``, ``model_id``, ``chunker``,
        ``mlflow_run_id``.
    """
    settings = settings or get_settings()
    qs = _question_set(config, settings)
    live, metrics = _live_metrics(config, plan, qs, settings)
    counts, mode = plan["counts"], plan["mode"]
    changed = live != plan["live_version"] or (mode == "incremental" and live == plan["target_version"])
    action = {"full": "switched" if live == plan["target_version"] else "not switched",
              "incremental": "updated_in_place", "unchanged": "unchanged"}[mode]
    summary: IndexRunSummary = {
        "instance": config.instance, "backend": config.index.backend, "dag_run_id": run_id,
        "mode": mode, "action": action, "index_changed": changed,
        "live_version": live, "previous_version": plan["live_version"], "target_version": plan["target_version"],
        "documents": plan["documents"], "chunks": plan["chunks"],
        "embedded": embedded.get("embedded", 0) + embedded.get("resumed", 0),
        "skipped_unchanged": counts["chunks_unchanged"], "deleted": counts["chunks_to_delete"],
        "docs": {key.removeprefix("docs_"): n for key, n in counts.items() if key.startswith("docs_")},
        "skipped_files": plan["skipped_files"], "skipped_files_total": plan.get("skipped_files_total", 0),
        "metrics": metrics, "k": config.evaluation.k, "gate": verdict.get("gate"),
        "corpus_digest": plan["corpus_digest"], "model_id": plan["model_id"], "chunker": plan["chunker"],
        "embed_seconds": round(embedded.get("seconds", 0.0), 3), "mlflow_run_id": "",
    }
    tags = {"loopline.decision": verdict.get("decision", mode), "loopline.action": action,
            "loopline.live_version": str(live)}
    summary["mlflow_run_id"] = _log_run(config, plan, run_id, f"{live} {mode}", qs,
                                        _run_metrics(summary, embedded, verdict), tags, settings)
    if action == "switched":  # a blue/green build went live (a blocked one is recorded by evaluate_index)
        _record_audit_event(config, plan, True, verdict.get("gate") or action, verdict.get("candidate"),
                            verdict.get("live"), run_id, summary["mlflow_run_id"], settings)
    shown = ", ".join(f"{m} hit@{config.evaluation.k} {v['hit_rate']:.3f} MRR {v['mrr']:.3f}"
                      for m, v in (metrics or {}).items())
    log.info("Index %s: %s, live %s; embedded %d, skipped %d unchanged, deleted %d; %s", config.instance,
             action, live, summary["embedded"], summary["skipped_unchanged"], summary["deleted"], shown)
    return summary


def _record_audit_event(config: RagIndexConfig, plan: IndexPlan, switched: bool, reason: str,
                        candidate: ModeMetrics | None, live: ModeMetrics | None, run_id: str, mlflow_run: str,
                        settings: LooplineSettings) -> str:
    """The audit record of a blue/green build (pipelines/audit): the version made live, or refused, and on what."""
    from datetime import UTC, datetime

    from pipelines.audit.records import AuditEvent, config_digest, config_snapshot, git_commit, record

    target = plan["target_version"]
    return record(AuditEvent(
        kind="promotion" if switched else "rejection", subject=f"index {config.instance}", version=target,
        decision="promoted" if switched else "rejected", reason=reason,
        at=datetime.now(UTC), key=f"index:{config.instance}:{target}", previous=plan["live_version"],
        evidence={"k": config.evaluation.k, "candidate": candidate, "live": live},
        provenance={"git_commit": git_commit(), "config_digest": config_digest(config),
                    "config": config_snapshot(config), "corpus_digest": plan["corpus_digest"],
                    "embedding_model": plan["model_id"], "chunker": plan["chunker"],
                    "documents": plan["documents"], "chunks": plan["chunks"], "plan_id": plan["plan_id"]},
        source={"dag_id": config.dag_id, "run_id": run_id, "mlflow_run": mlflow_run},
    ), settings)


# --- without Airflow ----------------------------------------------------------------------------------------

def run_once(config: RagIndexConfig, run_id: str = "manual",
             settings: LooplineSettings | None = None) -> dict[str, Any]:
    """All five steps in order, as the DAG runs them (for benchmarks, tests and the command line).

    Returns:
        :func:`record_index`'s summary plus ``timings`` (seconds per step) and ``published``.
    """
    timings = {}

    def timed(name, fn, *args):
        started = time.perf_counter()
        out = fn(*args)
        timings[name] = time.perf_counter() - started
        return out

    plan = timed("plan_index", plan_index, config, run_id, settings)
    embedded = timed("embed_chunks", embed_chunks, config, plan, settings)
    verdict = timed("evaluate_index", evaluate_index, config, plan, run_id, settings)
    published = timed("publish_index", publish_index, config, plan, run_id, settings)
    summary = timed("record_index", record_index, config, plan, embedded, verdict, run_id, settings)
    return {**summary, "published": published, "timings": timings}


def index_event_extra(plan: IndexPlan, published: PublishedIndex) -> dict[str, Any]:
    """The extra of the ``<instance>_index`` Asset event: the version readers see now, and how it was made."""
    return {"version": published["live_version"], "mode": plan["mode"], "corpus_digest": plan["corpus_digest"],
            "model_id": plan["model_id"]}


def search(config: RagIndexConfig, query: str, k: int | None = None, mode: str = "hybrid",
           settings: LooplineSettings | None = None) -> list[SearchHit]:
    """The ``k`` best chunks of the live version for ``query`` (for readers: LoRA data, an app, a notebook).

    The alias is resolved once and the query embedded with the model that built that version, so a
    switch in between cannot mix one version's model with another's vectors.
    """
    settings = settings or get_settings()
    catalog = _catalog(config, settings)
    with _open_store(config, settings) as store:
        live = store.live_version()
        record = catalog.get(live)
        if live is None or record is None:
            where = " in the catalog" if live else ""
            raise IndexStateError(f"index {config.instance} has no live version{where}: run the "
                                  f"{config.dag_id} DAG first")
        vector = _query_encoder(record["model_path"], config)([query])[0]
        return store.retrieve(query, vector, k or config.evaluation.k, mode=mode, version=live)
