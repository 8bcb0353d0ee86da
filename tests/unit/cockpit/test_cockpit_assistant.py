"""The Loopline page's assistant parts without a web server: the per-day accounting from the query log, a
failing source shown as an error, and the Ask tab's HTML and script."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import date, timedelta

import pytest

from pipelines import cockpit
from pipelines.assistant import query_log
from pipelines.core.settings import REPO_ROOT, LooplineSettings
from pipelines.templates import load_named

pytestmark = pytest.mark.unit

sys.path.insert(0, str(REPO_ROOT / "plugins"))
from loopline_ui.page import ASK_SCRIPT, render  # noqa: E402

DAY = date(2026, 11, 20)


@pytest.fixture()
def settings(tmp_path):
    return LooplineSettings(home=tmp_path / "home")


@pytest.fixture(scope="module")
def config():
    return load_named("docs_assistant", "assistant")


def _row(trace_id: str, tokens_in: int, tokens_out: int, latency_ms: float, *, refused: bool = False,
         origin: str = "user", assistant: str = "docs_assistant") -> dict:
    return {"query": "how?", "assistant": assistant, "origin": origin, "trace_id": trace_id, "refused": refused,
            "tokens_in": tokens_in, "tokens_out": tokens_out, "latency_ms": latency_ms}


def test_a_days_summary_counts_answers_tokens_latency_and_budget(settings):
    latencies = [900.0, 5000.0, 6000.0, 7000.0, 12000.0]
    for n, latency in enumerate(latencies):
        query_log.write_row("docs", DAY, f"t{n}", _row(f"t{n}", 500, 40, latency, refused=n == 0,
                                                       origin="check" if n == 4 else "user"), settings)
    query_log.write_row("docs", DAY, "other", _row("other", 9999, 9999, 1.0, assistant="other"), settings)
    query_log.write_row("docs", DAY - timedelta(days=1), "old", _row("old", 7, 7, 1.0), settings)
    query_log.log_folder("docs", DAY, settings).joinpath("junk.jsonl").write_text("not json\n")

    day = query_log.day_summary("docs", "docs_assistant", DAY, settings, max_tokens_per_day=10_000)
    assert day == {"day": "2026-11-20", "answers": 5, "refused": 1, "checks": 1, "tokens_in": 2500,
                   "tokens_out": 200, "tokens": 2700, "latency_p50_ms": 6000.0, "latency_p95_ms": 12000.0,
                   "budget_share": 0.27}
    # The budget's own sum and the page's agree.
    assert day["tokens"] == query_log.tokens_used("docs", "docs_assistant", DAY, settings)


def test_an_empty_day_has_no_latency_and_no_share_without_a_budget(settings):
    day = query_log.day_summary("docs", "docs_assistant", DAY, settings)
    assert day["answers"] == 0 and day["tokens"] == 0
    assert day["latency_p50_ms"] is None and day["latency_p95_ms"] is None and day["budget_share"] is None
    assert not (settings.data_home / "query_log").exists()  # reading creates nothing


def test_assistant_days_are_the_last_seven_newest_first(settings, config):
    query_log.write_row("docs", DAY, "a", _row("a", 100, 10, 2000.0), settings)
    query_log.write_row("docs", DAY - timedelta(days=6), "b", _row("b", 50, 5, 1000.0), settings)
    query_log.write_row("docs", DAY - timedelta(days=7), "c", _row("c", 1, 1, 1.0), settings)  # 8 days ago
    days = cockpit.assistant_days(config, settings, today=DAY)
    assert [d["day"] for d in days] == [(DAY - timedelta(days=n)).isoformat() for n in range(7)]
    assert [d["answers"] for d in days] == [1, 0, 0, 0, 0, 0, 1]
    assert days[0]["budget_share"] == pytest.approx(110 / 200_000)


def test_the_summary_has_thumbs_per_day_and_a_failing_feedback_source_is_an_error(settings, config, monkeypatch):
    query_log.write_row("docs", DAY, "a", _row("a", 100, 10, 2000.0), settings)
    monkeypatch.setattr(cockpit, "assistant_feedback", lambda *a, **k: {DAY.isoformat(): {"up": 2, "down": 1}})
    errors: list[str] = []
    entry = cockpit.assistant_summary(config, settings, errors, today=DAY)
    assert errors == []
    assert (entry["dag_id"], entry["max_tokens_per_day"]) == ("docs_assistant", 200_000)
    assert (entry["days"][0]["thumbs_up"], entry["days"][0]["thumbs_down"]) == (2, 1)
    assert (entry["days"][1]["thumbs_up"], entry["days"][1]["thumbs_down"]) == (0, 0)

    def unreachable(*args, **kwargs):
        raise ConnectionError("MLflow store http://mlflow:5000 does not answer")

    monkeypatch.setattr(cockpit, "assistant_feedback", unreachable)
    entry = cockpit.assistant_summary(config, settings, errors, today=DAY)
    assert errors == ["feedback on the traces of docs_assistant: ConnectionError: MLflow store http://mlflow:5000 "
                      "does not answer"]
    assert entry["days"][0]["answers"] == 1 and entry["days"][0]["thumbs_up"] is None  # the rest still shows


def test_an_unreadable_query_log_is_an_error_on_the_page_not_a_broken_page(settings, config):
    broken = config.model_copy(update={"index": "no_such_rag_index"})
    errors: list[str] = []
    entry = cockpit.assistant_summary(broken, settings, errors, today=DAY)
    assert entry["days"] == [] and len(errors) == 1
    assert errors[0].startswith("query log of docs_assistant: AssistantConfigError: the assistant's index "
                                "'no_such_rag_index' has no config")
    summary = {"data_home": "/h", "mlflow": "sqlite:///x", "errors": [], "use_cases": [{
        "name": "docs", "dags": [], "models": [], "drift": [], "indexes": [], "runs": [], "errors": errors,
        "assistants": [entry]}]}
    html = render(summary)
    assert "No accounting: the query log could not be read." in html and "AssistantConfigError" in html


def test_gather_has_the_docs_assistants_accounting(settings):
    query_log.write_row("docs", DAY, "a", _row("a", 100, 10, 2000.0), settings)
    summary = cockpit.gather(settings, allowed_dag_ids={"docs_assistant", "churn_training"}, environ={}, today=DAY)
    docs = next(c for c in summary["use_cases"] if c["name"] == "docs")
    (assistant,) = docs["assistants"]
    assert assistant["dag_id"] == "docs_assistant" and len(assistant["days"]) == cockpit.ASSISTANT_DAYS
    assert assistant["days"][0]["answers"] == 1
    assert assistant["days"][0]["thumbs_up"] == 0  # no MLflow store yet: no feedback, and nothing created
    assert not (settings.data_home / "mlflow").exists()
    assert next(c for c in summary["use_cases"] if c["name"] == "churn")["assistants"] == []


def _accounting_summary() -> dict:
    days = [{"day": "2026-11-20", "answers": 12, "refused": 3, "checks": 2, "tokens_in": 6543, "tokens_out": 321,
             "tokens": 6864, "latency_p50_ms": 5497.4, "latency_p95_ms": 12950.0, "budget_share": 0.03432,
             "thumbs_up": 4, "thumbs_down": 1},
            {"day": "2026-11-19", "answers": 0, "refused": 0, "checks": 0, "tokens_in": 0, "tokens_out": 0,
             "tokens": 0, "latency_p50_ms": None, "latency_p95_ms": None, "budget_share": 0.0,
             "thumbs_up": None, "thumbs_down": None}]
    return {"data_home": "/h", "mlflow": "sqlite:///x", "errors": [], "use_cases": [{
        "name": "docs", "dags": [{"dag_id": "docs_assistant", "template": "assistant", "description": ""}],
        "models": [], "drift": [], "indexes": [], "runs": [], "errors": [],
        "assistants": [{"dag_id": "docs_assistant", "experiment": "docs_assistant", "max_tokens_per_day": 200_000,
                        "days": days}]}]}


def test_the_page_shows_the_accounting_per_day():
    html = render(_accounting_summary(), base="/loopline", user="admin")
    table = re.search(r'<table class="assistant-days" data-assistant="docs_assistant">.*?</table>', html).group(0)
    first = re.search(r'<tr data-day="2026-11-20">(.*?)</tr>', table).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", first)
    assert cells == ["2026-11-20", '12 <span class="muted">(2 checks)</span>', "3", "6,543", "321", "5,497 ms",
                     "12,950 ms", "3.4%", "4", "1"]
    second = re.findall(r"<td[^>]*>(.*?)</td>", re.search(r'<tr data-day="2026-11-19">(.*?)</tr>', table).group(1))
    assert second == ["2026-11-19", "0", "0", "0", "0", "–", "–", "0.0%", "–", "–"]
    assert "daily budget 200,000 tokens" in html


def test_the_ask_tab_has_a_question_box_thumbs_and_a_same_origin_script():
    html = render(_accounting_summary(), base="/loopline", user="admin")
    assert '<a role="tab" href="#ask" id="tab-ask">Ask</a>' in html
    assert '<section class="usecase" id="ask" data-assistant="docs_assistant">' in html
    for element in ('id="ask-form"', '<textarea id="ask-question"', '<button type="submit" id="ask-button">Ask',
                    'id="ask-sources"', 'id="ask-meta"', 'id="thumb-up" data-up="true"',
                    'id="thumb-down" data-up="false"', 'id="feedback-status"', 'id="ask-error"'):
        assert element in html, element
    assert '<body data-base="/loopline">' in html
    # Before the Overview: the Ask panel shows on #ask, and #ask:target hides the overview (its next sibling).
    assert html.index('id="ask"') < html.index('<div id="overview">')
    # No CDN, no framework: one inline script, posting to this app with the login cookie.
    assert html.count("<script") == 1 and "<script src" not in html and "http" not in ASK_SCRIPT
    assert 'credentials: "same-origin"' in ASK_SCRIPT
    assert 'post("/api/ask"' in ASK_SCRIPT and 'post("/api/feedback"' in ASK_SCRIPT
    assert "Thanks: recorded on trace ${traceId}" in ASK_SCRIPT
    assert "innerHTML" not in ASK_SCRIPT  # what comes back is written as text


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: the browser tests run the script")
def test_the_ask_script_is_valid_javascript(tmp_path):
    script = tmp_path / "ask.js"
    script.write_text(ASK_SCRIPT)
    checked = subprocess.run(["node", "--check", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
