"""The llama_cpp backend end to end: the packaged GGUF file run by llama.cpp answers through the same answer
path as the transformers backend (the session's toy index, prompt and MLflow store), with real token counts,
and stops at max_new_tokens and the deadline. The model is loaded once per session (model.load_llama_cpp)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from pipelines.assistant.answer import answer
from support.assistant_world import assistant_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def llama_config(assistant_world):
    return assistant_config(assistant_world.rag_yaml, generator={"backend": "llama_cpp"})


@pytest.fixture(scope="module")
def llama_generator(assistant_world, llama_config):
    from pipelines.assistant import model

    prepared = model.prepare(llama_config.generator.base_model, assistant_world.settings, backend="llama_cpp")
    return model.load(str(prepared.path), backend="llama_cpp")


def test_the_check_questions_pass_on_llama_cpp(assistant_world, llama_config):
    import mlflow

    from pipelines.assistant import steps

    checks = steps.check_answers(llama_config, assistant_world.settings, now=DAY)
    good, bad = checks["answerable"], checks["off_corpus"]
    assert not good["refused"] and good["sources"][0]["doc_id"] == "kites.md"
    assert "10" in good["answer"] and "30" in good["answer"], good["answer"]
    assert good["model"].startswith("SmolLM2-135M-Instruct:") and good["model"].endswith(":llama_cpp")
    assert 0 < good["tokens_in"] <= 700 and 0 < good["tokens_out"] <= 48
    assert bad["refused"] and (bad["tokens_in"], bad["tokens_out"]) == (0, 0)
    mlflow.flush_trace_async_logging()  # get_trace(flush=True) flushes only when the trace is not there at all
    trace = mlflow.get_trace(good["trace_id"])
    root = next(span for span in trace.data.spans if span.name == "answer")
    assert root.attributes["loopline.backend"] == "llama_cpp"
    assert trace.info.token_usage["output_tokens"] == good["tokens_out"]


def test_prepare_generator_runs_the_gguf_without_converting(assistant_world, llama_config):
    from pipelines.assistant import steps

    info = steps.prepare_generator(llama_config, assistant_world.settings)
    assert info["backend"] == "llama_cpp" and info["converted"] is False
    assert info["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and info["saved_dtype"] == "Q4_1"
    assert info["parameters"] == assistant_world.generator["parameters"] == 134_515_008
    assert info["digest"] == assistant_world.generator["digest"], "the same GGUF file as the transformers backend"


def test_both_backends_see_the_same_prompt_tokens(assistant_world, llama_generator):
    from pipelines.assistant import model

    torch_generator = model.load(assistant_world.generator["path"])
    messages = [{"role": "system", "content": "Answer from the passages."},
                {"role": "user", "content": "[1] Green tea brews at 80 degrees.\n\nQuestion: How hot for green tea?"}]
    ids = torch_generator.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    assert llama_generator.tokenize(llama_generator.render(messages)) == ids["input_ids"]
    text = "Owls hunt at night; their feathers have soft fringes."
    assert llama_generator.count_tokens(text) == torch_generator.count_tokens(text)
    assert llama_generator.truncate(text, 4) == torch_generator.truncate(text, 4)


def test_max_new_tokens_and_the_deadline_stop_llama_cpp(llama_generator):
    from pipelines.assistant import model

    messages = [{"role": "user", "content": "Write a long story about a kite."}]
    short = model.generate(llama_generator, messages, 3)
    assert (short.tokens_out, short.stopped) == (3, "length") and short.tokens_in > 5
    late = model.generate(llama_generator, messages, 40, deadline=time.perf_counter())
    assert (late.tokens_out, late.stopped) == (1, "deadline") and late.first_token_ms is not None
    again = model.generate(llama_generator, messages, 3)
    assert again.text == short.text, "greedy: the same messages give the same answer"


def test_an_answer_on_llama_cpp_is_logged_like_any_other(assistant_world, llama_config):
    result = answer("At what temperature should green tea brew?", llama_config, assistant_world.settings, now=DAY)
    assert not result.refused and "80" in result.answer
    assert result.sources[0]["doc_id"] == "tea.md"
    assert result.first_token_ms and result.stopped in {"eos", "length"}
