"""The prompt file: what it registers as a chat prompt, its checks, and one-pass rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.assistant.prompts import ChampionPrompt, PromptUnavailable, content_digest, read_prompt_file, render_text

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
PROMPT = REPO / "dags" / "prompts" / "docs_answer.yaml"


def test_the_repo_prompt_file_is_a_chat_with_examples_and_both_placeholders():
    messages = read_prompt_file(PROMPT).messages()
    roles = [m["role"] for m in messages]
    assert roles[0] == "system" and roles[-1] == "user"
    assert roles[1:-1] == ["user", "assistant"] * ((len(roles) - 2) // 2) and len(roles) >= 5
    assert "I don't know based on the documentation." in messages[0]["content"]
    assert "{{ context }}" in messages[-1]["content"] and "{{ question }}" in messages[-1]["content"]
    assert all("{{" not in m["content"] for m in messages[:-1]), "examples are rendered, not templates"
    assert messages[1]["content"].startswith("Context:\n[1] garden.md")


def test_the_digest_follows_the_content():
    messages = read_prompt_file(PROMPT).messages()
    assert content_digest(messages) == content_digest([dict(m) for m in messages])
    changed = [*messages[:-1], {"role": "user", "content": messages[-1]["content"] + " "}]
    assert content_digest(changed) != content_digest(messages)


@pytest.mark.parametrize(("text", "message"), [
    ("system: hi\nuser: 'Question: {{ question }}'\n", "user: has no {{ context }}"),
    ("user: '{{ context }} {{ question }}'\n", "system: missing or not text"),
    ("system: s\nuser: '{{ context }} {{ question }}'\nexamples: [{question: q}]\n",
     "examples[1]: needs context, question and answer"),
    ("- just a list\n", "expected a mapping"),
    ("system: [unclosed\n", "is unreadable"),
])
def test_a_bad_prompt_file_is_refused_with_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "prompt.yaml"
    path.write_text(text)
    with pytest.raises(PromptUnavailable) as caught:
        read_prompt_file(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_rendering_is_one_pass():
    assert render_text("C: {{context}} Q: {{ question }}", context="a {{ question }} b", question="why?") == \
        "C: a {{ question }} b Q: why?"
    prompt = ChampionPrompt("p", 3, ({"role": "system", "content": "S"},
                                     {"role": "user", "content": "{{ context }}|{{ question }}"}))
    assert prompt.render("ctx", "q") == [{"role": "system", "content": "S"}, {"role": "user", "content": "ctx|q"}]
