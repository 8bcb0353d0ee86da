"""A person's thumbs up or down on an answer, recorded on the answer's MLflow trace (an assessment)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pipelines.core import tracking
from pipelines.core.errors import NotRetryable
from pipelines.core.settings import LooplineSettings, get_settings

FEEDBACK_NAME = "user_thumbs"
MAX_COMMENT_CHARS = 2000


class FeedbackRejected(NotRetryable):
    """Feedback for a trace that does not exist, or a comment that is too long."""


def record_feedback(trace_id: str, thumbs_up: bool, comment: str | None = None, *, source_id: str = "cli",
                    settings: LooplineSettings | None = None) -> Any:
    """Log ``user_thumbs`` (True: up) with the comment as its rationale on trace ``trace_id``.

    The comment passes :func:`pipelines.assistant.questions.redact` first, like everything else stored.

    Returns:
        The MLflow ``Assessment``.

    Raises:
        FeedbackRejected: no trace ``trace_id`` in the store, or a comment over 2,000 characters.
    """
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    from pipelines.assistant.questions import redact

    settings = settings or get_settings()
    tracking.configure_mlflow(settings)
    if comment is not None and len(comment) > MAX_COMMENT_CHARS:
        raise FeedbackRejected(f"the comment is {len(comment):,} characters; the limit is {MAX_COMMENT_CHARS:,}")
    if mlflow.get_trace(trace_id, silent=True, flush=True) is None:
        raise FeedbackRejected(f"no trace {trace_id!r} in the MLflow store {settings.mlflow_uri}: use the trace_id "
                               "an answer printed (--json shows it)")
    return mlflow.log_feedback(
        trace_id=trace_id, name=FEEDBACK_NAME, value=bool(thumbs_up),
        source=AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=source_id),
        rationale=redact(comment) if comment else None)


def _latest_thumbs(assessments: Iterable[Any], name: str) -> bool | None:
    """The value of the newest valid ``name`` feedback among a trace's assessments, or None."""
    thumbs = [(a.create_time_ms or 0, n, a) for n, a in enumerate(assessments)
              if a.name == name and a.feedback is not None and a.valid is not False]
    if not thumbs:
        return None
    return bool(max(thumbs, key=lambda t: t[:2])[2].feedback.value)  # same millisecond: the later in the list


def thumbs_by_day(experiment_name: str, first_day: date, last_day: date, settings: LooplineSettings | None = None,
                  *, limit: int = 10_000) -> dict[str, dict[str, int]]:
    """Thumbs up and down per UTC day of the answer, for an assistant's traces from ``first_day`` to ``last_day``.

    Reads only the traces that carry a ``user_thumbs`` assessment (MLflow filters them), without their spans, at
    most ``limit``; a trace with several counts once, by its newest.

    Returns:
        ``{"2026-11-20": {"up": 3, "down": 1}, ...}``; days without feedback are left out, and so is everything
        when the experiment does not exist yet.
    """
    client = tracking.client(settings)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return {}
    start = datetime.combine(first_day, datetime.min.time(), UTC)
    end = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), UTC)
    query = (f"trace.timestamp_ms >= {int(start.timestamp() * 1000)} AND "
             f"trace.timestamp_ms < {int(end.timestamp() * 1000)} AND feedback.{FEEDBACK_NAME} IS NOT NULL")
    counts: dict[str, dict[str, int]] = {}
    token, seen = None, 0
    while seen < limit:
        page = client.search_traces(locations=[experiment.experiment_id], filter_string=query, include_spans=False,
                                    max_results=min(500, limit - seen), page_token=token)
        for trace in page:
            seen += 1
            thumbs = _latest_thumbs(trace.info.assessments or [], FEEDBACK_NAME)
            if thumbs is None:
                continue
            day = datetime.fromtimestamp(trace.info.request_time / 1000, tz=UTC).date().isoformat()
            counts.setdefault(day, {"up": 0, "down": 0})["up" if thumbs else "down"] += 1
        token = page.token
        if not token:
            break
    return counts
