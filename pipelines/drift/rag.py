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
import os
from datetime import date, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SAMPLE_SEED = 0


def query_log_dir(instance: str, day: date, settings) -> Path:
    return settings.path("query_log", instance, f"ds={day.isoformat()}")


def log_queries(instance: str, day: date, queries: list[str], settings, name: str = "queries") -> Path:
    """Write one day's queries (replacing a file of the same name): what an application would log."""
    folder = query_log_dir(instance, day, settings)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.jsonl"
    partial = folder / f".{name}.jsonl.partial"
    partial.write_text("".join(json.dumps({"query": q}) + "\n" for q in queries))
    os.replace(partial, target)
    return target


def read_queries(instance: str, days: list[date], settings) -> list[str]:
    """Logged queries of the given days (unreadable lines are skipped and counted in the log)."""
    queries, bad = [], 0
    for day in days:
        for path in sorted(query_log_dir(instance, day, settings).glob("*.jsonl")):
            for line in path.read_text(errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    bad += 1
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


def _stored_hit_rate(record: dict, question_digest: str, k: int) -> dict[str, float] | None:
    ev = (record or {}).get("evaluation") or {}
    if ev.get("question_set") != question_digest or ev.get("k") != k:
        return None
    return {mode: values["hit_rate"] for mode, values in (ev.get("metrics") or {}).items()}


def _reference_vectors(path: Path):
    import pyarrow.parquet as pq

    table = pq.read_table(path).to_pydict()
    return dict(zip(table["chunk_id"], table["vector"]))


def _save_vectors(path: Path, vectors: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    ids = sorted(vectors)
    table = pa.table({"chunk_id": ids, "vector": pa.array([list(map(float, vectors[i])) for i in ids],
                                                          type=pa.list_(pa.float32()))})
    partial = path.with_name(f".{path.name}.partial")
    pq.write_table(table, partial)
    os.replace(partial, path)


def _summary_html(config, evidence: dict[str, Any], links: dict[str, str]) -> str:
    from html import escape

    rows = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(json.dumps(v))}</td></tr>"
                   for k, v in evidence.items() if k not in ("reference",))
    items = "".join(f'<li><a href="{escape(href)}">{escape(name)}</a></li>' for name, href in links.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(config.dag_id)} "
            f"{escape(evidence['check_day'])}</title></head><body><h1>{escape(config.dag_id)}: retrieval drift, "
            f"{escape(evidence['check_day'])}</h1><ul>{items or '<li>no embedding report (not measured)</li>'}</ul>"
            f"<table border='1' cellpadding='4'>{rows}</table></body></html>")


def check_rag(config, run_id: str, run_after: datetime, window, settings) -> dict[str, Any]:
    """Retrieval check of the live index of ``config.rag.rag_config``; see the module docstring.

    Raises:
        NothingToCheck: the index has no live version yet.
        ReferenceUnavailable: the live version is not in the version catalog.
    """
    import numpy as np

    from pipelines.drift.history import DriftHistory, history_path
    from pipelines.drift.steps import NothingToCheck, ReferenceUnavailable, _save_html, log_to_mlflow, report_path
    from pipelines.drift.targets import target_config
    from pipelines.rag import embeddings
    from pipelines.rag.corpus import load_corpus
    from pipelines.rag.evaluation import evaluate_version, load_questions
    from pipelines.rag.hashing import chunk_corpus
    from pipelines.rag.stores import open_store
    from pipelines.rag.versions import VersionCatalog, catalog_path

    rag = target_config(config.rag.rag_config, "rag_index")
    thresholds = config.rag
    history = DriftHistory(history_path(settings))
    base = {"instance": config.instance, "kind": "rag", "dag_run_id": run_id, "run_after": run_after.isoformat(),
            "check_day": str(window.check_day)}
    catalog = VersionCatalog(catalog_path(rag, settings))
    questions = load_questions(settings.resolve(rag.evaluation.questions))
    with open_store(rag.index.backend, rag.instance, settings) as store:
        live = store.live_version()
        if live is None:
            reason = (f"index {rag.instance} has no live version yet, so there is no reference to compare with: "
                      f"run {rag.dag_id} first; this check runs again on its schedule")
            history.record_check(**base, status="skipped", verdict=reason, action="none: nothing to check")
            raise NothingToCheck(reason)
        record = catalog.get(live)
        if record is None or not record.get("model_path"):
            raise ReferenceUnavailable(f"live version {live} of index {rag.instance} is not in its catalog "
                                       f"{catalog.path}: re-index with {rag.dag_id}")
        embedder = embeddings.load_embedder(embeddings.resolve_model_path(record["model_path"], settings),
                                            batch_size=rag.embedding.batch_size, device=rag.embedding.device)
        hit = evaluate_version(store, live, embedder.encode, questions, rag.evaluation.k, rag.evaluation.modes)
        indexed = store.chunk_ids(live)
    hit_rate = {mode: round(values["hit_rate"], 4) for mode, values in hit.items()}
    baseline = _stored_hit_rate(record, questions.digest, rag.evaluation.k)

    chunker = record.get("chunker") or {}
    size = chunker.get("size_chars", rag.chunker.size_chars)
    overlap = chunker.get("overlap_chars", rag.chunker.overlap_chars)
    corpus = load_corpus(settings.resolve(rag.corpus.path), rag.corpus.include, rag.corpus.exclude,
                         max_bytes=int(rag.corpus.max_file_mb * 1_000_000), bad_files="skip")
    chunks = {c.chunk_id: c for c in chunk_corpus(corpus, size, overlap, record["model_id"])}
    union = set(chunks) | set(indexed)
    change_share = len(set(chunks) ^ set(indexed)) / len(union) if union else 0.0

    # Corpus embeddings: the reference is the corpus exactly as the live version holds it.
    folder = settings.path("drift", config.instance, "corpus_reference")
    indexed_digest = record.get("corpus_digest")
    reference_file = folder / f"{live}_{indexed_digest}.parquet" if indexed_digest else None
    reference_vectors = _reference_vectors(reference_file) if reference_file and reference_file.exists() else None
    sample = sample_ids(list(chunks), thresholds.max_chunks)
    known = reference_vectors or {}
    todo = [i for i in sample if i not in known]
    fresh = dict(zip(todo, embedder.encode([chunks[i].text for i in todo]))) if todo else {}
    log.info("Corpus: %d chunks now, %d in live version %s, %.1f%% differ; embedded %d chunk(s) for the check",
             len(chunks), len(indexed), live, 100 * change_share, len(todo))
    current_vectors = {i: known.get(i, fresh.get(i)) for i in sample}
    if reference_vectors is None and reference_file is not None and corpus.digest == indexed_digest:
        _save_vectors(reference_file, current_vectors)
        reference_vectors = current_vectors
        log.info("Corpus reference of %s taken now (the corpus is exactly what is indexed): %s", live, reference_file)
    reports: dict[str, Any] = {}
    corpus_drift = None
    if reference_vectors:
        corpus_drift, reports["corpus"] = embedding_drift(np.stack(list(reference_vectors.values())),
                                                          np.stack(list(current_vectors.values())),
                                                          thresholds.corpus_drift_threshold)
    corpus_note = None if reference_vectors else (
        f"no corpus reference for {live}: the corpus changed before a check saw it as indexed (corpus change "
        "covers it until the next re-index)")

    queries = read_queries(config.instance, window.days, settings)
    query_drift, query_note = None, None
    if len(queries) >= thresholds.min_queries:
        query_drift, reports["queries"] = embedding_drift(
            embedder.encode([q.question for q in questions.questions]), embedder.encode(queries),
            thresholds.query_drift_threshold)
    else:
        query_note = f"{len(queries)} logged queries in the window, fewer than min_queries {thresholds.min_queries}"

    day = window.check_day
    main = report_path(config, day, settings)
    links = {}
    for name, snapshot in reports.items():
        if snapshot is None:
            continue
        part = _save_html(snapshot.save_html, main.with_name(f"{day.isoformat()}-{name}.html"))
        links[f"{name} embeddings (Evidently)"] = part.name
    evidence = {
        "kind": "rag", "instance": config.instance, "dag_id": config.dag_id, "run_id": run_id,
        "run_after": run_after.isoformat(), "window": [str(window.start), str(window.end)], "check_day": str(day),
        "k": rag.evaluation.k, "hit_rate": hit_rate, "baseline_hit_rate": baseline,
        "corpus_change_share": round(change_share, 4), "chunks_now": len(chunks), "chunks_indexed": len(indexed),
        "corpus_drift": None if corpus_drift is None else round(corpus_drift, 5), "corpus_note": corpus_note,
        "query_drift": None if query_drift is None else round(query_drift, 5), "queries": len(queries),
        "query_note": query_note,
        "reference": {"live_version": live, "corpus_digest": indexed_digest, "model_id": record["model_id"],
                      "question_set": questions.digest},
    }
    html = main
    html.parent.mkdir(parents=True, exist_ok=True)
    partial = html.with_name(f".{html.name}.partial")
    partial.write_text(_summary_html(config, evidence, links))
    os.replace(partial, html)
    evidence.update(report_path=str(html), report_uri=html.as_uri())
    metrics = {"corpus_change_share": change_share, "corpus_drift": corpus_drift, "query_drift": query_drift,
               "queries": len(queries), "chunks_now": len(chunks), "chunks_indexed": len(indexed),
               **{f"hit_rate_{m}": v for m, v in hit_rate.items()},
               **{f"baseline_hit_rate_{m}": v for m, v in (baseline or {}).items()}}
    params = {"window_start": window.start, "window_end": window.end, "rag_config": thresholds.rag_config,
              "live_version": live, "indexed_corpus_digest": indexed_digest, "model_id": record["model_id"],
              "question_set_digest": questions.digest, "k": rag.evaluation.k,
              "hit_rate_drop": thresholds.hit_rate_drop, "corpus_change_share_threshold": thresholds.corpus_change_share,
              "corpus_drift_threshold": thresholds.corpus_drift_threshold,
              "query_drift_threshold": thresholds.query_drift_threshold}
    evidence["mlflow_run_id"] = log_to_mlflow(config, run_id, f"drift {day}", params, metrics, {}, html, settings)
    for name in links.values():
        from pipelines.core import tracking
        tracking.client(settings).log_artifact(evidence["mlflow_run_id"], str(html.with_name(name)), "drift_report")
    history.record_check(**base, status="checked", hit_rate=hit_rate, report_uri=evidence["report_uri"],
                         mlflow_run_id=evidence["mlflow_run_id"], reference=evidence["reference"])
    log.info("Retrieval drift of %s %s: hit@%d %s (recorded %s); corpus change %.1f%%; corpus drift %s; "
             "query drift %s over %d queries; report %s", config.dag_id, window, rag.evaluation.k, hit_rate,
             baseline, 100 * change_share, evidence["corpus_drift"], evidence["query_drift"], len(queries), html)
    return evidence
