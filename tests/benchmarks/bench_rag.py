"""Benchmarks of RAG re-indexing (``make bench``) on a real corpus: the docstrings of installed packages.

Every figure is a ratio measured within one run, on one machine:

- full-index throughput (chunks/s of plan → embed → publish) against raw ``model.encode`` of the same
  chunk texts with the same loaded model, batch size and normalisation, run just before and just after
  the full index (the mean of the two; goal >= 0.85);
- re-index of the unchanged corpus against the full index time (goal <= 0.02);
- re-index after 5% of the documents changed against the full index time (goal <= 0.10);
- query latency p50/p99 of ``rag_steps.search`` (query embedding + LanceDB search), vector and hybrid.

The corpus is exported by ``python -m pipelines.rag.docstring_corpus`` into a fresh data home; its
question set (for the evaluation steps, which are timed apart) is made from the corpus itself: the first
sentence of a class or function docstring, answered by its module's document.

Run: ``python tests/benchmarks/bench_rag.py`` (about 12 minutes on 2 cores), or
``--packages mlflow --max-docs 200`` for a quick look.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def fresh_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="loopline-bench-rag-"))
    os.environ["LOOPLINE_HOME"] = str(home)
    from pipelines.core.settings import get_settings

    get_settings.cache_clear()
    return home


def write_question_set(corpus: Path, path: Path, every: int = 37, limit: int = 30) -> int:
    """Known-item questions from the corpus: a docstring's first sentence → its module's document."""
    lines, docs = ["questions:"], sorted(corpus.rglob("*.md"))
    for doc in docs[::every][:limit]:
        match = re.search(r"^## (?:class )?\S+\n\n(.+?[.!?])(?:\s|$)", doc.read_text(), re.M | re.S)
        if not match:
            continue
        sentence = " ".join(match.group(1).split())[:300].replace('"', "'")
        lines += [f'  - question: "{sentence}"', f"    source: {doc.relative_to(corpus).as_posix()}"]
    path.write_text("\n".join(lines) + "\n")
    return (len(lines) - 1) // 2


def config_for(corpus: Path, questions: Path, batch_size: int):
    from pipelines.rag.config import RagIndexConfig

    return RagIndexConfig.model_validate({
        "template": "rag_index", "instance": "bench_docstrings",
        "corpus": {"path": str(corpus), "include": ["**/*.md"]},
        "embedding": {"batch_size": batch_size},
        "evaluation": {"questions": str(questions), "k": 5},
    })


def index_once(config, run_id: str) -> dict:
    """plan → embed → publish timed (the work that makes the index), then evaluate and record, timed apart."""
    from pipelines.rag import embeddings
    from pipelines.rag import steps as rag_steps
    embeddings._FINGERPRINTS.clear()  # a task process hashes the model folder afresh: count it
    t = {}
    started = time.perf_counter()
    plan = rag_steps.plan_index(config, run_id)
    t["plan"] = time.perf_counter() - started
    embedded = rag_steps.embed_chunks(config, plan)
    t["embed"] = time.perf_counter() - started - t["plan"]
    mark = time.perf_counter()
    verdict = rag_steps.evaluate_index(config, plan, run_id)
    t["evaluate"] = time.perf_counter() - mark
    mark = time.perf_counter()
    rag_steps.publish_index(config, plan, run_id)
    t["publish"] = time.perf_counter() - mark
    t["index"] = t["plan"] + t["embed"] + t["publish"]
    mark = time.perf_counter()
    summary = rag_steps.record_index(config, plan, embedded, verdict, run_id)
    t["record"] = time.perf_counter() - mark
    return {"plan": plan, "embedded": embedded, "summary": summary, "t": t}


def change_documents(corpus: Path, share: float) -> int:
    """Edit ``share`` of the documents (every n-th, sorted): one sentence added to the module docstring."""
    docs = sorted(corpus.rglob("*.md"))
    step = max(1, round(1 / share))
    changed = docs[::step]
    for doc in changed:
        text = doc.read_text()
        head, _, rest = text.partition("\n\n")
        doc.write_text(f"{head}\n\nRevised for the benchmark: this module changed.\n\n{rest}")
    return len(changed)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", nargs="+", default=["airflow", "feast", "mlflow"])
    parser.add_argument("--max-docs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()

    home = fresh_home()
    import logging

    logging.basicConfig(level=logging.WARNING)
    import torch

    from pipelines.rag import embeddings
    from pipelines.rag import steps as rag_steps
    from pipelines.rag.corpus import load_corpus
    from pipelines.rag.docstring_corpus import export
    from pipelines.rag.hashing import chunk_corpus

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}")
    corpus = home / "corpora" / "docstrings"
    stats = export(args.packages, corpus, max_docs=args.max_docs)
    questions = home / "bench_questions.yaml"
    n_questions = write_question_set(corpus, questions)
    config = config_for(corpus, questions, args.batch_size)
    print(f"Corpus: docstrings of {', '.join(args.packages)}: {stats['documents']} documents, "
          f"{stats['bytes'] / 1e6:.1f} MB; {n_questions} known-item questions; data home {home}")

    # Load the model once, untimed, and warm it up: both paths below use this same loaded model.
    started = time.perf_counter()
    model_path = embeddings.resolve_model_path(None)
    embedder = embeddings.load_embedder(model_path, batch_size=args.batch_size)
    embedder.encode(["warm-up"] * args.batch_size)
    load_s = time.perf_counter() - started

    # The same chunk texts the plan will hold, computed untimed with the same functions.
    corpus_now = load_corpus(corpus, ["**/*.md"])
    texts = [c.text for c in chunk_corpus(corpus_now, 1000, 150, embeddings.model_id(model_path))]

    embedder.encode(sorted(texts, key=len)[-4 * args.batch_size:])  # warm up on the longest texts too

    def raw_encode() -> float:
        started = time.perf_counter()
        embedder.model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False)
        return time.perf_counter() - started

    # Raw encode right before and right after the full index: on a shared machine the load drifts, and
    # the mean of the two is the fairer baseline.
    raw_runs = [raw_encode()]
    full = index_once(config, "bench-full")
    raw_runs.append(raw_encode())
    raw_s = statistics.mean(raw_runs)
    chunks = full["plan"]["chunks"]
    full_s = full["t"]["index"]
    planned = json.loads(Path(full["plan"]["plan_path"]).read_text())["chunks_to_embed"]
    assert sorted(text for _, _, _, text in planned) == sorted(texts), "the baseline encodes other texts"

    unchanged = index_once(config, "bench-unchanged")
    n_changed = change_documents(corpus, 0.05)
    changed = index_once(config, "bench-5pct")

    latencies: dict[str, list[float]] = {"vector": [], "hybrid": []}
    qs = [q.strip().strip('"') for q in re.findall(r"question: (.+)", questions.read_text())]
    titles = [d.stem.replace("_", " ") for d in sorted(corpus.rglob("*.md"))]
    probes = (qs + titles)[: args.queries]
    for mode in latencies:
        rag_steps.search(config, probes[0], mode=mode)  # warm
        for probe in probes:
            started = time.perf_counter()
            rag_steps.search(config, probe, k=5, mode=mode)
            latencies[mode].append((time.perf_counter() - started) * 1000)

    full_rate, raw_rate = chunks / full_s, chunks / raw_s
    print(f"\nModel all-MiniLM-L6-v2 loaded and warmed in {load_s:.1f} s (untimed below), batch size "
          f"{args.batch_size}")
    t = full["t"]
    print(f"\nFull index of {chunks:,} chunks (plan {t['plan']:.1f} s + embed {t['embed']:.1f} s + publish "
          f"{t['publish']:.1f} s): {full_s:.1f} s, {full_rate:,.1f} chunks/s")
    print(f"Raw model.encode of the same {len(texts):,} texts: {raw_s:.1f} s (mean of {raw_runs[0]:.1f} s "
          f"before and {raw_runs[1]:.1f} s after), {raw_rate:,.1f} chunks/s")
    print(f"  ratio full index / raw encode (throughput): {full_rate / raw_rate:.3f}  (goal >= 0.85)")
    u = unchanged["t"]["index"]
    print(f"\nRe-index, corpus unchanged: {u:.2f} s, embedded {unchanged['embedded']['embedded']}, "
          f"mode {unchanged['plan']['mode']}")
    print(f"  ratio unchanged / full: {u / full_s:.4f}  (goal <= 0.02)")
    c = changed["t"]["index"]
    counts = changed["plan"]["counts"]
    print(f"\nRe-index after {n_changed} of {stats['documents']} documents changed (5%): {c:.2f} s; "
          f"embedded {changed['embedded']['embedded']}, deleted {counts['chunks_to_delete']}, unchanged "
          f"{counts['chunks_unchanged']}")
    print(f"  ratio 5% changed / full: {c / full_s:.4f}  (goal <= 0.10)")
    print(f"\nEvaluation ({n_questions} questions), timed apart: full build {t['evaluate']:.1f} s + record "
          f"{t['record']:.1f} s; metrics {full['summary']['metrics']}")
    print(f"\nQuery latency, rag_steps.search (embed the query + LanceDB search, k=5), {len(probes)} queries:")
    for mode, values in latencies.items():
        print(f"  {mode:<6} p50 {statistics.median(values):6.1f} ms   p99 {percentile(values, 0.99):6.1f} ms")


if __name__ == "__main__":
    main()
