"""The query log: one JSON line per answer, in the folder the retrieval drift check reads; and the daily budget.

Each answer writes ``<home>/query_log/<index instance>/ds=<UTC day>/<trace id>.jsonl``, whole or not at all
(:func:`pipelines.core.files.write_atomic`): one file per answer, so concurrent answers never share a file
and a reader never sees half a line. The row has ``query`` (the *redacted* question: the field
``pipelines.drift.rag.read_queries`` reads, so the docs drift check sees real traffic) and the answer's
versions, tokens, latency, trace id and request id, and ``shown`` (false: a shadow release's answer, never
given to the user); during a live release also ``arm`` (champion or challenger), ``version`` (the arm's, e.g.
``prompt docs_assistant_answer v3``), ``release_mode``, ``challenger``, ``champion`` and ``scores`` (refusal,
latency, tokens, groundedness: :func:`pipelines.assistant.release.live_scores`). Nothing raw is stored:
question and answer pass :func:`pipelines.assistant.questions.redact` first.

:func:`tokens_used` sums one assistant's tokens of a day from the same rows: the daily budget needs no
other store, and a deleted log resets it. :func:`day_summary` reads them for the Loopline page's accounting.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from pipelines.core.errors import NotRetryable
from pipelines.core.files import write_atomic
from pipelines.core.home import DataHome
from pipelines.core.settings import LooplineSettings

log = logging.getLogger(__name__)


class BudgetExceeded(NotRetryable):
    """The day's token budget is spent; the message says how much and until when."""


def log_folder(index_instance: str, day: date, settings: LooplineSettings | None = None) -> Path:
    """The query log folder of an index instance and UTC day (what the drift check reads)."""
    return DataHome(settings).query_log(index_instance, day)


def write_row(index_instance: str, day: date, trace_id: str, row: dict[str, Any],
              settings: LooplineSettings | None = None) -> Path:
    """Write one answer's row as its own file, atomically; the same trace id replaces its own file only."""
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in trace_id) or "answer"
    return write_atomic(log_folder(index_instance, day, settings) / f"{name}.jsonl",
                        json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")


def read_rows(index_instance: str, day: date, settings: LooplineSettings | None = None) -> Iterator[dict[str, Any]]:
    """The rows of a day (every ``*.jsonl`` file; lines that are not JSON objects are skipped)."""
    for path in sorted(log_folder(index_instance, day, settings).glob("*.jsonl")):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:  # removed while listing
            continue
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                yield row


def is_shown(row: dict[str, Any]) -> bool:
    """Whether the row's answer was given to whoever asked: not a shadow release's (``shown: false``)."""
    return row.get("shown", True) is not False


def latencies_ms(rows: Iterable[dict[str, Any]]) -> list[float]:
    """The answer latencies of ``rows`` that have one, in milliseconds."""
    return [float(row["latency_ms"]) for row in rows if isinstance(row.get("latency_ms"), (int, float))]


def tokens_used(index_instance: str, assistant: str, day: date, settings: LooplineSettings | None = None) -> int:
    """Prompt and answer tokens that assistant ``assistant`` (a DAG id) logged on ``day``."""
    return day_summary(index_instance, assistant, day, settings)["tokens"]


def check_budget(index_instance: str, assistant: str, day: date, max_tokens: int,
                 settings: LooplineSettings | None = None) -> int:
    """Tokens used today, when some of the day's budget is left.

    Raises:
        BudgetExceeded: ``max_tokens`` or more were used on ``day``.
    """
    used = tokens_used(index_instance, assistant, day, settings)
    if used >= max_tokens:
        raise BudgetExceeded(f"assistant {assistant} used {used:,} tokens on {day.isoformat()} (UTC), its daily budget "
                             f"is {max_tokens:,} (budgets.max_tokens_per_day): try again tomorrow or raise the budget")
    return used


def _percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def day_summary(index_instance: str, assistant: str, day: date, settings: LooplineSettings | None = None, *,
                max_tokens_per_day: int | None = None) -> dict[str, Any]:
    """What assistant ``assistant`` (a DAG id) answered on UTC day ``day``, from its query-log rows.

    Every answer a person or a check was given counts, the DAG's own check questions too (``checks`` says how
    many). A shadow release's answers (``shown: false``) are not answers anyone saw: they count in the tokens
    (they spend the budget as any answer), not in ``answers``, ``refused`` or the latencies.

    Returns:
        ``{"day", "answers", "refused", "checks", "tokens_in", "tokens_out", "tokens", "latency_p50_ms",
        "latency_p95_ms", "budget_share"}``: the latencies are nearest-rank percentiles over the day's
        answers (None on a day without any); ``budget_share`` is ``tokens / max_tokens_per_day`` (None without a
        budget).
    """
    every = [row for row in read_rows(index_instance, day, settings) if row.get("assistant") == assistant]
    rows = [row for row in every if is_shown(row)]
    latencies = latencies_ms(rows)
    tokens_in = sum(int(row.get("tokens_in") or 0) for row in every)
    tokens_out = sum(int(row.get("tokens_out") or 0) for row in every)
    return {
        "day": day.isoformat(),
        "answers": len(rows),
        "refused": sum(1 for row in rows if row.get("refused")),
        "checks": sum(1 for row in rows if row.get("origin") == "check"),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "tokens": tokens_in + tokens_out,
        "latency_p50_ms": _percentile(latencies, 0.50),
        "latency_p95_ms": _percentile(latencies, 0.95),
        "budget_share": (tokens_in + tokens_out) / max_tokens_per_day if max_tokens_per_day else None,
    }
