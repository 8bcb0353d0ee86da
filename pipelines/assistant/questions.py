"""What comes in: a question checked before anything runs, its content words, and a redacted copy for the logs.

:func:`validate_question` refuses empty, over-long and binary-looking input with :class:`QuestionRejected`;
:func:`redact` masks personal data (e-mail addresses, phone numbers, card numbers, IP addresses, IBANs, SSNs)
with Presidio (:mod:`pipelines.assistant.pii`, imported on first use), so no log or trace keeps them;
:func:`content_words` and :func:`overlap` measure how much of a question its context covers (the refusal gate
in :mod:`pipelines.assistant.context`). Standard library only at import time.
"""

from __future__ import annotations

import re
import unicodedata

from pipelines.core.errors import NotRetryable


class QuestionRejected(NotRetryable):
    """A question that cannot be answered as given: empty, too long, or not text."""


def validate_question(question: str | bytes, max_chars: int) -> str:
    """The question, stripped, if it is text of 1 to ``max_chars`` characters.

    Raises:
        QuestionRejected: empty or blank; longer than ``max_chars``; bytes that are not UTF-8; or text with
            NUL bytes, control characters or undecodable replacement characters (binary data).
    """
    if isinstance(question, (bytes, bytearray)):
        try:
            question = bytes(question).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise QuestionRejected(f"the question is not UTF-8 text (byte {exc.start} is {question[exc.start]:#04x}); "
                                   "send plain text") from None
    if not isinstance(question, str):
        raise QuestionRejected(f"the question must be text, not {type(question).__name__}")
    text = question.strip()
    if not text:
        raise QuestionRejected("the question is empty: ask something about the documentation")
    if len(text) > max_chars:
        raise QuestionRejected(f"the question is {len(text):,} characters long; the limit is {max_chars:,} "
                               "(budgets.max_question_chars): shorten it")
    # Text has no control characters other than tabs and newlines; binary data read as text has many.
    controls = sum(1 for ch in text if unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\t\n\r")
    if controls or "\ufffd" in text:
        raise QuestionRejected(f"the question looks like binary data ({controls} control character(s)"
                               f"{', undecodable bytes' if chr(0xFFFD) in text else ''}): send plain text")
    return text


# --- redaction ------------------------------------------------------------------------------------------------

def redact(text: str) -> str:
    """``text`` with e-mail addresses, phone numbers, card numbers, IP addresses, IBANs and SSNs masked.

    Masks are ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IP]``, ``[IBAN]`` and ``[SSN]``, found by Presidio's
    pattern recognizers (:func:`pipelines.assistant.pii.redact`, which loads Presidio on first use). Dates
    (``2026-11-03``), versions, ports and short numbers ("80 degrees", "6 to 8 bar") stay.
    """
    from pipelines.assistant import pii

    return pii.redact(text)


# --- content words ----------------------------------------------------------------------------------------------

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing done down during each else few for from further get gets got had has have
having he her here hers him his how i if in into is it its itself just know let like made make me might more most
much must my need no nor not now of off on once one only or other our ours out over own please same say she should
so some such tell than that the their them then there these they thing this those through to too under until up
us use used using very want was way we were what when where which while who whom whose why will with would you
your yours yourself
""".split())
WORD = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")


def _stem(word: str) -> str:
    for suffix in ("ingly", "edly", "ing", "ly", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def content_words(text: str) -> set[str]:
    """The stems of the words of ``text`` that carry content (no stop words, no single characters).

    ``snake_case`` names count whole and by part.
    """
    words: set[str] = set()
    for token in WORD.findall(text.lower()):
        parts = [token, *token.split("_")] if "_" in token else [token]
        words.update(_stem(p) for p in parts if len(p) > 1 and p not in STOPWORDS)
    return words


def overlap(question: str, context: str) -> float:
    """The share of the question's content words that occur in ``context`` (0 when the question has none).

    Personal data is no content: the question's e-mail addresses, numbers and the like (what :func:`redact`
    masks) do not count.
    """
    from pipelines.assistant.pii import MASK

    asked = content_words(MASK.sub(" ", redact(question)))
    return len(asked & content_words(context)) / len(asked) if asked else 0.0
