"""One world for the llm_eval integration test: a toy index, the real assistant (SmolLM2 through llama.cpp: no
conversion, about half the time of transformers) with its prompt seeded, all as YAML files, and a toy golden set."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from support.assistant_world import assistant_config, write_toy_index_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TOY_GOLDEN = """cases:
  - id: tea-temperature
    kind: answerable
    category: drinks
    question: At what temperature should green tea brew?
    source: tea.md
    reference: Green tea brews at 80 degrees for two minutes.
    facts: [["80 degrees", "80"]]
  - id: kite-wind
    kind: answerable
    category: outdoors
    question: How much wind does a kite need?
    source: kites.md
    reference: A kite needs steady wind of 10 to 30 km/h.
    facts: [["10 to 30", "10-30"]]
  - id: owls-quiet
    kind: answerable
    category: outdoors
    question: How do owls fly so quietly?
    source: owls.txt
    reference: Their feathers have soft fringes, so they fly almost silently.
    facts: [[soft fringes, fringes]]
  - id: capital-of-france
    kind: unanswerable
    category: off_corpus
    question: What is the capital of France?
"""


@dataclass
class EvalWorld:
    settings: object
    config: object
    golden: Path
    root: Path


@pytest.fixture(scope="session")
def eval_world(tmp_path_factory) -> EvalWorld:
    from pipelines.assistant import steps as assistant_steps
    from pipelines.core.settings import get_settings
    from pipelines.llm_eval.config import LlmEvalConfig
    from pipelines.rag.steps import run_once
    from pipelines.rag.versions import load_rag_config

    settings = get_settings()
    root = tmp_path_factory.mktemp("llm_eval")
    rag_yaml = write_toy_index_config(root, "evaltoy")
    run_once(load_rag_config(rag_yaml), "build", settings)
    assistant = assistant_config(rag_yaml, instance="evaltoy", prompt={"name": "evaltoy_answer"},
                                 generator={"backend": "llama_cpp"})
    assistant_steps.seed_prompt(assistant, settings)
    assistant_yaml = root / "evaltoy_assistant.yaml"
    assistant_yaml.write_text(yaml.safe_dump(assistant.model_dump(mode="json")))
    golden = root / "golden.yaml"
    golden.write_text(TOY_GOLDEN)
    config = LlmEvalConfig.model_validate({
        "template": "llm_eval", "instance": "evaltoy", "assistant": str(assistant_yaml), "golden_set": str(golden),
        "budgets": {"tokens_per_answer": 2000, "latency_p95_ms": 60_000}})
    return EvalWorld(settings, config, golden, root)
