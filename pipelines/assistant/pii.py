"""Personal data out of everything the assistant stores: Microsoft Presidio's pattern recognizers, no language model.

:func:`redact` finds e-mail addresses, phone numbers, payment card numbers, IP addresses, IBANs and US social
security numbers with Presidio's analyzer and masks them with its anonymizer (``[EMAIL]``, ``[PHONE]``,
``[CARD]``, ``[IP]``, ``[IBAN]``, ``[SSN]``). Presidio's predefined recognizers do the work (regular expressions
with checksums: Luhn for cards, mod-97 for IBANs, ``phonenumbers`` for phones, ``ipaddress`` for IPs), plus two
of Loopline's own :class:`~presidio_analyzer.PatternRecognizer`\\ s for what they let through on purpose and a
log must not keep: card-like runs of 13 to 19 digits that fail the checksum (a mistyped card is still a card)
and runs of 9 to 12 plain digits (phone numbers without a format, of regions Presidio does not check).

No spaCy language model is loaded: the analyzer runs on Presidio's :class:`NoOpNlpEngine` (no tokens, no
named entities). Pattern recognizers need none, names and places are not what the assistant must keep out of
its logs, and no model comes from a registry Loopline can use at run time (Presidio's default engine would try
to download ``en_core_web_lg``). Nothing is fetched either: e-mail domains are checked against ``tldextract``'s
bundled public-suffix snapshot, never the live list.

The engine is built on first use, once per process (about 1.5 s, most of it importing spaCy), never at import
time of this module, so DAG files that import the assistant's config stay fast.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

#: Presidio entity type -> the mask that replaces it.
MASKS: dict[str, str] = {
    "EMAIL_ADDRESS": "[EMAIL]",
    "PHONE_NUMBER": "[PHONE]",
    "CREDIT_CARD": "[CARD]",
    "IP_ADDRESS": "[IP]",
    "IBAN_CODE": "[IBAN]",
    "US_SSN": "[SSN]",
}
MASK = re.compile("|".join(re.escape(mask) for mask in sorted(set(MASKS.values()))))

# Digits not glued to letters, dots, colons or slashes: ids like tr-1a2b…, versions, times and paths stay.
_EDGE_BEFORE = r"(?<![\w.:/])"
_EDGE_AFTER = r"(?![\w:/]|\.\d)"
CARD_LIKE = _EDGE_BEFORE + r"\d(?:[ -]?\d){12,18}" + _EDGE_AFTER
LONG_NUMBER = _EDGE_BEFORE + r"\d{9,12}" + _EDGE_AFTER

_LOCK = threading.Lock()
_ENGINES: dict[str, tuple[Any, Any]] = {}


def _build_engines() -> tuple[Any, Any]:
    """Presidio's analyzer (pattern recognizers, no-op NLP engine) and anonymizer."""
    import tldextract
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )
    from presidio_anonymizer import AnonymizerEngine

    # The bundled public-suffix snapshot only: no HTTP request, no cache written.
    offline_tlds = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail recognizer with the domain checked offline."""

        def validate_result(self, pattern_text: str) -> bool:
            return offline_tlds(pattern_text).fqdn != ""

    started = time.perf_counter()
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (
        OfflineEmailRecognizer(), PhoneRecognizer(), CreditCardRecognizer(), IpRecognizer(), IbanRecognizer(),
        UsSsnRecognizer(),
        PatternRecognizer(supported_entity="CREDIT_CARD", name="LooplineCardLikeRecognizer",
                          patterns=[Pattern("card-like digit run (13-19 digits)", CARD_LIKE, 0.3)]),
        PatternRecognizer(supported_entity="PHONE_NUMBER", name="LooplineLongNumberRecognizer",
                          patterns=[Pattern("plain digit run (9-12 digits)", LONG_NUMBER, 0.3)]),
    ):
        registry.add_recognizer(recognizer)
    nlp_engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])
    anonymizer = AnonymizerEngine()
    log.info("PII redaction: Presidio analyzer with %d pattern recognizers (no NLP model) ready in %.2f s",
             len(registry.recognizers), time.perf_counter() - started)
    return analyzer, anonymizer


def engines() -> tuple[Any, Any]:
    """The process's Presidio analyzer and anonymizer, built on first use."""
    with _LOCK:
        if "en" not in _ENGINES:
            _ENGINES["en"] = _build_engines()
        return _ENGINES["en"]


def _identifies_nobody(text: str) -> bool:
    """Loopback and unspecified addresses (``127.0.0.1``, ``0.0.0.0``, ``::1``): the docs' own, no one's."""
    try:
        address = ipaddress.ip_address(text.split("/")[0].split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def find(text: str) -> list[Any]:
    """Presidio's findings in ``text`` (``RecognizerResult``: entity type, start, end, score), any score.

    Loopback and unspecified IP addresses are not findings: they name no machine of anyone's.
    """
    analyzer, _ = engines()
    findings = analyzer.analyze(text=text, language="en", entities=list(MASKS), score_threshold=0.0)
    return [f for f in findings
            if not (f.entity_type == "IP_ADDRESS" and _identifies_nobody(text[f.start:f.end]))]


@functools.lru_cache(maxsize=1024)
def redact(text: str) -> str:
    """``text`` with every finding of :func:`find` replaced by its mask (:data:`MASKS`).

    Where findings overlap, the text of both is masked. Dates (``2026-11-03``), times, versions, ports and
    short numbers stay.
    """
    if not text or not any(ch.isdigit() or ch in "@:" for ch in text):
        return text  # every recognizer here needs a digit, an @ or a colon (IPv6): plain prose skips Presidio
    from presidio_anonymizer.entities import ConflictResolutionStrategy, OperatorConfig

    findings = find(text)
    if not findings:
        return text
    _, anonymizer = engines()
    operators = {entity: OperatorConfig("replace", {"new_value": mask}) for entity, mask in MASKS.items()}
    return anonymizer.anonymize(text=text, analyzer_results=findings, operators=operators,
                                conflict_resolution=ConflictResolutionStrategy.REMOVE_INTERSECTIONS).text


def redact_payload(value: Any) -> Any:
    """``value`` with :func:`redact` applied to every string in it (dicts, lists and tuples walked; keys kept)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_payload(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_payload(item) for item in value]
    return value
