"""PII redaction with Presidio's pattern recognizers: what is masked, what stays, no model and no network."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.assistant import pii
from pipelines.assistant.questions import redact

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(("text", "expected"), [
    ("IBAN DE89 3704 0044 0532 0130 00, or GB82WEST12345698765432.", "IBAN [IBAN], or [IBAN]."),
    ("my SSN is 219-09-9999", "my SSN is [SSN]"),
    ("id 123456789012 and 4111 1111 1111 1112 (mistyped)", "id [PHONE] and [CARD] (mistyped)"),
    ("+1 415 555 2671, 020 7946 0958, 07700 900123", "[PHONE], [PHONE], [PHONE]"),
    ("card 5555-5555-5555-4444 exp 09/29", "card [CARD] exp 09/29"),
    ("write to o.kowalski@example.net or ann@mail.example.co.uk", "write to [EMAIL] or [EMAIL]"),
    ("from 192.0.2.44 and fe80::1ff:fe23:4567:890a", "from [IP] and [IP]"),
])
def test_presidio_masks_every_kind_of_personal_data(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "MLflow listens on 127.0.0.1:5000; 0.0.0.0 binds every interface; ::1 is loopback.",
    "Run 2026-11-03T09:30:00Z, version 3.17.2, 134,515,008 parameters, port 8080, 96 tokens, p95 5.3 s.",
    "trace tr-15ce9f0a1234567890abcdef, model SmolLM2-135M-Instruct:b179c9523d0e, sha256 4f3a9b…",
    "",
])
def test_what_identifies_nobody_stays(text):
    assert redact(text) == text


def test_the_golden_and_frozen_questions_pass_unchanged():
    """No docs question loses a word to redaction: the index and the model see them as asked."""
    golden = yaml.safe_load((REPO / "dags/evaluation/docs_golden.yaml").read_text())["cases"]
    frozen = yaml.safe_load((REPO / "dags/evaluation/docs_questions.yaml").read_text())["questions"]
    questions = [c["question"] for c in golden if c["kind"] == "answerable"] + [q["question"] for q in frozen]
    assert len(questions) >= 60
    changed = {q: redact(q) for q in questions if redact(q) != q}
    assert changed == {}


def test_payloads_are_walked_and_keys_kept():
    payload = {"messages": [{"role": "user", "content": "call 020 7946 0958"}], "k": 4, "ok": None,
               "sources": ({"doc_id": "jo@example.com"},)}
    assert pii.redact_payload(payload) == {"messages": [{"role": "user", "content": "call [PHONE]"}], "k": 4,
                                           "ok": None, "sources": [{"doc_id": "[EMAIL]"}]}


def test_the_engine_has_no_language_model_and_builds_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError(f"network access while building or using the PII engine: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    analyzer, _ = pii._build_engines()  # a fresh engine, not the cached one
    assert type(analyzer.nlp_engine).__name__ == "NoOpNlpEngine"
    names = {type(r).__name__ for r in analyzer.registry.recognizers}
    assert {"OfflineEmailRecognizer", "PhoneRecognizer", "CreditCardRecognizer", "IpRecognizer", "IbanRecognizer",
            "UsSsnRecognizer"} <= names
    assert not any("Spacy" in name or "Ner" in name for name in names)
    found = analyzer.analyze("mail jo@example.co.uk", language="en")
    assert [(f.entity_type, f.start, f.end) for f in found] == [("EMAIL_ADDRESS", 5, 21)]


def test_importing_the_assistant_loads_neither_presidio_nor_spacy():
    code = ("import sys, json; import pipelines.assistant.config, pipelines.assistant.questions, "
            "pipelines.assistant.pii, pipelines.assistant.guard; "
            "print(json.dumps([m for m in ('presidio_analyzer', 'presidio_anonymizer', 'spacy', 'torch', "
            "'sentence_transformers') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(),
                         cwd=REPO, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
