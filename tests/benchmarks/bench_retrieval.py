"""Retrieval quality on paraphrased questions (issue 15): each technique measured alone, in one run.

The corpus is the docstrings of the installed airflow, feast, mlflow and peft packages
(``python -m pipelines.rag.docstring_corpus``), indexed by the real pipeline (``plan_index`` →
``embed_chunks`` → ``evaluate_index`` → ``publish_index``) into a fresh data home, once per chunker and
embedding model. Every row then asks both frozen question sets through ``pipelines.rag.steps.search``
(resolve the alias, embed the query, search; k=5) and reports

- hit@5 and MRR@5 on ``dags/evaluation/docstrings_paraphrased.yaml`` (written by hand, as users ask) and on
  ``dags/evaluation/docstrings_known_item.yaml`` (docstring first sentences);
- the latency of each of those queries, p50 and p99.

Techniques: the search mode (vector, BM25 alone, LanceDB's hybrid = reciprocal rank fusion), Loopline's
weighted reciprocal rank fusion (``search.hybrid: weighted_rrf``) at several BM25 weights, chunking by code
symbol (``chunker.strategy: symbol``), and all-MiniLM-L6-v2 fine-tuned on (pseudo-query, passage) pairs made
from the corpus (``pipelines.rag.finetune``; never from the question sets), registered in MLflow and used as
``embedding.model: models:/<name>/<version>``.

Also each of these with ``search.max_chunks_per_document: 1`` (the 5 results from 5 documents).

Run: ``python tests/benchmarks/bench_retrieval.py`` (three embeddings of the whole export, about 13,000 chunks
each, plus fine-tuning: an hour or more on 2 cores), or ``--max-docs 150`` (the documents the questions
expect, plus others up to 150; about 20 minutes). ``--home`` re-uses an earlier run's data home (nothing is
embedded again), ``--embedder models:/<name>/<version>`` an embedder registered before, ``--match`` picks
techniques by label.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PARAPHRASED = REPO / "dags" / "evaluation" / "docstrings_paraphrased.yaml"
KNOWN_ITEM = REPO / "dags" / "evaluation" / "docstrings_known_item.yaml"
K = 5


def fresh_home(reuse: str | None = None) -> Path:
    home = Path(reuse) if reuse else Path(tempfile.mkdtemp(prefix="loopline-bench-retrieval-"))
    os.environ["LOOPLINE_HOME"] = str(home)
    from pipelines.core.settings import get_settings

    get_settings.cache_clear()
    return home


def prune_corpus(corpus: Path, keep: set[str], max_docs: int) -> int:
    """Keep the documents the questions expect plus every n-th other one, ``max_docs`` in all."""
    docs = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*.md"))
    others = [d for d in docs if d not in keep]
    room = max(0, max_docs - len(keep))
    step = max(1, len(others) // room) if room else len(others) + 1
    kept = keep | set(others[::step][:room])
    for doc in docs:
        if doc not in kept:
            (corpus / doc).unlink()
    return len([d for d in docs if d in kept])


def config_for(instance: str, corpus: Path, *, strategy: str = "structure", model: str | None = None,
               search: dict | None = None, batch_size: int = 64):
    from pipelines.rag.config import RagIndexConfig

    return RagIndexConfig.model_validate({
        "template": "rag_index", "instance": instance,
        "corpus": {"path": str(corpus), "include": ["**/*.md"]},
        "chunker": {"strategy": strategy},
        "embedding": {"model": model, "batch_size": batch_size},
        "search": search or {},
        "evaluation": {"questions": str(PARAPHRASED), "k": K, "modes": ["vector"]},
    })


def build_index(config) -> dict:
    """plan → embed → evaluate → publish, timed; returns chunks and seconds."""
    from pipelines.rag import steps as rag_steps

    started = time.perf_counter()
    plan = rag_steps.plan_index(config, f"bench-{config.instance}")
    rag_steps.embed_chunks(config, plan)
    rag_steps.evaluate_index(config, plan, f"bench-{config.instance}")
    rag_steps.publish_index(config, plan, f"bench-{config.instance}")
    return {"chunks": plan["chunks"], "seconds": time.perf_counter() - started, "model_id": plan["model_id"]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(config, mode: str, question_sets: dict) -> dict:
    """hit@5 and MRR@5 per question set, and per-query latency, through ``rag_steps.search``."""
    from pipelines.rag import steps as rag_steps
    from pipelines.rag.evaluation import score_rankings

    rag_steps.search(config, "warm-up query", k=K, mode=mode)
    result, latencies = {}, []
    for name, questions in question_sets.items():
        rankings = []
        for q in questions:
            started = time.perf_counter()
            hits = rag_steps.search(config, q.question, k=K, mode=mode)
            latencies.append((time.perf_counter() - started) * 1000)
            rankings.append([h.doc_id for h in hits])
        result[name] = score_rankings(rankings, [q.source for q in questions], K)
    result["p50_ms"] = statistics.median(latencies)
    result["p99_ms"] = percentile(latencies, 0.99)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", nargs="+", default=None, help="default: DEFAULT_PACKAGES")
    parser.add_argument("--max-docs", type=int, default=None, help="index the expected documents plus others "
                                                                    "up to this many")
    parser.add_argument("--train-pairs", type=int, default=4000, help="fine-tuning pairs (sampled, seeded)")
    parser.add_argument("--train-epochs", type=int, default=1)
    parser.add_argument("--train-seq-length", type=int, default=128, help="tokens per text while fine-tuning")
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--home", default=None, help="reuse the data home of an earlier run: its indexes are "
                                                     "unchanged, so nothing is embedded again")
    parser.add_argument("--embedder", default=None, help="a registered embedder (models:/<name>/<version>) to "
                                                         "use instead of fine-tuning one")
    parser.add_argument("--match", nargs="+", default=None, help="only the techniques whose label contains one "
                                                                 "of these")
    args = parser.parse_args()

    home = fresh_home(args.home)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pipelines.rag.finetune").setLevel(logging.INFO)  # its progress, step by step
    import torch

    from pipelines.rag import finetune
    from pipelines.rag.corpus import load_corpus
    from pipelines.rag.docstring_corpus import DEFAULT_PACKAGES, export
    from pipelines.rag.evaluation import load_questions

    packages = args.packages or list(DEFAULT_PACKAGES)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}")
    corpus = home / "corpora" / "docstrings"
    stats = export(packages, corpus)
    sets = {"paraphrased": load_questions(PARAPHRASED).questions, "known_item": load_questions(KNOWN_ITEM).questions}
    documents = stats["documents"]
    if args.max_docs:
        documents = prune_corpus(corpus, {q.source for qs in sets.values() for q in qs}, args.max_docs)
    for name, questions in sets.items():
        present = [q for q in questions if (corpus / q.source).is_file()]
        if len(present) < len(questions):
            print(f"  {name}: {len(questions) - len(present)} questions dropped, their document is not in the corpus")
        sets[name] = present
    print(f"Corpus: docstrings of {', '.join(packages)}: {documents} documents; questions: "
          f"{len(sets['paraphrased'])} paraphrased, {len(sets['known_item'])} known-item; data home {home}",
          flush=True)

    indexes: dict[str, dict] = {}
    rows: list[dict] = []

    def run_rows(index_label: str, base: dict, variants: list[tuple[str, str, dict | None]]) -> None:
        for label, mode, search in variants:
            if args.match and not any(m in label for m in args.match):
                continue
            config = config_for(base["instance"], corpus, strategy=base["strategy"], model=base["model"],
                                search=search, batch_size=args.batch_size)
            figures = measure(config, mode, sets)
            row = {"index": index_label, "technique": label, "mode": mode, "search": search or {}, **figures}
            rows.append(row)
            print(f"  {index_label:<28} {label:<34} paraphrased hit@5 {figures['paraphrased']['hit_rate']:.3f} "
                  f"MRR@5 {figures['paraphrased']['mrr']:.3f} | known-item hit@5 "
                  f"{figures['known_item']['hit_rate']:.3f} MRR@5 {figures['known_item']['mrr']:.3f} | p50 "
                  f"{figures['p50_ms']:.1f} ms p99 {figures['p99_ms']:.1f} ms", flush=True)

    def wrrf(weight: float) -> dict:
        return {"hybrid": "weighted_rrf", "text_weight": weight, "rrf_k": 60, "candidates": 50}

    modes = [("vector", "vector", None), ("BM25 alone (text)", "text", None),
             ("hybrid (LanceDB RRF, native)", "hybrid", None)]
    weighted = [(f"hybrid weighted RRF, BM25 x{w:g}", "hybrid", wrrf(w)) for w in (0.5, 1.0, 2.0)]
    one_per_doc = {"max_chunks_per_document": 1}
    per_document = [("vector, 1 chunk per document", "vector", one_per_doc),
                    ("hybrid (native), 1 chunk per document", "hybrid", one_per_doc),
                    *[(f"hybrid weighted RRF, BM25 x{w:g}, 1 chunk per document", "hybrid", {**wrrf(w), **one_per_doc})
                      for w in (1.0, 2.0)]]

    for label, strategy in (("structure chunker, MiniLM", "structure"), ("symbol chunker, MiniLM", "symbol")):
        base = {"instance": f"bench_{strategy}", "strategy": strategy, "model": None}
        indexes[label] = build_index(config_for(base["instance"], corpus, strategy=strategy,
                                                batch_size=args.batch_size))
        print(f"Index {label}: {indexes[label]['chunks']:,} chunks in {indexes[label]['seconds']:.0f} s", flush=True)
        run_rows(label, base, modes + weighted + per_document)

    if args.embedder:
        registered, trained, tune_s = {"uri": args.embedder}, {}, 0.0
    if not args.skip_finetune and not args.embedder:
        started = time.perf_counter()
        pairs = finetune.training_pairs(load_corpus(corpus, ["**/*.md"]), max_pairs=args.train_pairs)
        from pipelines.rag.embeddings import resolve_model_path

        trained = finetune.fine_tune(resolve_model_path(None), pairs, home / "finetune",
                                     epochs=args.train_epochs, batch_size=32,
                                     max_seq_length=args.train_seq_length)
        registered = finetune.register_embedder(Path(trained["model_path"]), "docstrings-minilm",
                                                params={"pairs": len(pairs), "epochs": args.train_epochs},
                                                metrics={"train_loss": trained["train_loss"]})
        shutil.rmtree(home / "finetune", ignore_errors=True)  # the index reads MLflow's copy, not this one
        tune_s = time.perf_counter() - started
        print(f"Fine-tuned on {len(pairs):,} pairs ({sum(p.kind == 'name' for p in pairs)} name, "
              f"{sum(p.kind == 'summary' for p in pairs)} summary): {trained['steps']} steps, loss "
              f"{trained['first_loss']:.3f} → {trained['train_loss']:.3f}, {tune_s:.0f} s; registered "
              f"{registered['uri']}", flush=True)
    if not args.skip_finetune or args.embedder:
        for label, strategy in (("symbol chunker, tuned MiniLM", "symbol"),):
            base = {"instance": f"bench_{strategy}_tuned", "strategy": strategy, "model": registered["uri"]}
            indexes[label] = build_index(config_for(base["instance"], corpus, strategy=strategy,
                                                    model=registered["uri"], batch_size=args.batch_size))
            indexes[label]["fine_tune"] = {**trained, "seconds": tune_s, "uri": registered["uri"]}
            print(f"Index {label}: {indexes[label]['chunks']:,} chunks in {indexes[label]['seconds']:.0f} s",
                  flush=True)
            run_rows(label, base, modes + weighted + per_document)

    print("\n| index | technique | paraphrased hit@5 | paraphrased MRR@5 | known-item hit@5 | known-item MRR@5 "
          "| p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['index']} | {r['technique']} | {r['paraphrased']['hit_rate']:.3f} | "
              f"{r['paraphrased']['mrr']:.3f} | {r['known_item']['hit_rate']:.3f} | {r['known_item']['mrr']:.3f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"documents": documents, "indexes": indexes, "rows": rows},
                                              indent=2, default=str))


if __name__ == "__main__":
    main()
