"""The assistant's test world: a toy rag_index config (the toy corpus) and an assistant config reading it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from support.toy_corpus import CORPUS, QUESTIONS


@dataclass
class AssistantWorld:
    settings: object
    config: object
    root: Path
    rag_yaml: Path
    generator: dict
    seeded: dict
    seconds: dict


def write_toy_index_config(root: Path, instance: str) -> Path:
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for name, text in CORPUS.items():
        (corpus / name).write_text(text)
    questions = root / "questions.yaml"
    questions.write_text("questions:\n" + "".join(f"  - question: {q}\n    source: {s}\n" for q, s in QUESTIONS))
    rag_yaml = root / f"{instance}_rag_index.yaml"
    rag_yaml.write_text(f"template: rag_index\ninstance: {instance}\ncorpus: {{path: {corpus}}}\n"
                        "chunker: {size_chars: 200, overlap_chars: 40}\n"
                        f"evaluation: {{questions: {questions}, k: 2, modes: [vector]}}\n")
    return rag_yaml


def assistant_config(rag_yaml: Path, **changes):
    from pipelines.assistant.config import AssistantConfig

    data = {"template": "assistant", "instance": "asktoy", "index": str(rag_yaml), "retry_delay_minutes": 0,
            "generator": {"max_new_tokens": 48}, "prompt": {"name": "asktoy_answer"},
            "check": {"answerable": "How much wind does a kite need?", "expected_source": "kites.md",
                      "off_corpus": "What is the capital of France?"}}
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return AssistantConfig.model_validate(data)
