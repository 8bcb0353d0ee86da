"""Assistant benchmark (``make bench``): the RAG assistant's answers on Loopline's docs, both backends, one run.

A fresh data home: a snapshot of ``docs/*.md`` indexed as the docs index is (``rag_index``, chunks of 1,000
characters, all-MiniLM-L6-v2), the champion prompt seeded from ``dags/prompts/docs_answer.yaml``, and the
docs assistant's settings (k 4, hybrid, 600 context tokens, 96 new tokens, one thread). Then, per question
of :data:`ANSWERABLE` and :data:`OFF_CORPUS`, side by side and in a rotating order (the machine is shared):

1. **the assistant path**, ``answer()`` with ``generator.backend: transformers`` (fp32): its ``generate``
   step's tokens/s against a **bare** ``model.generate`` of the same model object on the same rendered
   messages (read back from the trace's ``generate`` span), tokenized beforehand, the same thread count,
   greedy, the same ``max_new_tokens``; ratio of summed tokens over summed seconds (goal >= 0.90);
2. **per-answer latency**: ``retrieve``, ``assemble`` and ``generate`` are the trace's span durations, total
   is the answer's ``latency_ms`` (it also covers the checks, loading the prompt and writing the trace and
   the log); time to first token from the ``generate`` step's start and from the question's arrival;
   p50 / p95 over the generated answers;
3. **the llama_cpp backend**, ``answer()`` with ``generator.backend: llama_cpp`` (the GGUF file, Q4_1):
   tokens/s against transformers fp32 on the same questions (goal >= 3x), and the answer quality of each
   (goal: within 2 points). llama.cpp keeps the previous prompt's KV cache and reuses the shared prefix
   (system text and few-shot turns); a **cold** llama.cpp generation of the same messages with the cache
   emptied first is timed too, so the prefix reuse is not mistaken for raw speed.

**Quality**, in points (0-100): the share of questions answered right. An answerable question is right when
it is not declined, the expected document is among the answer's sources, and the answer contains each of
its fact groups (one of the alternatives, case-insensitive; the facts are the docs' own words, set from the
docs, not from the model's output). An off-corpus question is right when it is declined. With 16 questions
one question is 6.25 points.

Run: ``python tests/benchmarks/bench_assistant.py`` (about 6 minutes on 2 cores, most of it transformers
fp32); ``--questions 4`` for a quick look; ``--json PATH`` keeps every figure.
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
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Twelve of the docs index's frozen retrieval questions (dags/evaluation/docs_questions.yaml), none about
# the documents this benchmark's results are written into, with the facts the docs give as their answer.
ANSWERABLE = [
    ("Which environment variable moves the Feast online store to Redis?", "operations.md",
     [("LOOPLINE_FEAST_ONLINE_STORE",)]),
    ("What does make clean delete?", "operations.md", [("data home", "LOOPLINE_HOME", ".loopline")]),
    ("How do I log in to the Airflow UI and where is the admin password stored?", "operations.md",
     [("simple_auth_manager_passwords",)]),
    ("How do I retry a day that was quarantined after fixing its data?", "operations.md", [("clear",)]),
    ("How do I roll the retrieval index back to the previous version?", "rag.md", [("rollback",)]),
    ("How do I switch the vector store from LanceDB to a Weaviate server?", "rag.md",
     [("WEAVIATE_URL", "backend: weaviate", "index.backend")]),
    ("What is the feature_timestamp of a row of customer_daily_features?", "data-contract.md",
     [("23:59:59", "end of the day")]),
    ("What does the churned label mean in the labels table?", "data-contract.md", [("30 days",)]),
    ("Which feature views and feature service does Feast serve for the churn model?", "data-contract.md",
     [("churn_model_v1",)]),
    ("Which columns and types does the customers landing table have?", "data-contract.md", [("customer_id",)]),
    ("How does a YAML config file become an Airflow DAG, and what is the DAG id?", "architecture.md",
     [("instance",)]),
    ("Which Airflow timetable does the features template use, and which data interval does one run handle?",
     "architecture.md", [("CronDataIntervalTimetable",)]),
]
# Questions the docs do not answer (and must never quote: docs/ is the corpus).
OFF_CORPUS = [
    "Who painted the Mona Lisa?",
    "How many moons does Jupiter have?",
    "Which composer wrote the opera The Magic Flute?",
    "How long should risotto rice simmer?",
]


def fresh_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="loopline-bench-assistant-"))
    os.environ["LOOPLINE_HOME"] = str(home)
    from pipelines.core.settings import get_settings

    get_settings.cache_clear()
    return home


def build_world(home: Path, threads: int, max_new_tokens: int) -> dict:
    """Index a snapshot of docs/, prepare both generators, seed the prompt; the two assistant configs."""
    from pipelines.assistant import steps
    from pipelines.assistant.config import AssistantConfig
    from pipelines.core.settings import get_settings
    from pipelines.rag.steps import run_once
    from pipelines.rag.versions import load_rag_config

    settings = get_settings()
    corpus = home / "corpus"
    corpus.mkdir()
    for doc in sorted((REPO / "docs").glob("*.md")):
        shutil.copy(doc, corpus / doc.name)
    rag_yaml = home / "benchdocs_rag_index.yaml"
    rag_yaml.write_text("template: rag_index\ninstance: benchdocs\n"
                        f"corpus: {{path: {corpus}, include: ['**/*.md']}}\n"
                        "chunker: {size_chars: 1000, overlap_chars: 150}\n"
                        f"evaluation: {{questions: {REPO / 'dags/evaluation/docs_questions.yaml'}, k: 5}}\n")
    seconds = {}
    started = time.perf_counter()
    run_once(load_rag_config(rag_yaml), "build", settings)
    seconds["index"] = time.perf_counter() - started
    configs = {}
    for backend in ("transformers", "llama_cpp"):
        configs[backend] = AssistantConfig.model_validate({
            "template": "assistant", "instance": "benchdocs", "index": str(rag_yaml),
            "generator": {"backend": backend, "threads": threads, "max_new_tokens": max_new_tokens},
            "prompt": {"template_file": str(REPO / "dags/prompts/docs_answer.yaml")},
            "budgets": {"max_tokens_per_day": 100_000_000}})
        started = time.perf_counter()
        info = steps.prepare_generator(configs[backend], settings)
        seconds[f"prepare_{backend}"] = time.perf_counter() - started
        seconds[f"load_{backend}"] = info["load_seconds"]
    steps.seed_prompt(configs["transformers"], settings)
    return {"settings": settings, "configs": configs, "seconds": seconds}


def spans_of(trace_id: str) -> dict:
    """Span name → (start, end) in ms since the trace's root span started."""
    import mlflow

    trace = mlflow.get_trace(trace_id, flush=True)
    spans = {span.name: span for span in trace.data.spans}
    origin = spans["answer"].start_time_ns
    found = {name: ((s.start_time_ns - origin) / 1e6, (s.end_time_ns - origin) / 1e6) for name, s in spans.items()}
    generate = spans.get("generate")
    found["messages"] = generate.inputs["messages"] if generate else None
    found["generated"] = generate.outputs["content"] if generate else None
    return found


def ask(question: str, config, settings) -> dict:
    """One answer through the assistant path, with its split from the trace."""
    from pipelines.assistant.answer import answer

    result = answer(question, config, settings, origin="check")
    spans = spans_of(result.trace_id)
    row = {"answer": result.answer, "sources": [s["doc_id"] for s in result.sources], "refused": result.refused,
           "tokens_in": result.tokens_in, "tokens_out": result.tokens_out, "total_ms": result.latency_ms,
           "retrieve_ms": spans["retrieve"][1] - spans["retrieve"][0],
           "assemble_ms": spans["assemble"][1] - spans["assemble"][0], "messages": spans["messages"],
           "generated": spans["generated"],
           "first_token_ms": result.first_token_ms, "stopped": result.stopped}
    if "generate" in spans:
        row["generate_ms"] = spans["generate"][1] - spans["generate"][0]
        row["ttft_from_question_ms"] = spans["generate"][0] + (result.first_token_ms or 0)
    return row


def bare_generate(generator, messages: list[dict], max_new_tokens: int, threads: int) -> dict:
    """``model.generate`` alone: the messages tokenized beforehand, greedy, the same threads and limit."""
    import torch

    tokenizer, model = generator.tokenizer, generator.model
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            started = time.perf_counter()
            output = model.generate(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                                    max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                    pad_token_id=pad)
            seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous)
    new = output[0, encoded["input_ids"].shape[1]:]
    return {"tokens_out": int(new.shape[0]), "ms": seconds * 1000,
            "text": tokenizer.decode(new, skip_special_tokens=True).strip()}


def cold_llama(generator, messages: list[dict], max_new_tokens: int, threads: int) -> dict:
    """The llama_cpp backend's generate with its KV cache emptied first: no prompt prefix to reuse."""
    from pipelines.assistant import model

    generator.llm.reset()
    generator.cached_prefix = None
    generation = model.generate(generator, messages, max_new_tokens, threads=threads)
    return {"tokens_out": generation.tokens_out, "ms": generation.latency_ms,
            "first_token_ms": generation.first_token_ms, "text": generation.text}


def right(row: dict, expected: str | None, facts: list[tuple[str, ...]]) -> bool:
    if expected is None:
        return row["refused"]
    text = row["answer"].lower()
    return (not row["refused"] and expected in row["sources"]
            and all(any(word.lower() in text for word in group) for group in facts))


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0-1), linear between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rate(rows: list[dict], tokens: str = "tokens_out", ms: str = "generate_ms") -> float:
    total_ms = sum(r[ms] for r in rows)
    return sum(r[tokens] for r in rows) / (total_ms / 1000) if total_ms else float("nan")


def decode_rate(rows: list[dict], ms: str = "generate_ms") -> float:
    """Tokens after the first over the time after the first token (decoding without the prefill)."""
    tokens = sum(r["tokens_out"] - 1 for r in rows)
    seconds = sum(r[ms] - r["first_token_ms"] for r in rows) / 1000
    return tokens / seconds if seconds else float("nan")


def latency_table(rows: list[dict]) -> dict:
    table = {}
    for key in ("retrieve_ms", "assemble_ms", "generate_ms", "total_ms", "first_token_ms", "ttft_from_question_ms"):
        values = [r[key] for r in rows if r.get(key) is not None]
        table[key] = {"p50": pct(values, 0.5), "p95": pct(values, 0.95), "n": len(values)}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=len(ANSWERABLE), help="answerable questions to ask")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    home = fresh_home()
    started = time.perf_counter()
    world = build_world(home, args.threads, args.max_new_tokens)
    from pipelines.assistant import model

    settings, configs = world["settings"], world["configs"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}; threads {args.threads}, max_new_tokens {args.max_new_tokens}")
    print("set-up: " + ", ".join(f"{k} {v:.1f} s" for k, v in world["seconds"].items()))
    prepared = {b: model.prepare(configs[b].generator.base_model, settings, backend=b) for b in configs}
    transformers_model = model.load(str(prepared["transformers"].path), backend="transformers")
    llama_model = model.load(str(prepared["llama_cpp"].path), backend="llama_cpp")

    questions = [(q, doc, facts) for q, doc, facts in ANSWERABLE[:args.questions]] + [(q, None, []) for q in OFF_CORPUS]
    # Warm-up, untimed: the first answer of a process loads the embedding model, MLflow's tracing, torch kernels.
    for backend in configs:
        ask(questions[0][0], configs[backend], settings)

    results = []
    for number, (question, expected, facts) in enumerate(questions):
        row = {"question": question, "expected": expected}
        # Alternate which backend goes first; the bare generate follows the transformers answer (its messages).
        for side in ("transformers", "llama_cpp") if number % 2 == 0 else ("llama_cpp", "transformers"):
            row[side] = ask(question, configs[side], settings)
            if side == "transformers" and row["transformers"]["messages"]:
                messages = row["transformers"]["messages"]
                row["bare"] = bare_generate(transformers_model, messages, args.max_new_tokens, args.threads)
        if row["llama_cpp"]["messages"]:
            row["llama_cpp"]["prefix_tokens"] = llama_model.prompt_tokens(row["llama_cpp"]["messages"])[1]
            row["llama_cold"] = cold_llama(llama_model, row["llama_cpp"]["messages"], args.max_new_tokens,
                                           args.threads)
        for side in ("transformers", "llama_cpp"):
            row[side]["right"] = right(row[side], expected, facts)
        results.append(row)
        print(f"[{number + 1}/{len(questions)}] {question}", flush=True)
        for side in ("transformers", "llama_cpp"):
            one = row[side]
            made = "declined" if "generate_ms" not in one else f"{one['tokens_out']} tokens"
            print(f"    {side:<12} {made}, {one['total_ms']:.0f} ms, right={one['right']}: {one['answer'][:110]!r}",
                  flush=True)

    summary = summarize(results, args)
    summary["setup_seconds"] = world["seconds"]
    summary["wall_seconds"] = time.perf_counter() - started
    report(summary)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "results": results}, indent=2, default=str))
    shutil.rmtree(home, ignore_errors=True)


def summarize(results: list[dict], args) -> dict:
    generated = [r for r in results if "generate_ms" in r["transformers"] and "bare" in r]
    assistant_rows = [r["transformers"] for r in generated]
    bare_rows = [{"tokens_out": r["bare"]["tokens_out"], "generate_ms": r["bare"]["ms"]} for r in generated]
    llama_generated = [r for r in results if "generate_ms" in r["llama_cpp"]]
    both = [r for r in generated if r in llama_generated]
    answerable = [r for r in results if r["expected"]]
    off = [r for r in results if not r["expected"]]
    summary = {
        "questions": {"answerable": len(answerable), "off_corpus": len(off), "generated_transformers": len(generated),
                      "generated_llama_cpp": len(llama_generated)},
        "path_vs_bare": {
            "assistant_tokens_s": rate(assistant_rows), "bare_tokens_s": rate(bare_rows),
            "ratio": rate(assistant_rows) / rate(bare_rows),
            "same_tokens_out": sum(r["bare"]["tokens_out"] == r["transformers"]["tokens_out"] for r in generated),
            "same_text": sum(r["bare"]["text"] == r["transformers"]["generated"] for r in generated)},
        "latency": {side: latency_table([r[side] for r in results if "generate_ms" in r[side]])
                    for side in ("transformers", "llama_cpp")},
        "declined_total_ms": {side: statistics.median([r[side]["total_ms"] for r in results if r[side]["refused"]
                                                       and "generate_ms" not in r[side]] or [float("nan")])
                              for side in ("transformers", "llama_cpp")},
        "backends": {},
        "same_prompts": sum(r["transformers"]["messages"] == r["llama_cpp"]["messages"] for r in both),
        "same_tokens_in": sum(r["transformers"]["tokens_in"] == r["llama_cpp"]["tokens_in"] for r in both),
        "compared": len(both),
        "prompt_tokens_p50": pct([r["transformers"]["tokens_in"] for r in both], 0.5),
        "cached_prefix_tokens": sorted({r["llama_cpp"]["prefix_tokens"] for r in both}),
    }
    for side in ("transformers", "llama_cpp"):
        rows = [r[side] for r in both]
        summary["backends"][side] = {
            "tokens_s": rate(rows), "decode_tokens_s": decode_rate(rows),
            "tokens_out": sum(r["tokens_out"] for r in rows),
            "quality_points": 100 * sum(r[side]["right"] for r in results) / len(results),
            "answerable_right": sum(r[side]["right"] for r in answerable),
            "cites_expected": sum(r["expected"] in r[side]["sources"] and not r[side]["refused"]
                                  for r in answerable),
            "off_corpus_declined": sum(r[side]["right"] for r in off)}
    cold = [{"tokens_out": r["llama_cold"]["tokens_out"], "generate_ms": r["llama_cold"]["ms"],
             "first_token_ms": r["llama_cold"]["first_token_ms"]} for r in both]
    summary["backends"]["llama_cpp_cold"] = {"tokens_s": rate(cold), "decode_tokens_s": decode_rate(cold),
                                             "first_token_p50_ms": pct([c["first_token_ms"] for c in cold], 0.5)}
    b = summary["backends"]
    torch_rate, torch_decode = b["transformers"]["tokens_s"], b["transformers"]["decode_tokens_s"]
    summary["llama_vs_transformers"] = {
        "tokens_s": b["llama_cpp"]["tokens_s"] / torch_rate,
        "cold_tokens_s": b["llama_cpp_cold"]["tokens_s"] / torch_rate,
        "decode_tokens_s": b["llama_cpp"]["decode_tokens_s"] / torch_decode,
        "quality_points": b["llama_cpp"]["quality_points"] - b["transformers"]["quality_points"]}
    return summary


def report(s: dict) -> None:
    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    p = s["path_vs_bare"]
    print(f"\n(1) generate step, {s['questions']['generated_transformers']} generated answers, transformers fp32: "
          f"assistant path {p['assistant_tokens_s']:.2f} tokens/s, bare model.generate {p['bare_tokens_s']:.2f} "
          f"tokens/s: ratio {p['ratio']:.3f} (goal >= 0.90: {met(p['ratio'] >= 0.90)}); the same tokens in "
          f"{p['same_tokens_out']}, the same text in {p['same_text']} of {s['questions']['generated_transformers']}")
    print("\n(2) per generated answer, ms        p50 / p95")
    for side, table in s["latency"].items():
        print(f"    {side}: " + ", ".join(f"{k[:-3]} {v['p50']:.0f} / {v['p95']:.0f}" for k, v in table.items())
              + f" (n {table['total_ms']['n']})")
    print("    declined answers (no generation), median total: "
          + ", ".join(f"{k} {v:.0f} ms" for k, v in s["declined_total_ms"].items()))
    b, r = s["backends"], s["llama_vs_transformers"]
    print(f"\n(3) the same {s['compared']} generated questions (same prompts {s['same_prompts']}, same tokens in "
          f"{s['same_tokens_in']}; prompt tokens p50 {s['prompt_tokens_p50']:.0f}, of which llama.cpp keeps "
          f"{s['cached_prefix_tokens']} cached between questions):")
    for side in ("transformers", "llama_cpp", "llama_cpp_cold"):
        extra = (f", quality {b[side]['quality_points']:.1f} points (answerable right {b[side]['answerable_right']}/"
                 f"{s['questions']['answerable']}, cites the expected doc {b[side]['cites_expected']}, off-corpus "
                 f"declined {b[side]['off_corpus_declined']}/{s['questions']['off_corpus']})" if side in s["latency"]
                 else f", first token p50 {b[side]['first_token_p50_ms']:.0f} ms")
        print(f"    {side}: {b[side]['tokens_s']:.1f} tokens/s (decode {b[side]['decode_tokens_s']:.1f}){extra}")
    print(f"    llama_cpp / transformers: tokens/s {r['tokens_s']:.2f}x (goal >= 3: {met(r['tokens_s'] >= 3)}), "
          f"cold {r['cold_tokens_s']:.2f}x, decode {r['decode_tokens_s']:.2f}x; quality difference "
          f"{r['quality_points']:+.1f} points (goal within 2: {met(abs(r['quality_points']) <= 2)})")
    print(f"\nwall {s['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
