"""The steps of the ``rag_index`` template, one function per task, and search for readers.

1. :func:`plan_index` loads, normalises, chunks and hashes the corpus and compares it with the index:
   *incremental* when the live version was built with the configured model and chunker (only new and
   changed chunks are embedded, only removed ones deleted), *unchanged* when nothing differs, *full* when
   there is no live version or the model or chunker changed: then a new version is built beside the live
   one. The plan (the chunks to embed, the ids to delete) is saved under the data home.
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

All state is under ``<data home>/rag/<instance>/``. Every step can be re-run: ids are content hashes, the
plan's id is a hash of what it does, and writes are upserts keyed by chunk id.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.rag import embeddings
from pipelines.rag.corpus import load_corpus
from pipelines.rag.embeddings import EmbeddingModelError
from pipelines.rag.evaluation import (
    GateBlocked,
    evaluate_version,
    flat_metrics,
    gate,
    load_questions,
)
from pipelines.rag.hashing import Chunk, chunk_corpus, chunker_digest, diff_against_index
from pipelines.rag.versions import VersionCatalog, catalog_path, retire_versions
from pipelines.core.settings import LooplineSettings, get_settings
from pipelines.core.errors import NotRetryable

if TYPE_CHECKING:
    from pipelines.rag.config import RagIndexConfig
    from pipelines.rag.evaluation import QuestionSet
    from pipelines.rag.stores.base import IndexedChunk, SearchHit, VectorStore

log = logging.getLogger(__name__)

LISTED = 20  # names of documents listed in a step's result (the counts are always complete)


class IndexStateError(RuntimeError):
    """The index is not in the state a step expects; the message says what to re-run."""


class PlanSuperseded(NotRetryable, IndexStateError):
    """A later run replaced this run's plan: re-running an old run must not undo a newer one."""


@dataclass(frozen=True)
class RagPaths:
    """Where one instance keeps its state, all under the data home."""

    root: Path
    plans: Path
    staging: Path
    catalog: Path


def paths(config: RagIndexConfig, settings: LooplineSettings | None = None) -> RagPaths:
    settings = settings or get_settings()
    root = settings.path("rag", config.instance)
    return RagPaths(root, root / "plans", root / "staging", catalog_path(config, settings))


def _open_store(config: RagIndexConfig, settings: LooplineSettings) -> VectorStore:
    from pipelines.rag.stores import open_store

    return open_store(config.index.backend, config.instance, settings)


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; readers may run as another user
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle)
    os.replace(tmp, path)


def fingerprint(model_id: str, chunker: str) -> str:
    """What makes a version: the model and the chunker. Another fingerprint means another version."""
    return hashlib.sha256(f"{model_id}|{chunker}".encode()).hexdigest()[:16]


# --- 1. plan ------------------------------------------------------------------------------------------------

def plan_index(config: RagIndexConfig, run_id: str = "manual",
               settings: LooplineSettings | None = None) -> dict:
    """Load, chunk and hash the corpus, compare it with the index, and save the plan.

    Returns:
        The plan without its chunk lists: ``plan_id``, ``plan_path``, ``mode`` (full, incremental,
        unchanged), ``target_version``, ``live_version``, ``corpus_digest``, ``model_id``, ``chunker``,
        ``documents``, ``chunks``, ``counts`` (docs new/changed/deleted/unchanged, chunks to embed/delete/
        unchanged), ``skipped_files``, ``docs`` (names of new, changed, deleted documents, first 20).

    Raises:
        CorpusError: the corpus folder is missing or holds no readable document (nothing is written).
        EmbeddingModelError: the model folder is missing or not a sentence-transformers model.
    """
    settings = settings or get_settings()
    p = paths(config, settings)
    corpus_root = settings.resolve(config.corpus.path)
    corpus = load_corpus(corpus_root, config.corpus.include, config.corpus.exclude,
                         max_bytes=int(config.corpus.max_file_mb * 1_000_000),
                         bad_files=config.corpus.bad_files)
    model_path = embeddings.resolve_model_path(config.embedding.model, settings)
    model_id = embeddings.model_id(model_path)
    chunker = chunker_digest(config.chunker.size_chars, config.chunker.overlap_chars)
    version_fingerprint = fingerprint(model_id, chunker)
    chunks = chunk_corpus(corpus, config.chunker.size_chars, config.chunker.overlap_chars, model_id)

    catalog = VersionCatalog(p.catalog)
    with _open_store(config, settings) as store:
        live = store.live_version()
        live_record = catalog.get(live)
        existing = store.list_versions()
        if live and live_record and live_record.get("fingerprint") == version_fingerprint:
            target = live
            bad_input = {s.doc_id for s in corpus.skipped}
            diff = diff_against_index(chunks, store.chunk_ids(live), keep_docs=bad_input)
            mode = "unchanged" if diff.is_empty else "incremental"
        else:
            mode = "full"
            target = catalog.candidate_for(version_fingerprint)
            if target is None:
                numbers = [store.version_number(v) or 0 for v in existing]
                target = store.version_name(catalog.allocate_number(numbers))
            # A new version holds only what the corpus has now; a resumed one keeps what it already holds.
            diff = diff_against_index(chunks, store.chunk_ids(target) if target in existing else {})
            if live and not live_record:
                log.warning("Live version %s of index %s is not in the catalog %s: rebuilding as %s",
                            live, config.instance, p.catalog, target)
            catalog.put(target, status="building", fingerprint=version_fingerprint, model_id=model_id,
                        model_path=str(model_path), built_by=run_id,
                        chunker={"size_chars": config.chunker.size_chars,
                                 "overlap_chars": config.chunker.overlap_chars, "digest": chunker})

    plan_key = json.dumps([mode, target, live, version_fingerprint, corpus.digest,
                           [c.chunk_id for c in diff.chunks_to_embed], diff.chunk_ids_to_delete])
    plan_id = hashlib.sha256(plan_key.encode()).hexdigest()[:16]
    summary = {
        "plan_id": plan_id,
        "plan_path": str(p.plans / f"{plan_id}.json"),
        "instance": config.instance,
        "backend": config.index.backend,
        "mode": mode,
        "target_version": target,
        "live_version": live,
        "fingerprint": version_fingerprint,
        "model_id": model_id,
        "model_path": str(model_path),
        "chunker": {"size_chars": config.chunker.size_chars, "overlap_chars": config.chunker.overlap_chars,
                    "digest": chunker},
        "corpus_root": str(corpus_root),
        "corpus_digest": corpus.digest,
        "documents": len(corpus.documents),
        "chunks": len(chunks),
        "counts": diff.counts(),
        "skipped_files": [{"file": s.doc_id, "reason": s.reason} for s in corpus.skipped[:LISTED]],
        "skipped_files_total": len(corpus.skipped),
        "docs": {"new": diff.docs_new[:LISTED], "changed": diff.docs_changed[:LISTED],
                 "deleted": diff.docs_deleted[:LISTED], "kept_bad_input": diff.docs_kept[:LISTED]},
    }
    plan = {**summary,
            "chunks_to_embed": [[c.chunk_id, c.doc_id, c.heading, c.text] for c in diff.chunks_to_embed],
            "chunk_ids_to_delete": diff.chunk_ids_to_delete}
    _write_json(Path(summary["plan_path"]), plan)
    _remove_other_plans(p, plan_id)
    counts = diff.counts()
    log.info("Plan %s for index %s: %s into %s (live: %s); %d documents, %d chunks; docs new %d, "
             "changed %d, deleted %d, unchanged %d; chunks to embed %d, to delete %d, unchanged %d; "
             "%d files skipped", plan_id, config.instance, mode, target, live, len(corpus.documents),
             len(chunks), counts["docs_new"], counts["docs_changed"], counts["docs_deleted"],
             counts["docs_unchanged"], counts["chunks_to_embed"], counts["chunks_to_delete"],
             counts["chunks_unchanged"], len(corpus.skipped))
    return summary


def _remove_other_plans(p: RagPaths, keep: str) -> None:
    """A new plan supersedes every older one (and its staged embeddings)."""
    for old in p.plans.glob("*.json"):
        if old.stem != keep:
            old.unlink(missing_ok=True)
    if p.staging.exists():
        for old in p.staging.iterdir():
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)


def _load_plan(plan: dict) -> dict:
    path = Path(plan["plan_path"])
    if not path.exists():
        raise PlanSuperseded(f"plan {plan['plan_id']} of index {plan['instance']} is gone: a later run "
                             "planned again and superseded it. Nothing to do here; run the DAG again to "
                             "index the corpus as it is now")
    return json.loads(path.read_text())


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
        sink([IndexedChunk(c.chunk_id, c.doc_id, c.heading, c.text, v) for c, v in zip(batch, vectors)])
        done, elapsed = offset + len(batch), time.perf_counter() - started
        log.info("Embedded %d/%d chunks (%.0f%%) into %s, %.1f chunks/s", done, len(ordered),
                 100 * done / len(ordered), label, done / elapsed if elapsed else 0.0)
    return time.perf_counter() - started


def _staged_ids(folder: Path) -> set[str]:
    import pyarrow.parquet as pq

    parts = sorted(folder.glob("part-*.parquet"))
    return {i for part in parts for i in pq.read_table(part, columns=["id"]).column("id").to_pylist()}


def _stage(folder: Path, rows: list[IndexedChunk]) -> None:
    """One staged batch as a parquet file, written whole or not at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "id": [r.chunk_id for r in rows], "doc_id": [r.doc_id for r in rows],
        "heading": [r.heading for r in rows], "text": [r.text for r in rows],
        "vector": pa.array([list(map(float, r.vector)) for r in rows], type=pa.list_(pa.float32())),
    })
    name = f"part-{hashlib.sha256(''.join(r.chunk_id for r in rows).encode()).hexdigest()[:16]}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / name)


def _read_staged(folder: Path) -> list[IndexedChunk]:
    import pyarrow.parquet as pq

    from pipelines.rag.stores.base import IndexedChunk

    rows = []
    for part in sorted(folder.glob("part-*.parquet")):
        t = pq.read_table(part).to_pydict()
        rows += [IndexedChunk(*fields)
                 for fields in zip(t["id"], t["doc_id"], t["heading"], t["text"], t["vector"])]
    return rows


def embed_chunks(config: RagIndexConfig, plan: dict, settings: LooplineSettings | None = None) -> dict:
    """Embed the plan's chunks in batches: into the new version (full) or the staging folder (incremental).

    Chunks already written by an earlier attempt of the same plan are not embedded again, and the model
    is loaded only when something is left to embed.

    Returns:
        ``embedded`` (chunks embedded now), ``resumed`` (written by an earlier attempt),
        ``deleted_from_candidate``, ``seconds``, ``chunks_per_s``, ``written_to``.
    """
    settings = settings or get_settings()
    full = _load_plan(plan)
    mode, target = full["mode"], full["target_version"]
    todo = [Chunk(*fields) for fields in full["chunks_to_embed"]]
    result = {"mode": mode, "embedded": 0, "resumed": 0, "deleted_from_candidate": 0, "seconds": 0.0,
              "chunks_per_s": 0.0, "written_to": None}
    if mode == "unchanged":
        log.info("Index %s is up to date with the corpus: nothing to embed", config.instance)
        return result

    def load_model():
        embedder = embeddings.load_embedder(Path(full["model_path"]), batch_size=config.embedding.batch_size,
                                            device=config.embedding.device)
        if embedder.model_id != full["model_id"]:
            raise IndexStateError(f"the model at {full['model_path']} changed since plan {full['plan_id']} "
                                  f"({full['model_id']} → {embedder.model_id}): run the DAG again")
        return embedder

    write_batch = config.embedding.write_batch_chunks
    if mode == "full":
        with _open_store(config, settings) as store:
            embedder = None
            if target not in store.list_versions():
                embedder = load_model()
                store.create_version(target, embedder.dimension)
                VersionCatalog(paths(config, settings).catalog).put(target, dimension=embedder.dimension)
            written = store.chunk_ids(target)
            remaining = [c for c in todo if c.chunk_id not in written]
            if remaining:
                embedder = embedder or load_model()
                result["seconds"] = _embed_to(embedder, remaining, write_batch,
                                              lambda rows: store.write(target, rows), f"{target} (candidate)")
            stale = [i for i in full["chunk_ids_to_delete"] if i in written]
            store.delete(target, stale)
            store.finalize(target)
        result.update(written_to=target, deleted_from_candidate=len(stale))
    else:
        folder = paths(config, settings).staging / full["plan_id"]
        staged = _staged_ids(folder) if folder.exists() else set()
        remaining = [c for c in todo if c.chunk_id not in staged]
        if remaining:
            result["seconds"] = _embed_to(load_model(), remaining, write_batch,
                                          lambda rows: _stage(folder, rows), f"staging for {target}")
        result["written_to"] = str(folder)
    result.update(embedded=len(remaining), resumed=len(todo) - len(remaining))
    if result["seconds"]:
        result["chunks_per_s"] = result["embedded"] / result["seconds"]
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
              qs: QuestionSet) -> dict:
    return evaluate_version(store, version, _query_encoder(model_path, config), qs, config.evaluation.k,
                            config.evaluation.modes)


def _stored_evaluation(record: dict | None, qs: QuestionSet, config: RagIndexConfig,
                       corpus_digest: str | None = None) -> dict | None:
    """A version's recorded metrics when they were computed on the same question set, k and modes
    (and, if given, the same corpus)."""
    ev = (record or {}).get("evaluation")
    if not ev or ev.get("question_set") != qs.digest or ev.get("k") != config.evaluation.k:
        return None
    if not set(config.evaluation.modes) <= set(ev.get("metrics", {})):
        return None
    if corpus_digest is not None and ev.get("corpus_digest") != corpus_digest:
        return None
    return {mode: ev["metrics"][mode] for mode in config.evaluation.modes}


def _lineage_params(config: RagIndexConfig, plan: dict, qs: QuestionSet) -> dict[str, Any]:
    return {
        "backend": config.index.backend, "mode": plan["mode"], "index_version": plan["target_version"],
        "live_version_before": plan["live_version"] or "none", "corpus_root": plan["corpus_root"],
        "corpus_digest": plan["corpus_digest"], "documents": plan["documents"], "chunks": plan["chunks"],
        "model_id": plan["model_id"], "model_path": plan["model_path"],
        "chunker_size_chars": plan["chunker"]["size_chars"],
        "chunker_overlap_chars": plan["chunker"]["overlap_chars"],
        "chunker_digest": plan["chunker"]["digest"], "fingerprint": plan["fingerprint"],
        "embedding_batch_size": config.embedding.batch_size, "question_set": config.evaluation.questions,
        "question_set_digest": qs.digest, "questions": len(qs.questions), "eval_k": config.evaluation.k,
        "eval_modes": ",".join(config.evaluation.modes),
    }


def log_to_mlflow(config: RagIndexConfig, run_key: str, run_name: str, params: dict, metrics: dict,
                  tags: dict, settings: LooplineSettings | None = None) -> str:
    """Log into the MLflow run of ``run_key`` (one per Airflow run and plan), creating it once.

    Experiment ``<instance>_rag_index``. Params already logged are not logged again (MLflow refuses a
    changed value), so a re-run of a task lands in the same MLflow run.
    """
    from mlflow.entities import Metric, Param, RunTag

    from pipelines.core import tracking
    run_key = run_key.replace("'", "_")  # it goes into a filter string
    mlflow_client = tracking.client(settings)
    experiment = tracking.experiment_id(f"{config.instance}_rag_index", settings)
    found = mlflow_client.search_runs([experiment], filter_string=f"tags.`loopline.run_key` = '{run_key}'",
                                      max_results=1)
    if found:
        run_id, logged = found[0].info.run_id, found[0].data.params
    else:
        tags_at_start = {"loopline.run_key": run_key, "loopline.instance": config.instance}
        run = mlflow_client.create_run(experiment, run_name=run_name, tags=tags_at_start)
        run_id, logged = run.info.run_id, {}
    stamp = int(time.time() * 1000)  # MLflow's own bookkeeping, not business logic
    mlflow_client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), stamp, 0) for k, v in sorted(metrics.items()) if v is not None],
        params=[Param(k, str(v)) for k, v in sorted(params.items()) if k not in logged],
        tags=[RunTag(k, str(v)) for k, v in sorted(tags.items())],
    )
    mlflow_client.set_terminated(run_id)
    return run_id


def evaluate_index(config: RagIndexConfig, plan: dict, run_id: str = "manual",
                   settings: LooplineSettings | None = None) -> dict:
    """Gate a full build: hit@k and MRR@k of the candidate against the live version, per search mode.

    Incremental and unchanged runs have no candidate: they return at once (their live version is
    evaluated after the update, by :func:`record_index`).

    Returns:
        ``decision`` (switch, in_place, unchanged), ``candidate`` and ``live`` metrics (``{mode: {hit_rate,
        mrr}}``), ``gate`` (the verdict in words), ``k``.

    Raises:
        GateBlocked: the candidate regresses beyond the bounds; it is kept as ``rejected``, the alias stays.
    """
    settings = settings or get_settings()
    mode = plan["mode"]
    if mode != "full":
        in_place = mode == "incremental"
        return {"mode": mode, "decision": "in_place" if in_place else "unchanged", "candidate": None,
                "live": None, "k": config.evaluation.k,
                "gate": "no candidate: the live version is updated in place" if in_place
                else "nothing changed"}
    qs = _question_set(config, settings)
    catalog = VersionCatalog(paths(config, settings).catalog)
    target, live = plan["target_version"], plan["live_version"]
    with _open_store(config, settings) as store:
        if store.live_version() == target:  # a re-run after the switch: the verdict was already given
            record = catalog.get(target) or {}
            return {"mode": mode, "decision": "switch", "candidate": _stored_evaluation(record, qs, config),
                    "live": None, "gate": record.get("gate", "passed"), "k": config.evaluation.k}
        candidate = _evaluate(store, target, plan["model_path"], config, qs)
        live_metrics, live_note = None, ""
        if live:
            record = catalog.get(live)
            try:
                if record is None:
                    raise EmbeddingModelError(f"live version {live} is not in the catalog")
                live_metrics = _evaluate(store, live, record["model_path"], config, qs)
            except EmbeddingModelError as exc:
                live_metrics = _stored_evaluation(record, qs, config)
                source = "from its last evaluation" if live_metrics else "unknown"
                live_note = f" (live metrics {source}: {exc})"
        unanswerable = sorted({q.source for q in qs.questions} - set(store.chunk_ids(target).values()))
    verdict = gate(candidate, live_metrics, config.evaluation)
    if unanswerable:
        log.warning("%d expected source(s) of %s are not in the corpus, so no version can find them: %s",
                    len(unanswerable), config.evaluation.questions, unanswerable[:LISTED])
    catalog.put(target, status="approved" if verdict.passed else "rejected",
                gate=verdict.summary() + live_note,
                evaluation={"metrics": candidate, "corpus_digest": plan["corpus_digest"],
                            "question_set": qs.digest, "k": config.evaluation.k})
    decision = "switch" if verdict.passed else "blocked"
    log_to_mlflow(config, f"{run_id}:{plan['plan_id']}", f"{plan['target_version']} {mode}",
                  _lineage_params(config, plan, qs),
                  {**flat_metrics(candidate, config.evaluation.k, "candidate_"),
                   **flat_metrics(live_metrics, config.evaluation.k, "live_"),
                   "unanswerable_questions": len(unanswerable)},
                  {"loopline.decision": decision, "loopline.gate": verdict.summary() + live_note}, settings)
    if not verdict.passed:
        chunker = f"{plan['chunker']['size_chars']}/{plan['chunker']['overlap_chars']} chars"
        raise GateBlocked(
            f"candidate {target} of index {config.instance} (model {plan['model_id']}, chunker {chunker}) is "
            f"blocked by the evaluation gate: {verdict.summary()}{live_note}. The alias stays on {live}; the "
            "candidate is kept as 'rejected' for inspection. Fix the model or chunker in the YAML, or change "
            "the bounds under evaluation:, then run the DAG again")
    log.info("Candidate %s passes the gate: %s%s", target, verdict.summary(), live_note)
    return {"mode": mode, "decision": decision, "candidate": candidate, "live": live_metrics,
            "gate": verdict.summary() + live_note, "k": config.evaluation.k,
            "unanswerable_sources": unanswerable[:LISTED]}


# --- 4. publish ---------------------------------------------------------------------------------------------

def publish_index(config: RagIndexConfig, plan: dict, run_id: str = "manual",
                  settings: LooplineSettings | None = None) -> dict:
    """Make the run's work live: switch the alias (full) or update the live version in place (incremental).

    Returns:
        ``changed`` (whether readers now see something new), ``action`` (switched, updated_in_place,
        unchanged), ``live_version``, ``previous_version``, ``written``, ``deleted``, ``retired_versions``.
    """
    settings = settings or get_settings()
    mode, target = plan["mode"], plan["target_version"]
    result = {"changed": False, "action": "unchanged", "live_version": plan["live_version"],
              "previous_version": plan["live_version"], "written": 0, "deleted": 0, "retired_versions": []}
    if mode == "unchanged":
        return result
    full = _load_plan(plan)
    catalog = VersionCatalog(paths(config, settings).catalog)
    with _open_store(config, settings) as store:
        live = store.live_version()
        if mode == "full":
            record = catalog.get(target) or {}
            if live != target and record.get("status") != "approved":
                raise GateBlocked(f"candidate {target} of index {config.instance} has not passed the "
                                  f"evaluation gate (status {record.get('status')}: "
                                  f"{record.get('gate', 'not evaluated')}); it cannot go live. Run "
                                  "evaluate_index for this plan first")
            if live != target:
                store.switch_live(target)
                catalog.mark_live(target, live, reason=f"{run_id}: full rebuild passed the gate")
            catalog.put(target, corpus_digest=plan["corpus_digest"])
            result.update(changed=live != target, action="switched", live_version=target,
                          previous_version=live, written=plan["counts"]["chunks_to_embed"])
        else:
            if live != target:
                raise IndexStateError(f"plan {plan['plan_id']} updates {target} in place, but the live "
                                      f"version is now {live} (a rollback or another run moved the alias): "
                                      "run the DAG again")
            folder = paths(config, settings).staging / plan["plan_id"]
            staged = _read_staged(folder) if folder.exists() else []
            missing = {c[0] for c in full["chunks_to_embed"]} - {r.chunk_id for r in staged}
            if missing:
                raise IndexStateError(f"staging {folder} lacks {len(missing)} of the plan's chunks: clear "
                                      "embed_chunks of this run to embed them")
            batch = config.embedding.write_batch_chunks
            for offset in range(0, len(staged), batch):  # additions first: no document is ever missing
                store.write(target, staged[offset:offset + batch])
            store.delete(target, full["chunk_ids_to_delete"])
            store.finalize(target)
            catalog.put(target, corpus_digest=plan["corpus_digest"])
            shutil.rmtree(folder, ignore_errors=True)
            result.update(changed=True, action="updated_in_place", live_version=target,
                          previous_version=target, written=len(staged),
                          deleted=len(full["chunk_ids_to_delete"]))
            log.info("Updated %s in place: %d chunks written, %d deleted", target, len(staged),
                     len(full["chunk_ids_to_delete"]))
        result["retired_versions"] = retire_versions(store, catalog, config.index.previous_versions_kept)
    return result


# --- 5. record ----------------------------------------------------------------------------------------------

def record_index(config: RagIndexConfig, plan: dict, embedded: dict, verdict: dict,
                 run_id: str = "manual", settings: LooplineSettings | None = None) -> dict:
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
    catalog = VersionCatalog(paths(config, settings).catalog)
    with _open_store(config, settings) as store:
        live = store.live_version()
        record = catalog.get(live) or {}
        metrics = _stored_evaluation(record, qs, config, plan["corpus_digest"]) if live else None
        if live and metrics is None:
            metrics = _evaluate(store, live, record.get("model_path") or plan["model_path"], config, qs)
            catalog.put(live, evaluation={"metrics": metrics, "corpus_digest": plan["corpus_digest"],
                                          "question_set": qs.digest, "k": config.evaluation.k})
    counts = plan["counts"]
    changed = live != plan["live_version"] or (plan["mode"] == "incremental"
                                               and live == plan["target_version"])
    action = {"full": "switched" if live == plan["target_version"] else "not switched",
              "incremental": "updated_in_place", "unchanged": "unchanged"}[plan["mode"]]
    summary = {
        "instance": config.instance, "backend": config.index.backend, "dag_run_id": run_id,
        "mode": plan["mode"], "action": action, "index_changed": changed,
        "live_version": live, "previous_version": plan["live_version"],
        "target_version": plan["target_version"],
        "documents": plan["documents"], "chunks": plan["chunks"],
        "embedded": embedded.get("embedded", 0) + embedded.get("resumed", 0),
        "skipped_unchanged": counts["chunks_unchanged"], "deleted": counts["chunks_to_delete"],
        "docs": {key.removeprefix("docs_"): n for key, n in counts.items() if key.startswith("docs_")},
        "skipped_files": plan["skipped_files"], "skipped_files_total": plan.get("skipped_files_total", 0),
        "metrics": metrics, "k": config.evaluation.k, "gate": verdict.get("gate"),
        "corpus_digest": plan["corpus_digest"], "model_id": plan["model_id"], "chunker": plan["chunker"],
        "embed_seconds": round(embedded.get("seconds", 0.0), 3),
    }
    k = config.evaluation.k
    mlflow_metrics = {
        **flat_metrics(metrics, k), **flat_metrics(verdict.get("candidate"), k, "candidate_"),
        "documents": plan["documents"], "chunks": plan["chunks"], "chunks_embedded": summary["embedded"],
        "chunks_skipped_unchanged": summary["skipped_unchanged"], "chunks_deleted": summary["deleted"],
        **{f"docs_{name}": n for name, n in summary["docs"].items()},
        "files_skipped": summary["skipped_files_total"], "embed_seconds": embedded.get("seconds", 0.0),
        "embed_chunks_per_s": embedded.get("chunks_per_s", 0.0),
    }
    tags = {"loopline.decision": verdict.get("decision", plan["mode"]), "loopline.action": action,
            "loopline.live_version": str(live)}
    summary["mlflow_run_id"] = log_to_mlflow(
        config, f"{run_id}:{plan['plan_id']}", f"{live} {plan['mode']}", _lineage_params(config, plan, qs),
        mlflow_metrics, tags, settings)
    shown = ", ".join(f"{m} hit@{config.evaluation.k} {v['hit_rate']:.3f} MRR {v['mrr']:.3f}"
                      for m, v in (metrics or {}).items())
    log.info("Index %s: %s, live %s; embedded %d, skipped %d unchanged, deleted %d; %s", config.instance,
             action, live, summary["embedded"], summary["skipped_unchanged"], summary["deleted"], shown)
    return summary


# --- without Airflow ----------------------------------------------------------------------------------------

def run_once(config: RagIndexConfig, run_id: str = "manual",
             settings: LooplineSettings | None = None) -> dict:
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


def search(config: RagIndexConfig, query: str, k: int | None = None, mode: str = "hybrid",
           settings: LooplineSettings | None = None) -> list[SearchHit]:
    """The ``k`` best chunks of the live version for ``query`` (for readers: LoRA data, an app, a notebook).

    The alias is resolved once and the query embedded with the model that built that version, so a
    switch in between cannot mix one version's model with another's vectors.
    """
    settings = settings or get_settings()
    catalog = VersionCatalog(paths(config, settings).catalog)
    with _open_store(config, settings) as store:
        live = store.live_version()
        record = catalog.get(live)
        if live is None or record is None:
            where = " in the catalog" if live else ""
            raise IndexStateError(f"index {config.instance} has no live version{where}: run the "
                                  f"{config.dag_id} DAG first")
        vector = _query_encoder(record["model_path"], config)([query])[0]
        return store.search(query, vector, k or config.evaluation.k, mode=mode, version=live)
