"""The audit export: one self-contained HTML page and one JSON file of every recorded event in a period."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipelines.audit.records import EVENT_KINDS, AuditEvent, events, render_page
from pipelines.core.files import write_atomic
from pipelines.core.settings import LooplineSettings


@dataclass(frozen=True)
class AuditExport:
    """What :func:`export` wrote: the two files and how many events of each kind they hold."""

    html: Path
    json: Path
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def export(since: datetime, out_dir: Path, until: datetime | None = None,
           settings: LooplineSettings | None = None) -> AuditExport:
    """Write ``audit-<since>[_<until>].html`` and ``.json`` into ``out_dir`` (every event ``since <= at < until``).

    The JSON is ``{"since", "until", "generated_at", "counts", "events": [record, ...]}``, each record as
    :meth:`AuditEvent.to_json` writes it plus ``record_run`` (its MLflow run).
    """
    found = events(since, until, settings)
    by_kind = Counter(e.kind for e in found)
    counts = {kind: by_kind[kind] for kind in EVENT_KINDS}
    period = f"{since:%Y-%m-%d}" + (f"_{until:%Y-%m-%d}" if until else "")
    stem = Path(out_dir) / f"audit-{period}"
    generated = datetime.now(UTC)
    summary = (f"{len(found)} events from {since.isoformat()} to {until.isoformat() if until else 'now'} "
               f"(generated {generated:%Y-%m-%d %H:%M} UTC): "
               + ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items()))
    html_path = write_atomic(stem.with_suffix(".html"), render_page("Loopline audit export", found, summary))
    payload = {"since": since.isoformat(), "until": until.isoformat() if until else None,
               "generated_at": generated.isoformat(), "counts": counts,
               "events": [{**e.to_json(), "record_run": e.record_run} for e in found]}
    json_path = write_atomic(stem.with_suffix(".json"), json.dumps(payload, indent=2, sort_keys=True, default=str))
    return AuditExport(html_path, json_path, counts)


def parse_day(value: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO time with its offset."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a date: write YYYY-MM-DD (UTC) or an ISO time such as "
                         "2026-12-01T08:00:00+00:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def describe(event: AuditEvent) -> str:
    """One line of an event, for the terminal."""
    who = f", by {event.approved_by}" if event.approved_by else ""
    return f"{event.at:%Y-%m-%d %H:%M} [{event.record_run}] {event.title}{who}: {event.reason}"
