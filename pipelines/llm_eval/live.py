"""Live traffic: did yesterday's real answers regress? Read from the query log and the feedback on the traces.

The day judged is the last complete UTC day before the run. Only ``user`` answers count (the evaluation's own
and the assistant DAG's check questions are left out). :func:`judge_live` compares the day's downvote share,
refusal share and p95 latency with ``live:`` in the llm_eval YAML; a day with fewer than ``min_answers``
answers is not judged. A shadow release's answers (``shown: false``) are no user's and never count here; a
canary's challenger answers do (users saw them). :func:`arm_figures` splits a day of a live release by arm and
version for the release comparison (``steps.compare_release``). When a threshold is crossed, the
``emit_fallback`` task emits the Asset ``<instance>_assistant_fallback`` after the same guard rails as the drift
checks (dedupe per DAG run, daily cap, cooldown), recorded in the drift history's emissions ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from pipelines.core.settings import LooplineSettings

if TYPE_CHECKING:
    from pipelines.assistant.config import AssistantConfig

LIVE_ORIGIN = "user"


class LiveTraffic(TypedDict):
    """One UTC day of an assistant's live answers."""

    day: str
    answers: int
    refused: int
    refusal_share: float | None
    rated: int
    downvotes: int
    downvote_share: float | None
    latency_p95_ms: float | None


@dataclass(frozen=True)
class LiveVerdict:
    """Whether the day regressed; every judgement in words (``reasons``), the crossed ones alone (``crossed``)."""

    regressed: bool
    reasons: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)
    crossed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "; ".join(self.reasons)


def judged_day(run_after: datetime) -> date:
    """The last complete UTC day before the run."""
    return (run_after - timedelta(days=1)).date()


def live_traffic(assistant: AssistantConfig, day: date, settings: LooplineSettings | None = None) -> LiveTraffic:
    """The day's user answers of ``assistant``: how many, declined, rated and downvoted, and their p95 latency."""
    from pipelines.assistant import query_log
    from pipelines.assistant.feedback import thumbs_by_day
    from pipelines.assistant.retrieval import index_config
    from pipelines.llm_eval.scorers import p95

    rows = [row for row in query_log.read_rows(index_config(assistant).instance, day, settings)
            if row.get("assistant") == assistant.dag_id and row.get("origin", LIVE_ORIGIN) == LIVE_ORIGIN
            and query_log.is_shown(row)]  # a shadow answer is no user's: it is judged by the release comparison
    refused = sum(1 for row in rows if row.get("refused"))
    latencies = query_log.latencies_ms(rows)
    thumbs = thumbs_by_day(assistant.experiment_name, day, day, settings).get(day.isoformat(), {"up": 0, "down": 0})
    rated = thumbs["up"] + thumbs["down"]
    return {"day": day.isoformat(), "answers": len(rows), "refused": refused,
            "refusal_share": round(refused / len(rows), 4) if rows else None,
            "rated": rated, "downvotes": thumbs["down"],
            "downvote_share": round(thumbs["down"] / rated, 4) if rated else None,
            "latency_p95_ms": p95(latencies)}


def judge_live(traffic: LiveTraffic, spec) -> LiveVerdict:
    """Judge a day of live traffic against ``spec`` (a :class:`pipelines.llm_eval.config.LiveTrafficSpec`)."""
    if traffic["answers"] < spec.min_answers:
        return LiveVerdict(False, [f"{traffic['answers']} live answers on {traffic['day']}, under min_answers "
                                   f"{spec.min_answers}: not judged"])
    reasons, signals, crossed = [], [], []

    def check(signal: str, value: float | None, bound: float, what: str, unit: str = "") -> None:
        if value is None:
            reasons.append(f"{what}: not measured")
        elif value > bound:
            signals.append(signal)
            crossed.append(f"{what} {value:g}{unit} above {bound:g}{unit}")
            reasons.append(crossed[-1])
        else:
            reasons.append(f"{what} {value:g}{unit} within {bound:g}{unit}")

    check("downvotes", traffic["downvote_share"], spec.max_downvote_share,
          f"downvote share ({traffic['downvotes']} of {traffic['rated']} rated)")
    check("refusals", traffic["refusal_share"], spec.max_refusal_share,
          f"refusal share ({traffic['refused']} of {traffic['answers']})")
    check("latency", traffic["latency_p95_ms"], spec.max_latency_p95_ms, "p95 latency", " ms")
    return LiveVerdict(bool(signals), reasons, signals, crossed)


def event_extra(traffic: LiveTraffic, verdict: LiveVerdict, dag_id: str, run_id: str) -> dict[str, Any]:
    """The fallback Asset event's extra: the evidence, in words and figures."""
    return {"source": dag_id, "dag_run_id": run_id, "signals": verdict.signals, "crossed": verdict.crossed,
            "reasons": verdict.reasons, "traffic": dict(traffic)}


class ArmFigures(TypedDict):
    """One arm of a live release on one UTC day: its answers and their live scores."""

    arm: str
    version: str
    answers: int
    shown: int
    refused: int
    refusal_rate: float | None
    latency_p95_ms: float | None
    tokens_mean: float | None
    groundedness: float | None
    hallucination_rate: float | None
    scored: int


def arm_figures(rows: list[dict[str, Any]], arm: str, version: str) -> ArmFigures:
    """The figures of the rows of ``arm`` answered with ``version`` (release rows: ``arm`` and ``version`` set).

    ``groundedness`` is the mean over the answers that said something (scored), ``hallucination_rate`` their
    share with an unsupported sentence; refusals, latency and tokens count every answer of the arm.
    """
    from pipelines.assistant import query_log
    from pipelines.llm_eval.scorers import p95

    mine = [row for row in rows if row.get("arm") == arm and row.get("version") == version]
    scores = [row.get("scores") or {} for row in mine]
    grounded = [float(s["groundedness"]) for s in scores if isinstance(s.get("groundedness"), (int, float))]
    judged = [bool(s["hallucinated"]) for s in scores if s.get("hallucinated") is not None]
    latencies = query_log.latencies_ms(mine)
    tokens = [int(row.get("tokens_in") or 0) + int(row.get("tokens_out") or 0) for row in mine]
    refused = sum(1 for row in mine if row.get("refused"))
    return {"arm": arm, "version": version, "answers": len(mine), "shown": sum(1 for r in mine if r.get("shown")),
            "refused": refused, "refusal_rate": round(refused / len(mine), 4) if mine else None,
            "latency_p95_ms": p95(latencies),
            "tokens_mean": round(sum(tokens) / len(tokens), 1) if tokens else None,
            "groundedness": round(sum(grounded) / len(grounded), 4) if grounded else None,
            "hallucination_rate": round(sum(judged) / len(judged), 4) if judged else None, "scored": len(grounded)}


def release_rows(assistant: AssistantConfig, day: date, settings: LooplineSettings | None = None) -> list[dict]:
    """The day's rows of ``assistant`` that a live release wrote (users' questions and their shadow answers)."""
    from pipelines.assistant import query_log
    from pipelines.assistant.retrieval import index_config

    return [row for row in query_log.read_rows(index_config(assistant).instance, day, settings)
            if row.get("assistant") == assistant.dag_id and row.get("arm") and row.get("version")]
