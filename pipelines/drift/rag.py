"""Retrieval drift: hit rate on the frozen question set, corpus change, corpus and query embedding drift.

Reads the index through the RAG package's public functions (the store interface, the version catalog, the
embedder and the evaluation), never its files:

- **hit rate**: the live version scored on its frozen question set now, against the value the catalog
  recorded for it (its last evaluation on the same question set and k);
- **corpus change**: chunks of the document folder now (chunked and hashed as the live version was built)
  against the chunk ids the live version holds: the share that is new, changed or deleted;
- **corpus embeddings**: Evidently ``EmbeddingsDrift`` (cosine distance of the mean embeddings) of the
  corpus now against the corpus as it was indexed. That reference is taken the first time a check sees the
  live version with the corpus exactly as indexed (same corpus digest), under
  ``drift/<instance>/corpus_reference/``; a re-index gives a new digest and a new reference;
- **query embeddings**: queries logged by the application (``query_log/<instance>/ds=<day>/*.jsonl``, one
  JSON object with a ``query`` field, or a JSON string, per line; :func:`log_queries` writes them) over the
  window, against the frozen questions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pipelines.core.files import write_atomic
from pipelines.core.home import DataHome
from pipelines.drift.checks import (
    CheckWindow,
    NothingToCheck,
    RagEvidence,
    ReferenceUnavailable,
    evidence_head,
    history_row,
    log_check,
    report_path,
)

if TYPE_CHECKING:
    from pipelines.core.settings import LooplineSettings
    from pipelines.drift.config import DriftCheckConfig, RagDrift
    from pipelines.drift.history import DriftHistory
    from pipelines.rag.config import RagIndexConfig
    from pipelines.rag.evaluation import QuestionSet

log = logging.getLogger(__name__)

SAMPLE_SEED = 0


def log_queries(instance: str, day: date, queries: list[str], settings: LooplineSettings | None = None,
                name: str = "queries") -> Path:
    """Write one day's queries (replacing a file of the same name): what an application would log."""
    text = "".join(json.dumps({"query": q}) + "\n" for q in queries)
    return write_atomic(DataHome(settings).query_log(instance, day) / f"{name}.jsonl", text)


def read_queries(instance: str, days: list[date], settings: LooplineSettings | None = None) -> list[str]:
    """Users' logged queries of the given days (unreadable lines are skipped and counted in the log).

    Rows a pipeline wrote about its own checks (``origin`` other than ``user``, e.g. the assistant DAG's
    ``check_answers``) are not user traffic and are left out.
    """
    home = DataHome(settings)
    queries, bad = [], 0
    for day in days:
        for path in sorted(home.query_log(instance, day).glob("*.jsonl")):
            for line in path.read_text(errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(item, dict) and item.get("origin", "user") != "user":
                    continue
                text = item.get("query") if isinstance(item, dict) else item
                if isinstance(text, str) and text.strip():
                    queries.append(text.strip())
                else:
                    bad += 1
    if bad:
        log.warning("Skipped %d unreadable query log line(s) of %s", bad, instance)
    return queries


def sample_ids(ids: list[str], limit: int) -> list[str]:
    """A deterministic sample of at most ``limit`` ids (by hash, so the same ids give the same sample)."""
    if len(ids) <= limit:
        return sorted(ids)
    return sorted(ids, key=lambda i: hashlib.sha256(f"{SAMPLE_SEED}:{i}".encode()).hexdigest())[:limit]


# Evidently draws its embeddings plot with t-SNE, whose perplexity (30) needs more rows than that on each side.
MIN_ROWS_FOR_REPORT = 31
MAX_ROWS_FOR_REPORT = 3000  # t-SNE time grows fast; the score is computed on every row regardless


def embedding_distance(reference, current) -> float:
    """Cosine distance between the mean embeddings: Evidently's ``distance`` drift method, no bootstrap."""
    import numpy as np
    from scipy.spatial.distance import cosine

    return float(cosine(np.asarray(reference, dtype="float64").mean(axis=0),
                        np.asarray(current, dtype="float64").mean(axis=0)))


def embedding_drift(reference, current, threshold: float):
    """Drift score of two vector arrays, with Evidently's ``EmbeddingsDrift`` report when it can draw one.

    Returns:
        (score, snapshot): the cosine distance between the mean embeddings (:func:`embedding_distance`),
        and the Evidently snapshot, or None when either side has fewer than 31 or more than 3,000 rows.
    """
    import numpy as np

    reference, current = np.asarray(reference, dtype="float64"), np.asarray(current, dtype="float64")
    score = embedding_distance(reference, current)
    if not (MIN_ROWS_FOR_REPORT <= min(len(reference), len(current))
            and max(len(reference), len(current)) <= MAX_ROWS_FOR_REPORT):
        return score, None
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import distance
    from evidently.metrics.embeddings import EmbeddingsDrift

    columns = [f"e{i}" for i in range(reference.shape[1])]
    definition = DataDefinition(embeddings={"embedding": columns})
    report = Report([EmbeddingsDrift(embeddings_name="embedding",
                                     drift_method=distance(dist="cosine", threshold=threshold, bootstrap=False))])
    snapshot = report.run(Dataset.from_pandas(pd.DataFrame(current, columns=columns), data_definition=definition),
                          Dataset.from_pandas(pd.DataFrame(reference, columns=columns), data_definition=definition))
    return score, snapshot


def _reference_vectors(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    table = pq.read_table(path).to_pydict()
    return dict(zip(table["chunk_id"], table["vector"], strict=True))


def _save_vectors(path: Path, vectors: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = sorted(vectors)
    table = pa.table({"chunk_id": ids, "vector": pa.array([list(map(float, vectors[i])) for i in ids],
                                                          type=pa.list_(pa.float32()))})
    write_atomic(path, lambda partial: pq.write_table(table, partial))


def _summary_html(config: DriftCheckConfig, evidence: dict[str, Any], links: dict[str, str]) -> str:
    from html import escape

    rows = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(json.dumps(v))}</td></tr>"
                   for k, v in evidence.items() if k not in ("reference",))
    items = "".join(f'<li><a href="{escape(href)}">{escape(name)}</a></li>' for name, href in links.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(config.dag_id)} "
            f"{escape(evidence['check_day'])}</title></head><body><h1>{escape(config.dag_id)}: retrieval drift, "
            f"{escape(evidence['check_day'])}</h1><ul>{items or '<li>no embedding report (not measured)</li>'}</ul>"
            f"<table border='1' cellpadding='4'>{rows}</table></body></html>")


# --- the check, step by step -------------------------------------------------------------------------------------

@dataclass
class _LiveIndex:
    """The live version of the index, its catalog record, and what it scores and holds now."""

    version: str
    record: dict[str, Any]
    embedder: Any
    hit_rate: dict[str, float]
    baseline_hit_rate: dict[str, float] | None
    indexed: dict[str, str]


def _live_index(config: DriftCheckConfig, rag: RagIndexConfig, questions: QuestionSet, history: DriftHistory,
                row: dict[str, Any], settings: LooplineSettings) -> _LiveIndex:
    """Score the live version on the frozen questions now; its recorded hit rate is the baseline.

    Raises:
        NothingToCheck: the index has no live version yet (recorded as a skipped check).
        ReferenceUnavailable: the live version is not in the version catalog.
    """
    from pipelines.rag import embeddings
    from pipelines.rag.evaluation import evaluate_version, stored_evaluation
    from pipelines.rag.stores import open_store
    from pipelines.rag.versions import VersionCatalog, catalog_path

    catalog = VersionCatalog(catalog_path(rag, settings))
    with open_store(rag.index.backend, rag.instance, settings) as store:
        live = store.live_version()
        if live is None:
            reason = (f"index {rag.instance} has no live version yet, so there is no reference to compare with: "
                      f"run {rag.dag_id} first; this check runs again on its schedule")
            history.record_check(**row, status="skipped", verdict=reason, action="none: nothing to check")
            raise NothingToCheck(reason)
        record = catalog.get(live)
        if record is None or not record.get("model_path"):
            raise ReferenceUnavailable(f"live version {live} of index {rag.instance} is not in its catalog "
                                       f"{catalog.path}: re-index with {rag.dag_id}")
        embedder = embeddings.load_embedder(embeddings.resolve_model_path(record["model_path"], settings),
                                            batch_size=rag.embedding.batch_size, device=rag.embedding.device)
        hit = evaluate_version(store, live, embedder.encode, questions, rag.evaluation.k, rag.evaluation.modes)
        indexed = store.chunk_ids(live)
    recorded = stored_evaluation(record, questions.digest, rag.evaluation.k)
    baseline = None if recorded is None else {mode: values["hit_rate"] for mode, values in recorded.items()}
    return _LiveIndex(live, record, embedder, {mode: round(values["hit_rate"], 4) for mode, values in hit.items()},
                      baseline, indexed)


@dataclass
class _CorpusDrift:
    """The corpus now against the live version: chunk change, and embedding drift against the reference."""

    chunks: int
    change_share: float
    drift: float | None
    note: str | None
    indexed_digest: str | None
    snapshot: Any = field(default=None, repr=False)


def _corpus_chunks(rag: RagIndexConfig, record: dict[str, Any], settings: LooplineSettings):
    """The corpus folder now, chunked and hashed as the live version was built: (corpus, {chunk id: chunk})."""
    from pipelines.rag.corpus import load_corpus
    from pipelines.rag.hashing import chunk_corpus

    chunker = record.get("chunker") or {}
    size = chunker.get("size_chars", rag.chunker.size_chars)
    overlap = chunker.get("overlap_chars", rag.chunker.overlap_chars)
    corpus = load_corpus(settings.resolve(rag.corpus.path), rag.corpus.include, rag.corpus.exclude,
                         max_bytes=int(rag.corpus.max_file_mb * 1_000_000), bad_files="skip")
    strategy = chunker.get("strategy", "structure")  # versions built before chunker.strategy have none
    return corpus, {c.chunk_id: c for c in chunk_corpus(corpus, size, overlap, record["model_id"], strategy)}


def _corpus_drift(config: DriftCheckConfig, rag: RagIndexConfig, live: _LiveIndex,
                  settings: LooplineSettings) -> _CorpusDrift:
    """Corpus change against the live version's chunks, and corpus embeddings against the corpus as indexed.

    The reference is the corpus exactly as the live version holds it: taken (and kept under
    ``drift/<instance>/corpus_reference/``) the first time a check finds the corpus digest the live version
    was built from.
    """
    import numpy as np

    thresholds = config.rag
    corpus, chunks = _corpus_chunks(rag, live.record, settings)
    union = set(chunks) | set(live.indexed)
    change_share = len(set(chunks) ^ set(live.indexed)) / len(union) if union else 0.0
    indexed_digest = live.record.get("corpus_digest")
    reference_file = (DataHome(settings).drift(config.instance, "corpus_reference",
                                               f"{live.version}_{indexed_digest}.parquet") if indexed_digest else None)
    reference = _reference_vectors(reference_file) if reference_file and reference_file.exists() else None
    sample = sample_ids(list(chunks), thresholds.max_chunks)
    known = reference or {}
    todo = [i for i in sample if i not in known]
    fresh = dict(zip(todo, live.embedder.encode([chunks[i].text for i in todo]), strict=True)) if todo else {}
    log.info("Corpus: %d chunks now, %d in live version %s, %.1f%% differ; embedded %d chunk(s) for the check",
             len(chunks), len(live.indexed), live.version, 100 * change_share, len(todo))
    current = {i: known.get(i, fresh.get(i)) for i in sample}
    if reference is None and reference_file is not None and corpus.digest == indexed_digest:
        _save_vectors(reference_file, current)
        reference = current
        log.info("Corpus reference of %s taken now (the corpus is exactly what is indexed): %s", live.version,
                 reference_file)
    result = _CorpusDrift(len(chunks), change_share, None, None, indexed_digest)
    if reference:
        result.drift, result.snapshot = embedding_drift(np.stack(list(reference.values())),
                                                        np.stack(list(current.values())),
                                                        thresholds.corpus_drift_threshold)
    else:
        result.note = (f"no corpus reference for {live.version}: the corpus changed before a check saw it as "
                       "indexed (corpus change covers it until the next re-index)")
    return result


def _query_drift(config: DriftCheckConfig, questions: QuestionSet, embedder: Any, window: CheckWindow,
                 settings: LooplineSettings) -> tuple[int, float | None, Any, str | None]:
    """Logged queries of the window against the frozen questions: (queries, score, snapshot, note)."""
    thresholds: RagDrift = config.rag
    queries = read_queries(config.instance, window.days, settings)
    if len(queries) < thresholds.min_queries:
        return len(queries), None, None, (f"{len(queries)} logged queries in the window, fewer than min_queries "
                                          f"{thresholds.min_queries}")
    score, snapshot = embedding_drift(embedder.encode([q.question for q in questions.questions]),
                                      embedder.encode(queries), thresholds.query_drift_threshold)
    return len(queries), score, snapshot, None


def _save_reports(config: DriftCheckConfig, day: date, measured: dict[str, Any], snapshots: dict[str, Any],
                  settings: LooplineSettings) -> tuple[Path, list[Path]]:
    """The Evidently embedding reports beside the main report, then the main one (a summary that links them).

    Returns:
        (the main report, the embedding reports).
    """
    main = report_path(config, day, settings)
    links, parts = {}, []
    for name, snapshot in snapshots.items():
        if snapshot is None:
            continue
        part = write_atomic(main.with_name(f"{day.isoformat()}-{name}.html"),
                            lambda partial, snapshot=snapshot: snapshot.save_html(str(partial)))
        links[f"{name} embeddings (Evidently)"] = part.name
        parts.append(part)
    return write_atomic(main, _summary_html(config, measured, links)), parts


def _mlflow_params(config: DriftCheckConfig, rag: RagIndexConfig, live: _LiveIndex, corpus: _CorpusDrift,
                   questions: QuestionSet, window: CheckWindow) -> dict[str, Any]:
    t = config.rag
    return {"window_start": window.start, "window_end": window.end, "rag_config": t.rag_config,
            "live_version": live.version, "indexed_corpus_digest": corpus.indexed_digest,
            "model_id": live.record["model_id"], "question_set_digest": questions.digest, "k": rag.evaluation.k,
            "hit_rate_drop": t.hit_rate_drop, "corpus_change_share_threshold": t.corpus_change_share,
            "corpus_drift_threshold": t.corpus_drift_threshold, "query_drift_threshold": t.query_drift_threshold}


def _mlflow_metrics(live: _LiveIndex, corpus: _CorpusDrift, queries: int,
                    query_drift: float | None) -> dict[str, float | None]:
    return {"corpus_change_share": corpus.change_share, "corpus_drift": corpus.drift, "query_drift": query_drift,
            "queries": queries, "chunks_now": corpus.chunks, "chunks_indexed": len(live.indexed),
            **{f"hit_rate_{m}": v for m, v in live.hit_rate.items()},
            **{f"baseline_hit_rate_{m}": v for m, v in (live.baseline_hit_rate or {}).items()}}


def check_rag(config: DriftCheckConfig, run_id: str, run_after: datetime, window: CheckWindow,
              settings: LooplineSettings) -> RagEvidence:
    """Retrieval check of the live index of ``config.rag.rag_config``; see the module docstring.

    Raises:
        NothingToCheck: the index has no live version yet.
        ReferenceUnavailable: the live version is not in the version catalog.
    """
    from pipelines.core import tracking
    from pipelines.drift.history import open_history
    from pipelines.drift.targets import target_config
    from pipelines.rag.evaluation import load_questions

    rag = target_config(config.rag.rag_config, "rag_index")
    history = open_history(settings)
    row = history_row(config, run_id, run_after, window)
    questions = load_questions(settings.resolve(rag.evaluation.questions))
    live = _live_index(config, rag, questions, history, row, settings)
    corpus = _corpus_drift(config, rag, live, settings)
    queries, query_drift, query_snapshot, query_note = _query_drift(config, questions, live.embedder, window, settings)
    measured = {
        **evidence_head(config, run_id, run_after, window),
        "k": rag.evaluation.k, "hit_rate": live.hit_rate, "baseline_hit_rate": live.baseline_hit_rate,
        "corpus_change_share": round(corpus.change_share, 4), "chunks_now": corpus.chunks,
        "chunks_indexed": len(live.indexed), "corpus_drift": None if corpus.drift is None else round(corpus.drift, 5),
        "corpus_note": corpus.note, "query_drift": None if query_drift is None else round(query_drift, 5),
        "queries": queries, "query_note": query_note,
        "reference": {"live_version": live.version, "corpus_digest": corpus.indexed_digest,
                      "model_id": live.record["model_id"], "question_set": questions.digest},
    }
    html, parts = _save_reports(config, window.check_day, measured,
                                {"corpus": corpus.snapshot, "queries": query_snapshot}, settings)
    mlflow_run_id = log_check(config, run_id, f"drift {window.check_day}",
                              params=_mlflow_params(config, rag, live, corpus, questions, window),
                              metrics=_mlflow_metrics(live, corpus, queries, query_drift), tags={}, report=html,
                              settings=settings)
    for part in parts:
        tracking.client(settings).log_artifact(mlflow_run_id, str(part), "drift_report")
    evidence = cast(RagEvidence, {**measured, "report_path": str(html), "report_uri": html.as_uri(),
                                  "mlflow_run_id": mlflow_run_id})
    history.record_check(**row, status="checked", hit_rate=live.hit_rate, report_uri=evidence["report_uri"],
                         mlflow_run_id=mlflow_run_id, reference=evidence["reference"])
    log.info("Retrieval drift of %s %s: hit@%d %s (recorded %s); corpus change %.1f%%; corpus drift %s; "
             "query drift %s over %d queries; report %s", config.dag_id, window, rag.evaluation.k, live.hit_rate,
             live.baseline_hit_rate, 100 * corpus.change_share, evidence["corpus_drift"], evidence["query_drift"],
             queries, html)
    return evidence
