"""The assistant config: the docs instance loads, every field is described and bounded, typos are refused."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from pipelines.assistant.config import AssistantConfig
from pipelines.templates import PipelineConfigError, load_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
DOCS = REPO / "dags" / "configs" / "docs_assistant.yaml"
MINIMAL = {"template": "assistant", "instance": "docs"}


def test_the_docs_assistant_config_loads():
    config = load_config(DOCS, "assistant")
    assert isinstance(config, AssistantConfig)
    assert config.dag_id == "docs_assistant" and config.experiment_name == "docs_assistant"
    assert config.index == "docs_rag_index" and config.generator.base_model == "smollm2"
    assert (config.generator.threads, config.prompt.alias) == (1, "champion")
    assert config.generator.backend == "llama_cpp", "the docs instance runs the GGUF in llama.cpp (its comment: why)"
    assert config.check and config.check.expected_source == "rag.md"
    adapter = config.generator.adapter
    assert adapter and (adapter.model_name, adapter.alias, adapter.when_missing) == (
        "assistant_adapter", "champion", "base"), "the base model answers until lora_tune's gate makes a champion"


def test_defaults_are_the_issue_s():
    config = AssistantConfig.model_validate(MINIMAL)
    assert config.generator.adapter is None and config.generator.max_new_tokens == 96
    assert config.prompt.name == "docs_assistant_answer"
    assert config.prompt.template_file == "dags/prompts/docs_answer.yaml"
    assert (config.retrieval.k, config.retrieval.mode, config.retrieval.max_context_tokens) == (4, "hybrid", 600)
    assert config.budgets.max_question_chars == 2000
    assert config.schedule is None


def _models(model: type[BaseModel]):
    yield model
    for info in model.model_fields.values():
        for candidate in typing.get_args(info.annotation) or (info.annotation,):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                yield from _models(candidate)


def test_every_field_says_what_it_does_and_numbers_are_bounded():
    problems = []
    inherited = {"instance", "description", "owner", "start_date", "retries", "retry_delay_minutes",
                 "task_timeout_minutes", "tags"}
    for model in set(_models(AssistantConfig)):
        schema = model.model_json_schema()
        for name, prop in schema["properties"].items():
            if model is AssistantConfig and name in inherited | {"template"}:
                continue
            if not prop.get("description"):
                problems.append(f"{model.__name__}.{name}: no description")
            if prop.get("type") in ("integer", "number") and not ({"minimum", "exclusiveMinimum"} & set(prop)
                                                                   and {"maximum", "exclusiveMaximum"} & set(prop)):
                problems.append(f"{model.__name__}.{name}: a number without bounds")
    assert problems == []


@pytest.mark.parametrize(("change", "field"), [
    ({"retrieval": {"k": 0}}, "retrieval.k"),
    ({"retrieval": {"mode": "text"}}, "retrieval.mode"),
    ({"retrieval": {"min_overlap": 1.5}}, "retrieval.min_overlap"),
    ({"generator": {"threads": 0}}, "generator.threads"),
    ({"generator": {"max_new_tokens": 100_000}}, "generator.max_new_tokens"),
    ({"generator": {"adapter": {"model_name": "Bad Name"}}}, "generator.adapter.model_name"),
    ({"budgets": {"max_question_chars": 0}}, "budgets.max_question_chars"),
    ({"budgets": {"max_tokens_per_day": 0}}, "budgets.max_tokens_per_day"),
    ({"prompt": {"alias": "has space"}}, "prompt.alias"),
    ({"retreival": {"k": 4}}, "retreival"),
])
def test_bad_values_and_typos_are_refused(change, field):
    with pytest.raises(ValidationError) as caught:
        AssistantConfig.model_validate({**MINIMAL, **change})
    assert field in {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_the_check_questions_must_differ():
    with pytest.raises(ValidationError, match="the same question"):
        AssistantConfig.model_validate({**MINIMAL, "check": {"answerable": "What is it?", "off_corpus": "What is it?"}})


def test_a_yaml_typo_is_a_config_error_naming_the_field(tmp_path):
    path = tmp_path / "x_assistant.yaml"
    path.write_text(DOCS.read_text().replace("max_new_tokens: 96", "max_new_token: 96"))
    with pytest.raises(PipelineConfigError, match="generator.max_new_token: unknown field"):
        load_config(path)


def test_the_backend_defaults_to_transformers_and_llama_cpp_runs_the_packaged_gguf():
    assert AssistantConfig.model_validate(MINIMAL).generator.backend == "transformers"
    config = AssistantConfig.model_validate({**MINIMAL, "generator": {"backend": "llama_cpp"}})
    assert (config.generator.backend, config.generator.base_model) == ("llama_cpp", "smollm2")


@pytest.mark.parametrize(("generator", "message"), [
    ({"backend": "llama.cpp"}, "Input should be 'transformers' or 'llama_cpp'"),
    ({"backend": "llama_cpp", "base_model": "home:models/my-llm"},
     "generator.backend llama_cpp runs a GGUF file, and base_model 'home:models/my-llm' is a folder: use "
     "base_model: smollm2 (the packaged GGUF), or backend: transformers"),
    ({"backend": "llama_cpp", "adapter": {"model_name": "docs_lora"}},
     "generator.adapter docs_lora@champion needs backend: transformers"),
])
def test_a_backend_that_cannot_run_the_model_is_refused(generator, message):
    with pytest.raises(ValidationError, match="generator") as caught:
        AssistantConfig.model_validate({**MINIMAL, "generator": generator})
    assert message in str(caught.value)


def test_a_yaml_with_llama_cpp_and_an_adapter_is_a_config_error(tmp_path):
    path = tmp_path / "x_assistant.yaml"
    path.write_text(DOCS.read_text().replace("when_missing: base", "when_missing: fail"))
    with pytest.raises(PipelineConfigError, match="needs backend: transformers"):
        load_config(path)


def test_the_model_module_refuses_what_llama_cpp_cannot_run(monkeypatch):
    import sys

    from pipelines.assistant import model

    with pytest.raises(model.GeneratorUnavailable, match="base_model '/models/x' is a folder"):
        model.prepare("/models/x", backend="llama_cpp")
    with pytest.raises(model.GeneratorUnavailable, match="needs generator.backend: transformers"):
        model.load("/any/file.gguf", "/adapters/v1", backend="llama_cpp")
    with pytest.raises(model.GeneratorUnavailable, match="'vllm' is not one of transformers, llama_cpp"):
        model.load("/any/folder", backend="vllm")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    with pytest.raises(model.GeneratorUnavailable, match="pip install llama-cpp-python==0.3.36. .make install does"):
        model.load("/any/file.gguf", backend="llama_cpp")
