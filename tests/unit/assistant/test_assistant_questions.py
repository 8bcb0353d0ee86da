"""What comes in: question checks, redaction of personal data, content words and their overlap with a context."""

from __future__ import annotations

import pytest

from pipelines.assistant.questions import QuestionRejected, content_words, overlap, redact, validate_question
from pipelines.core.errors import NotRetryable

pytestmark = pytest.mark.unit


def test_a_plain_question_passes_stripped():
    assert validate_question("  How do I roll the index back?\n", 2000) == "How do I roll the index back?"
    assert validate_question("Wie heiß ist grüner Tee?".encode(), 2000) == "Wie heiß ist grüner Tee?"
    assert validate_question("Line one\n\tline two", 2000) == "Line one\n\tline two"


@pytest.mark.parametrize(("question", "message"), [
    ("", "the question is empty"),
    ("   \n\t ", "the question is empty"),
    ("x" * 10_000, "the question is 10,000 characters long; the limit is 2,000 (budgets.max_question_chars)"),
    (b"\xff\xfe\x00\x01binary", "the question is not UTF-8 text (byte 0 is 0xff)"),
    ("PK\x03\x04\x14\x00\x06\x00", "the question looks like binary data"),
    ("what\x00is this", "the question looks like binary data (1 control character(s)"),
    ("caf\ufffd au lait", "undecodable bytes"),
])
def test_bad_questions_are_rejected_with_a_message(question, message):
    with pytest.raises(QuestionRejected) as caught:
        validate_question(question, 2000)
    assert message in str(caught.value)
    assert isinstance(caught.value, NotRetryable)


def test_the_length_limit_is_inclusive():
    assert validate_question("q" * 2000, 2000) == "q" * 2000
    with pytest.raises(QuestionRejected):
        validate_question("q" * 2001, 2000)


@pytest.mark.parametrize(("text", "expected"), [
    ("mail jo.doe+x@example.co.uk now", "mail [EMAIL] now"),
    ("call +44 20 7946 0958 or (555) 123-4567 or 555.123.4567", "call [PHONE] or [PHONE] or [PHONE]"),
    ("card 4111 1111 1111 1111, 4111-1111-1111-1111, 4111111111111111", "card [CARD], [CARD], [CARD]"),
    ("from 10.0.0.12 and 2001:db8::1 and fe80::1ff:fe23:4567:890a", "from [IP] and [IP] and [IP]"),
])
def test_redaction_masks_personal_data(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "Green tea brews at 80 degrees for two minutes; tyres run at 6 to 8 bar.",
    "The run of 2026-11-03 failed at 10:30:00 on port 8080 with MLflow 3.17.2.",
    "Not an address: 999.1.1.1; a ratio 3:2.",
])
def test_redaction_keeps_ordinary_numbers(text):
    assert redact(text) == text


def test_content_words_drop_stop_words_and_stem():
    assert content_words("How do owls fly so quietly?") == {"owl", "fly", "quiet"}
    assert content_words("days_since_last_session") >= {"days_since_last_session", "day", "session"}
    assert content_words("What is it?") == set()


def test_overlap_is_the_share_of_question_words_in_the_context():
    context = "Owls hunt at night. Their feathers have soft fringes, so they fly almost silently."
    assert overlap("How do owls fly so quietly?", context) == pytest.approx(2 / 3)
    assert overlap("What is the capital of France?", context) == 0.0
    assert overlap("What is it?", context) == 0.0


def test_personal_data_does_not_count_as_content():
    context = "Tea > Brewing. Green tea brews at 80 degrees for two minutes."
    assert overlap("Green tea brew? jo@example.com 10.0.0.1", context) == 1.0
