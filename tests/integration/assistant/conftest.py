"""One world for the assistant's integration tests: the real SmolLM2 model converted once per session, a small
index built from the toy corpus, and the prompt seeded in the session's MLflow store."""

from __future__ import annotations

import os
import time

import pytest

from support.assistant_world import AssistantWorld, assistant_config, write_toy_index_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def assistant_world(tmp_path_factory) -> AssistantWorld:
    from pipelines.assistant import steps
    from pipelines.core.settings import get_settings
    from pipelines.rag.steps import run_once
    from pipelines.rag.versions import load_rag_config

    settings = get_settings()
    root = tmp_path_factory.mktemp("assistant")
    rag_yaml = write_toy_index_config(root, "asktoy")
    seconds = {}
    started = time.perf_counter()
    run_once(load_rag_config(rag_yaml), "build", settings)
    seconds["index"] = time.perf_counter() - started
    config = assistant_config(rag_yaml)
    started = time.perf_counter()
    generator = steps.prepare_generator(config, settings)
    seconds["prepare_generator"] = time.perf_counter() - started
    seeded = steps.seed_prompt(config, settings)
    return AssistantWorld(settings, config, root, rag_yaml, generator, seeded, seconds)
