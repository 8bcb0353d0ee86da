"""A person asks the docs a question on the Loopline page's *Ask* tab, inside the Airflow UI, in headless
Chromium: log in, open Loopline, the Ask tab, ask, read the answer and its sources, press thumbs up, see the
confirmation; the thumb is then on the answer's MLflow trace, from the logged-in user.

The docs assistant runs inside Airflow's api-server for real (SmolLM2, the champion prompt, the live ``docs``
index), on the world ``ask_world`` prepares (two documents indexed; see ``conftest.py``). About a minute more
than the other browser tests: the world is built while they run, and the first answer loads the models.
"""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.integration]

QUESTION = "What does make clean delete?"  # answered by operations.md, one of the two indexed documents
ANSWER_TIMEOUT_MS = 180_000  # a fresh api-server loads the embedding model, the generator and MLflow first


def test_ask_the_docs_on_the_loopline_page_and_give_a_thumb(page, airflow, ask_world, login, shoot):
    from playwright.sync_api import expect

    login(page, airflow, "/dags")
    page.get_by_role("link", name="Loopline").first.click()
    page.wait_for_url(re.compile(r".*/plugin/loopline"))
    frame = page.frame_locator("iframe")
    frame.get_by_role("tab", name="Ask").click()
    box = frame.locator("#ask-question")
    box.wait_for()
    expect(frame.locator("#overview")).to_be_hidden()  # the tab shows the Ask panel alone

    box.fill("")
    frame.get_by_role("button", name="Ask", exact=True).click()
    error = frame.locator("#ask-error")
    error.filter(has_text="the question is empty").wait_for()  # the server's message, shown as it came
    assert error.inner_text() == "error: the question is empty: ask something about the documentation"

    box.fill(QUESTION)
    frame.get_by_role("button", name="Ask", exact=True).click()
    result = frame.locator("#ask-result")
    result.wait_for(state="visible", timeout=ANSWER_TIMEOUT_MS)
    assert error.inner_text() == ""
    answer = frame.locator("#ask-answer").inner_text().strip()
    sources = frame.locator("#ask-sources li").all_inner_texts()
    meta = frame.locator("#ask-meta").inner_text()
    assert answer and "I don't know" not in answer, answer
    assert any(s.startswith("operations.md — ") for s in sources), sources
    assert re.search(r"Tokens: \d+ in, \d+ out · latency [\d,]+ ms · prompt v1 · index "
                     + re.escape(ask_world["live_version"]), meta), meta
    trace_id = result.get_attribute("data-trace-id")
    assert trace_id and trace_id.startswith("tr-") and meta.endswith(f"trace {trace_id}")
    result.scroll_into_view_if_needed()
    shoot(page, "09-loopline-ask-answer")

    frame.get_by_role("button", name="Thumbs up").click()
    frame.locator("#feedback-status").filter(has_text="Thanks").wait_for()
    assert frame.locator("#feedback-status").inner_text() == f"Thanks: recorded on trace {trace_id}"
    assert frame.get_by_role("button", name="Thumbs up").is_disabled()
    shoot(page, "10-loopline-ask-feedback")

    import mlflow

    from pipelines.core import tracking

    tracking.configure_mlflow(airflow.settings)
    trace = mlflow.get_trace(trace_id, flush=True)
    (thumbs,) = [a for a in trace.info.assessments if a.name == "user_thumbs"]
    assert thumbs.value is True and thumbs.source.source_id == "admin" and thumbs.source.source_type == "HUMAN"

    # Reloaded, the page counts today's answer and thumb (the refused empty question cost nothing, logged nothing).
    page.reload()
    frame = page.frame_locator("iframe")
    today = frame.locator('table.assistant-days[data-assistant="docs_assistant"] tbody tr').first
    today.wait_for()
    cells = today.locator("td").all_inner_texts()
    assert (cells[1], cells[2], cells[8], cells[9]) == ("1", "0", "1", "0"), cells
    today.scroll_into_view_if_needed()
    shoot(page, "11-loopline-assistant-days")
