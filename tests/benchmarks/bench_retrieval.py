"""Retrieval quality on paraphrased questions (issue 15): each technique measured alone, in one run.

The corpus is the docstrings of the installed airflow, feast, mlflow and peft packages
(``python -m pipelines.rag.docstring_corpus``), indexed by the real pipeline (``plan_index`` →
``embed_chunks`` → ``evaluate_index`` → ``publish_index``) into a fresh data home, once per chunker and
embedding model. Every row then asks both frozen question sets through ``pipelines.rag.steps.search``
(resolve the alias, embed the query, search; k=5) and reports

- hit@5 and MRR@5 on ``dags/evaluation/docstrings_paraphrased.yaml`` (written by hand, as users ask; the set the
  options were tried on), on ``dags/evaluation/docstrings_paraphrased_heldout.yaml`` (written blind by another
  writer after that, to see whether a choice generalises) and on ``dags/evaluation/docstrings_known_item.yaml``
  (docstring first sentences);
- the latency of each of those queries, p50 and p99.

Techniques: the search mode (vector, BM25 alone, LanceDB's hybrid = reciprocal rank fusion), Loopline's
weighted reciprocal rank fusion (``search.hybrid: weighted_rrf``) at several BM25 weights, chunking by code
symbol (``chunker.strategy: symbol``), and all-MiniLM-L6-v2 fine-tuned on (pseudo-query, passage) pairs made
from the corpus (``pipelines.rag.finetune``; never from the question sets), registered in MLflow and used as
``embedding.model: models:/<name>/<version>``.

Also each of these with ``search.max_chunks_per_document: 1`` (the 5 results from 5 documents), and with
``--rewrite`` the questions rewritten into search keywords by SmolLM2 (llama.cpp) before they are searched
(the generation's time is added to the query's latency).

Run: ``python tests/benchmarks/bench_retrieval.py`` (three embeddings of the whole export, about 12,000 chunks
each, 10-20 minutes apiece on 2 cores, plus fine-tuning on every pair, 20-60 minutes), or ``--max-docs 150``
(the documents the questions expect, plus others up to 150; about 20 minutes). ``--home`` re-uses an earlier
run's data home (an index whose corpus, chunker and model are unchanged is not embedded again), ``--embedder
models:/<name>/<version>`` an embedder registered before (``python -m pipelines.rag.finetune``),
``--chunkers``/``--tuned-chunker`` which indexes to build, ``--match`` picks techniques by label. ``--docs``
measures the options on the docs instance's own corpus and questions instead (a minute).
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
HELD_OUT = REPO / "dags" / "evaluation" / "docstrings_paraphrased_heldout.yaml"
KNOWN_ITEM = REPO / "dags" / "evaluation" / "docstrings_known_item.yaml"
DOCS_QUESTIONS = REPO / "dags" / "evaluation" / "docs_questions.yaml"
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
               search: dict | None = None, batch_size: int = 64, include: tuple[str, ...] = ("**/*.md",),
               questions: Path = PARAPHRASED):
    from pipelines.rag.config import RagIndexConfig

    return RagIndexConfig.model_validate({
        "template": "rag_index", "instance": instance,
        "corpus": {"path": str(corpus), "include": list(include)},
        "chunker": {"strategy": strategy},
        "embedding": {"model": model, "batch_size": batch_size},
        "search": search or {},
        "evaluation": {"questions": str(questions), "k": K, "modes": ["vector"]},
    })


ONE_PER_DOCUMENT = {"max_chunks_per_document": 1}


def weighted_rrf(weight: float) -> dict:
    return {"hybrid": "weighted_rrf", "text_weight": weight, "rrf_k": 60, "candidates": 50}


def techniques(weights: tuple[float, ...] = (0.5, 1.0, 2.0),
               per_document_weights: tuple[float, ...] = (1.0, 2.0)) -> list[tuple[str, str, dict | None]]:
    """(label, search mode, ``search:`` settings) of each row, in table order; weights of BM25 in weighted RRF."""
    return [("vector", "vector", None), ("BM25 alone (text)", "text", None),
            ("hybrid (LanceDB RRF, native)", "hybrid", None),
            *[(f"hybrid weighted RRF, BM25 x{w:g}", "hybrid", weighted_rrf(w)) for w in weights],
            ("vector, 1 chunk per document", "vector", ONE_PER_DOCUMENT),
            ("hybrid (native), 1 chunk per document", "hybrid", ONE_PER_DOCUMENT),
            *[(f"hybrid weighted RRF, BM25 x{w:g}, 1 chunk per document", "hybrid",
               {**weighted_rrf(w), **ONE_PER_DOCUMENT}) for w in per_document_weights]]


def measure_docs_instance(chunkers: list[str]) -> None:
    """The same options on the docs instance's own corpus (``docs/``) and question set (``docs_questions.yaml``)."""
    from pipelines.rag.evaluation import load_questions

    questions = {"docs": load_questions(DOCS_QUESTIONS).questions}
    for strategy in chunkers:
        def config(search: dict | None = None, strategy: str = strategy):
            return config_for(f"bench_docs_{strategy}", REPO / "docs", strategy=strategy, search=search,
                              include=("**/*.md", "**/*.html", "**/*.txt"), questions=DOCS_QUESTIONS)

        built = build_index(config())
        print(f"Index of docs/, {strategy} chunker: {built['chunks']:,} chunks in {built['seconds']:.0f} s")
        for label, mode, search in techniques(weights=(1.0,), per_document_weights=(1.0,)):
            figures = measure(config(search), mode, questions)
            print(f"  docs/, {strategy:<10} {label:<52} hit@5 {figures['docs']['hit_rate']:.3f} MRR@5 "
                  f"{figures['docs']['mrr']:.3f} | p50 {figures['p50_ms']:.1f} ms", flush=True)


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


REWRITE_PROMPT = (
    "You help search the API reference of Python libraries (Airflow, Feast, MLflow, PEFT). Rewrite the user's "
    "question as a short list of search keywords: the technical terms, class and function names that the "
    "reference documentation would use. Reply with the keywords only, on one line.")


def rewrite_queries(questions: list[str], max_new_tokens: int = 32) -> tuple[dict[str, str], dict[str, float]]:
    """Each question followed by SmolLM2's keywords for it (llama.cpp, greedy), and the milliseconds each took."""
    from pipelines.assistant import model as lm

    generator = lm.load_llama_cpp(str(lm.packaged_gguf()))
    rewritten, latencies = {}, {}
    for question in questions:
        generation = lm.generate(generator, [{"role": "system", "content": REWRITE_PROMPT},
                                             {"role": "user", "content": question}], max_new_tokens, threads=2)
        rewritten[question] = f"{question}\n{' '.join(generation.text.split())}"
        latencies[question] = generation.latency_ms
    return rewritten, latencies


def measure(config, mode: str, question_sets: dict, rewritten: dict[str, str] | None = None,
            extra_ms: dict[str, float] | None = None) -> dict:
    """hit@5 and MRR@5 per question set, and per-query latency, through ``rag_steps.search``.

    ``rewritten`` replaces a question by the text searched for it; ``extra_ms`` adds the time that took.
    """
    from pipelines.rag import steps as rag_steps
    from pipelines.rag.evaluation import score_rankings

    rag_steps.search(config, "warm-up query", k=K, mode=mode)
    result, latencies = {}, []
    for name, questions in question_sets.items():
        rankings = []
        for q in questions:
            query = (rewritten or {}).get(q.question, q.question)
            started = time.perf_counter()
            hits = rag_steps.search(config, query, k=K, mode=mode)
            latencies.append((time.perf_counter() - started) * 1000 + (extra_ms or {}).get(q.question, 0.0))
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
    parser.add_argument("--chunkers", nargs="+", choices=["structure", "symbol"], default=["structure", "symbol"],
                        help="an index of the plain MiniLM per chunker")
    parser.add_argument("--tuned-chunker", choices=["structure", "symbol"], default="structure",
                        help="the chunker of the fine-tuned embedder's index")
    parser.add_argument("--rewrite", action="store_true", help="also the questions rewritten into keywords by "
                                                              "SmolLM2 (llama.cpp), on the first chunker's index")
    parser.add_argument("--docs", action="store_true", help="only the docs instance's corpus (docs/) and question "
                                                           "set, per chunker, instead of the docstring corpus")
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

    if args.docs:
        measure_docs_instance(args.chunkers)
        return
    packages = args.packages or list(DEFAULT_PACKAGES)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}")
    corpus = home / "corpora" / "docstrings"
    stats = export(packages, corpus)
    sets = {"paraphrased": load_questions(PARAPHRASED).questions, "held_out": load_questions(HELD_OUT).questions,
            "known_item": load_questions(KNOWN_ITEM).questions}
    documents = stats["documents"]
    if args.max_docs:
        documents = prune_corpus(corpus, {q.source for qs in sets.values() for q in qs}, args.max_docs)
    for name, questions in sets.items():
        present = [q for q in questions if (corpus / q.source).is_file()]
        if len(present) < len(questions):
            print(f"  {name}: {len(questions) - len(present)} questions dropped, their document is not in the corpus")
        sets[name] = present
    print(f"Corpus: docstrings of {', '.join(packages)}: {documents} documents; questions: "
          f"{len(sets['paraphrased'])} paraphrased, {len(sets['held_out'])} held-out paraphrased, "
          f"{len(sets['known_item'])} known-item; data home {home}",
          flush=True)

    indexes: dict[str, dict] = {}
    rows: list[dict] = []

    def run_rows(index_label: str, base: dict, variants: list[tuple[str, str, dict | None]],
                 rewritten: dict[str, str] | None = None, extra_ms: dict[str, float] | None = None) -> None:
        for label, mode, search in variants:
            if args.match and not any(m in label for m in args.match):
                continue
            config = config_for(base["instance"], corpus, strategy=base["strategy"], model=base["model"],
                                search=search, batch_size=args.batch_size)
            figures = measure(config, mode, sets, rewritten, extra_ms)
            row = {"index": index_label, "technique": label, "mode": mode, "search": search or {}, **figures}
            rows.append(row)
            print(f"  {index_label:<28} {label:<34} paraphrased hit@5 {figures['paraphrased']['hit_rate']:.3f} "
                  f"MRR@5 {figures['paraphrased']['mrr']:.3f} | held-out hit@5 {figures['held_out']['hit_rate']:.3f} "
                  f"MRR@5 {figures['held_out']['mrr']:.3f} | known-item hit@5 "
                  f"{figures['known_item']['hit_rate']:.3f} MRR@5 {figures['known_item']['mrr']:.3f} | p50 "
                  f"{figures['p50_ms']:.1f} ms p99 {figures['p99_ms']:.1f} ms", flush=True)

    rewritten_rows = ("vector", "BM25 alone (text)", "hybrid weighted RRF, BM25 x1, 1 chunk per document")
    for strategy in args.chunkers:
        label = f"{strategy} chunker, MiniLM"
        base = {"instance": f"bench_{strategy}", "strategy": strategy, "model": None}
        indexes[label] = build_index(config_for(base["instance"], corpus, strategy=strategy,
                                                batch_size=args.batch_size))
        print(f"Index {label}: {indexes[label]['chunks']:,} chunks in {indexes[label]['seconds']:.0f} s", flush=True)
        run_rows(label, base, techniques())
        if args.rewrite and strategy == args.chunkers[0]:
            questions = [q.question for qs in sets.values() for q in qs]
            rewritten, generation_ms = rewrite_queries(questions)
            print(f"Rewrote {len(questions)} questions with SmolLM2 (llama.cpp): p50 "
                  f"{statistics.median(generation_ms.values()):.0f} ms; e.g. {rewritten[questions[0]]!r}", flush=True)
            run_rows(label, base, [(f"SmolLM2 keywords + {name}", mode, search) for name, mode, search in techniques()
                                   if name in rewritten_rows], rewritten, generation_ms)

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
        for label, strategy in ((f"{args.tuned_chunker} chunker, tuned MiniLM", args.tuned_chunker),):
            base = {"instance": f"bench_{strategy}_tuned", "strategy": strategy, "model": registered["uri"]}
            indexes[label] = build_index(config_for(base["instance"], corpus, strategy=strategy,
                                                    model=registered["uri"], batch_size=args.batch_size))
            indexes[label]["fine_tune"] = {**trained, "seconds": tune_s, "uri": registered["uri"]}
            print(f"Index {label}: {indexes[label]['chunks']:,} chunks in {indexes[label]['seconds']:.0f} s",
                  flush=True)
            run_rows(label, base, techniques())

    print("\n| index | technique | paraphrased hit@5 | MRR@5 | held-out hit@5 | MRR@5 | known-item hit@5 | MRR@5 "
          "| p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['index']} | {r['technique']} | {r['paraphrased']['hit_rate']:.3f} | "
              f"{r['paraphrased']['mrr']:.3f} | {r['held_out']['hit_rate']:.3f} | {r['held_out']['mrr']:.3f} | "
              f"{r['known_item']['hit_rate']:.3f} | {r['known_item']['mrr']:.3f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"documents": documents, "indexes": indexes, "rows": rows},
                                              indent=2, default=str))


if __name__ == "__main__":
    main()
