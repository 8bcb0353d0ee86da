"""The query log: one file per answer where the drift check reads queries, and the daily token budget."""

from __future__ import annotations

from datetime import date

import pytest

from pipelines.assistant import query_log
from pipelines.core.errors import NotRetryable
from pipelines.core.settings import LooplineSettings
from pipelines.drift.rag import read_queries

pytestmark = pytest.mark.unit

DAY = date(2026, 11, 20)


@pytest.fixture()
def settings(tmp_path):
    return LooplineSettings(home=tmp_path / "home")


def row(assistant: str, tokens_in: int, tokens_out: int, query: str = "how?") -> dict:
    return {"query": query, "assistant": assistant, "tokens_in": tokens_in, "tokens_out": tokens_out}


def test_each_answer_is_its_own_file_in_the_drift_checks_folder(settings):
    path = query_log.write_row("docs", DAY, "tr-abc123", row("docs_assistant", 10, 5, "how do I [EMAIL]?"), settings)
    assert path == settings.data_home / "query_log" / "docs" / "ds=2026-11-20" / "tr-abc123.jsonl"
    assert path.read_text().count("\n") == 1
    assert read_queries("docs", [DAY], settings) == ["how do I [EMAIL]?"]
    assert [p.name for p in path.parent.iterdir()] == ["tr-abc123.jsonl"], "no temporary file left"


def test_tokens_are_summed_per_assistant_and_day(settings):
    query_log.write_row("docs", DAY, "t1", row("docs_assistant", 300, 40), settings)
    query_log.write_row("docs", DAY, "t2", row("docs_assistant", 0, 0), settings)  # a declined question
    query_log.write_row("docs", DAY, "t3", row("other_assistant", 1000, 1000), settings)
    query_log.write_row("docs", date(2026, 11, 19), "t4", row("docs_assistant", 999, 999), settings)
    query_log.log_folder("docs", DAY, settings).joinpath("queries.jsonl").write_text('{"query": "a"}\nnot json\n')
    assert query_log.tokens_used("docs", "docs_assistant", DAY, settings) == 340
    assert query_log.tokens_used("docs", "docs_assistant", date(2026, 11, 21), settings) == 0


def test_the_budget_refuses_once_spent(settings):
    query_log.write_row("docs", DAY, "t1", row("docs_assistant", 300, 40), settings)
    assert query_log.check_budget("docs", "docs_assistant", DAY, 341, settings) == 340
    with pytest.raises(query_log.BudgetExceeded) as caught:
        query_log.check_budget("docs", "docs_assistant", DAY, 340, settings)
    assert str(caught.value) == ("assistant docs_assistant used 340 tokens on 2026-11-20 (UTC), its daily budget is "
                                 "340 (budgets.max_tokens_per_day): try again tomorrow or raise the budget")
    assert isinstance(caught.value, NotRetryable)
    assert query_log.check_budget("docs", "docs_assistant", date(2026, 11, 21), 340, settings) == 0


def test_an_odd_trace_id_makes_a_safe_file_name(settings):
    path = query_log.write_row("docs", DAY, "../../evil id", row("a", 1, 1), settings)
    assert path.parent == query_log.log_folder("docs", DAY, settings) and path.name == "______evil_id.jsonl"
