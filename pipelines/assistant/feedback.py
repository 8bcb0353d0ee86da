"""A person's thumbs up or down on an answer, recorded on the answer's MLflow trace (an assessment)."""

from __future__ import annotations

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
