"""LLM evaluation benchmark (``make bench``): wall time per golden case, and what scoring adds to answering.

A fresh data home: Loopline's ``docs/`` (the canary page of the safety suites included) indexed as the docs
index is, the champion prompt seeded from ``dags/prompts/docs_answer.yaml``, the docs assistant's settings
(SmolLM2-135M-Instruct Q4_1 on llama.cpp, one thread, k 4, hybrid). Then one evaluation of the golden set
(``dags/evaluation/docs_golden.yaml``; ``--cases N`` takes N in turn from each category) through
``pipelines.llm_eval.steps.evaluate_answers``, which times its two phases side by side in the same run:

1. **answering**: every case asked through the real assistant (one MLflow trace each);
2. **scoring**: ``mlflow.genai.evaluate`` with the code scorers (MiniLM groundedness included) over those
   traces.

Printed: seconds per case (answering, scoring, both), the ratio (answering + scoring) / answering (goal
<= 1.25), and the run's metrics (quality and safety), to record in docs/benchmarks.md.

Run: ``python tests/benchmarks/bench_llm_eval.py`` (all 142 cases: about 10 minutes on 2 quiet cores);
``--cases 30`` for a quicker look; ``--json PATH`` keeps every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

GOAL_OVERHEAD = 1.25


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=None, help="ask at most N cases (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this file")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="loopline-bench-llm-eval-"))
    os.environ["LOOPLINE_HOME"] = str(home)
    import yaml

    from pipelines.assistant import steps as assistant_steps
    from pipelines.assistant.config import AssistantConfig
    from pipelines.core.settings import get_settings
    from pipelines.llm_eval import steps
    from pipelines.llm_eval.config import LlmEvalConfig
    from pipelines.rag.steps import run_once
    from pipelines.rag.versions import load_rag_config
    from pipelines.templates import load_named

    get_settings.cache_clear()
    settings = get_settings()
    corpus = home / "corpus"
    shutil.copytree(REPO / "docs", corpus, ignore=shutil.ignore_patterns("images"))
    rag_yaml = home / "benchdocs_rag_index.yaml"
    rag_yaml.write_text("template: rag_index\ninstance: benchdocs\n"
                        f"corpus: {{path: {corpus}, include: ['**/*.md']}}\n"
                        "chunker: {size_chars: 1000, overlap_chars: 150}\n"
                        f"evaluation: {{questions: {REPO / 'dags/evaluation/docs_questions.yaml'}, k: 5}}\n")
    started = time.perf_counter()
    run_once(load_rag_config(rag_yaml), "build", settings)
    index_s = time.perf_counter() - started

    docs = load_named("docs_assistant").model_dump(mode="json", exclude={"index", "instance", "check"})
    docs.update(instance="benchdocs", index=str(rag_yaml), check=None)
    docs["prompt"]["template_file"] = str(REPO / docs["prompt"]["template_file"])
    docs["budgets"]["max_tokens_per_day"] = 100_000_000  # the benchmark is not a user of the day's budget
    assistant = AssistantConfig.model_validate(docs)
    assistant_yaml = home / "benchdocs_assistant.yaml"
    assistant_yaml.write_text(yaml.safe_dump(assistant.model_dump(mode="json")))
    assistant_steps.prepare_generator(assistant, settings)
    assistant_steps.seed_prompt(assistant, settings)

    data = load_named("docs_llm_eval").model_dump(mode="json")
    data.update(instance="benchdocs", assistant=str(assistant_yaml),
                golden_set=str(REPO / "dags/evaluation/docs_golden.yaml"))
    config = LlmEvalConfig.model_validate(data)
    evaluation = steps.evaluate_answers(config, settings, limit=args.cases)
    metrics = evaluation["metrics"]
    answering, scoring = metrics["answer_seconds"], metrics["scoring_seconds"]
    cases = evaluation["cases"]
    overhead = (answering + scoring) / answering
    figures = {"cases": cases, "index_seconds": round(index_s, 1), "answer_seconds": answering,
               "scoring_seconds": scoring, "seconds_per_case": round((answering + scoring) / cases, 2),
               "answer_seconds_per_case": round(answering / cases, 2),
               "scoring_seconds_per_case": round(scoring / cases, 3), "scoring_overhead": round(overhead, 3),
               "golden_digest": evaluation["golden_digest"], "metrics": metrics,
               "metrics_by_category": evaluation["metrics_by_category"], "load_average": os.getloadavg()}
    print(f"Golden set {evaluation['golden_digest'][:12]}: {cases} cases; docs indexed in {index_s:.0f} s")
    print(f"Per case: answering {figures['answer_seconds_per_case']:.2f} s, scoring "
          f"{figures['scoring_seconds_per_case']:.3f} s, both {figures['seconds_per_case']:.2f} s")
    print(f"(answering + scoring) / answering = {overhead:.3f} (goal <= {GOAL_OVERHEAD}): "
          f"{'met' if overhead <= GOAL_OVERHEAD else 'NOT met'}")
    for name, value in metrics.items():
        print(f"  {name:<26} {'–' if value is None else value}")
    print(f"Load average during the run: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
