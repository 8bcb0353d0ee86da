"""Does the tuned adapter answer better? Answer metrics of SmolLM2 alone against SmolLM2 + a registered adapter.

The docs assistant (``dags/configs/docs_assistant.yaml``) answers the answerable cases of the golden set
(``dags/evaluation/docs_golden.yaml``) twice, through the llm_eval pipeline's own functions
(``pipelines.llm_eval.steps.evaluate_answers``, the same code scorers, one MLflow evaluation run each): once
with the base model alone and once with the adapter ``--model-name@--alias`` on it. Both sides run on
transformers (float32), so the difference is the adapter's and not the backend's. The gate's verdict
(``pipelines.llm_eval.gate.judge`` with ``docs_llm_eval``'s gate) is printed, as the llm_eval DAG would decide.

What it needs under ``$LOOPLINE_HOME``: a registered adapter (run ``assistant_lora_tune`` first: its version
is ``@challenger``), a live docs index (built here if there is none, as ``docs_rag_index`` builds it) and the
prompt (seeded here if missing). The safety ceilings of the gate are left out of the verdict: answerable cases
do not measure attacks or canary leaks.

Run: ``PYTHONPATH=. python tests/benchmarks/bench_lora_answers.py --limit 16`` (16 cases x 2 sides took 7 min
52 s on the shared 2-core machine, scoring included; figures in docs/benchmarks.md); without ``--limit`` every
answerable case (40).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
HEADLINE = ("hit_at_k", "mrr", "fact_recall", "token_f1", "rouge_l", "groundedness", "hallucination_rate",
            "citation_precision", "refusal_accuracy", "over_refusal_rate", "tokens_mean", "latency_p95_ms")


def prepare_world(settings) -> None:
    """A live docs index and the seeded prompt, as the docs assistant needs them."""
    from pipelines.assistant import steps as assistant_steps
    from pipelines.rag import versions
    from pipelines.rag.steps import run_once
    from pipelines.templates import load_named

    rag = load_named("docs_rag_index", "rag_index")
    if not versions.VersionCatalog(versions.catalog_path(rag, settings)).live_versions():
        started = time.perf_counter()
        run_once(rag, "build", settings)
        print(f"built the docs index in {time.perf_counter() - started:.0f} s")
    assistant_steps.seed_prompt(load_named("docs_assistant", "assistant"), settings)


def answerable_golden(folder: Path) -> Path:
    """The golden set's answerable cases only, as a golden-set file of their own."""
    raw = yaml.safe_load((REPO / "dags" / "evaluation" / "docs_golden.yaml").read_text())
    raw["cases"] = [case for case in raw["cases"] if case.get("kind") == "answerable"]
    path = folder / "docs_golden_answerable.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


def eval_config(folder: Path, golden: Path, side: str, adapter: dict | None):
    """docs_llm_eval's config answering with docs_assistant on transformers, with or without the adapter."""
    from pipelines.llm_eval.config import LlmEvalConfig

    assistant = yaml.safe_load((REPO / "dags" / "configs" / "docs_assistant.yaml").read_text())
    assistant["instance"] = f"lorabench{side}"
    assistant["generator"] = {**assistant["generator"], "backend": "transformers", "adapter": adapter}
    assistant_yaml = folder / f"lorabench{side}_assistant.yaml"
    assistant_yaml.write_text(yaml.safe_dump(assistant, sort_keys=False))
    raw = yaml.safe_load((REPO / "dags" / "configs" / "docs_llm_eval.yaml").read_text())
    return LlmEvalConfig.model_validate({**raw, "instance": f"lorabench{side}", "assistant": str(assistant_yaml),
                                         "golden_set": str(golden)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="answer at most this many cases (in turn from "
                                                                 "each category); default: all answerable")
    parser.add_argument("--model-name", default="assistant_adapter")
    parser.add_argument("--alias", default="challenger", help="the adapter version's alias (challenger: what "
                                                              "lora_tune hands the gate)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # each case's progress

    from pipelines.core.settings import get_settings
    from pipelines.llm_eval.gate import judge
    from pipelines.llm_eval.steps import evaluate_answers

    settings = get_settings()
    prepare_world(settings)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        golden = answerable_golden(folder)
        sides = {"base": None, "tuned": {"model_name": args.model_name, "alias": args.alias}}
        configs = {side: eval_config(folder, golden, side, adapter) for side, adapter in sides.items()}
        for side, config in configs.items():
            started = time.perf_counter()
            key = f"lorabench-{side}-{int(time.time())}"
            results[side] = dict(evaluate_answers(config, settings, limit=args.limit, run_key=key))
            results[side]["seconds"] = round(time.perf_counter() - started, 1)
    base, tuned = results["base"], results["tuned"]
    print(f"== {base['cases']} answerable cases of docs_golden.yaml, docs index {base['index_version']}, "
          f"{base['model']}; adapter {args.model_name}@{args.alias}")
    print(f"  {'metric':22}{'base':>10}{'+ adapter':>12}{'change':>10}")
    for name in HEADLINE:
        a, b = base["metrics"].get(name), tuned["metrics"].get(name)
        if a is None or b is None:
            continue
        print(f"  {name:22}{a:>10.3f}{b:>12.3f}{b - a:>+10.3f}")
    print(f"  seconds (answer + score) {base['seconds']:>8.0f}{tuned['seconds']:>12.0f}")
    gate = configs["tuned"].gate
    gate = gate.model_copy(update={"ceilings": {k: v for k, v in gate.ceilings.items()
                                                if base["metrics"].get(k) is not None}})
    verdict = judge(tuned["metrics"], base["metrics"], tuned["metrics_by_category"], base["metrics_by_category"],
                    gate)
    failed = [c.reason for c in verdict.checks if not c.passed]
    print(f"  docs_llm_eval's gate would {'promote' if verdict.passed else 'block'} the adapter"
          + (f": {'; '.join(failed)}" if failed else ""))
    print(json.dumps({side: {"run_id": r["run_id"], "metrics": r["metrics"]} for side, r in results.items()}))


if __name__ == "__main__":
    main()
