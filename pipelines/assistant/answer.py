"""Answer one question: check it, retrieve, decline or generate, trace it in MLflow, log it.

:func:`answer` runs, in order and before anything is written: the question's checks
(:class:`QuestionRejected`), the day's token budget (:class:`BudgetExceeded`), the champion prompt
(:class:`PromptUnavailable`), the generator's files (:class:`GeneratorUnavailable`) and the live index
(:class:`IndexUnavailable`). Then, inside one MLflow trace (experiment ``<instance>_assistant``):

0. **the guard** (:mod:`pipelines.assistant.guard`) on the redacted question: a prompt-injection attempt is
   declined here, before retrieval and with no generation (``refusal_reason`` ``guard: …``, on the root span);
1. **retrieve** (span type RETRIEVER): the ``k`` best chunks of the live index in the configured mode, and
   the best cosine similarity (a vector search) for the gate; the guard leaves out chunks that carry
   instructions for the model (listed on the span as ``loopline.guard_dropped``);
2. **assemble**: dedupe, choose by score within ``max_context_tokens``, number ``[1]``, ``[2]``… with the best
   passage last (nearest the question); the gate
   (:func:`pipelines.assistant.context.refusal_reason`) declines a weak match here, with no generation;
3. **generate** (span type CHAT_MODEL): the champion prompt with the context and question, greedy decoding,
   token usage and latency as span attributes.

Last, one query-log row (:mod:`pipelines.assistant.query_log`). With a live release (the config's ``release:``,
:mod:`pipelines.assistant.release`) a user's question is answered by the arm it is routed to (canary) or by both
(shadow: the challenger's answer is traced, scored and logged with ``shown: false``, never returned); each arm's
trace and row carry the arm, its version and whether the user saw it. Personal data is masked
(:func:`pipelines.assistant.pii.redact`, Presidio) in every string the trace, the log and the returned
:class:`Answer` carry (question, passages, messages, answer, sources); the guard checks the redacted question,
the index and the model get it as asked, in memory only. An error before the trace leaves nothing behind; an
error inside it leaves the trace (status ERROR) and no query-log row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipelines.assistant import guard, query_log, release
from pipelines.assistant import model as generator_model
from pipelines.assistant.context import (
    REFUSAL,
    Context,
    assemble_context,
    cited_sources,
    clean_answer,
    is_refusal,
    refusal_reason,
    unique_sources,
)
from pipelines.assistant.model import GeneratorUnavailable
from pipelines.assistant.pii import redact, redact_payload
from pipelines.assistant.prompts import PromptUnavailable, load_champion
from pipelines.assistant.questions import overlap, validate_question
from pipelines.assistant.retrieval import Retrieved, index_config, live_version, retrieve
from pipelines.core import tracking
from pipelines.core.settings import LooplineSettings, get_settings

if TYPE_CHECKING:
    from pipelines.assistant.config import AssistantConfig

log = logging.getLogger(__name__)

JSON_KEYS = ("answer", "sources", "prompt_version", "model", "adapter_version", "index_version", "tokens_in",
             "tokens_out", "latency_ms", "trace_id", "refused")


@dataclass
class Answer:
    """One answer and where it came from: sources, the prompt, model, adapter and index versions, cost, trace."""

    answer: str
    sources: list[dict[str, Any]]
    prompt_version: int
    model: str
    adapter_version: str | None
    index_version: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    trace_id: str
    refused: bool
    retrieval_scores: list[float] = field(default_factory=list)
    similarity: float | None = None
    overlap: float = 0.0
    refusal_reason: str | None = None
    first_token_ms: float | None = None
    stopped: str | None = None
    guard_dropped: list[dict[str, Any]] = field(default_factory=list)
    request_id: str = ""
    arm: str | None = None  # a live release: the arm that answered (champion or challenger)
    release_version: str | None = None  # ... and its version, e.g. 'prompt docs_assistant_answer v3'

    def to_json(self) -> dict[str, Any]:
        """The answer as ``--json`` prints it: :data:`JSON_KEYS` only."""
        data = asdict(self)
        return {key: data[key] for key in JSON_KEYS}


# --- the answer -------------------------------------------------------------------------------------------------

def _documents(hits: list[Any], verdicts: list[guard.Verdict]) -> list[dict[str, Any]]:
    """Hits in the shape MLflow shows for a RETRIEVER span's outputs (redacted), with the guard's verdict."""
    return redact_payload([
        {"id": h.chunk_id, "page_content": h.text,
         "metadata": {"doc_id": h.doc_id, "heading": h.heading, "score": float(h.score),
                      **({"guard": v.reason} if v.flagged else {})}}
        for h, v in zip(hits, verdicts, strict=True)])


def answer(question: str | bytes, config: AssistantConfig, settings: LooplineSettings | None = None, *,
           now: datetime | None = None, origin: str = "user", request_id: str | None = None) -> Answer:
    """Answer ``question`` from the live index with the champion prompt and the configured generator.

    With a ``release:`` in the config and a challenger to release (:mod:`pipelines.assistant.release`), a user's
    question is answered in **canary** mode by the arm its request id hashes to, in **shadow** mode by the
    champion, and then by the challenger too (its answer traced, scored and logged with ``shown: false``, never
    returned; a failure of the shadow answer is logged and leaves the user's answer alone).

    Args:
        question: the user's question (text, or UTF-8 bytes).
        config: the assistant's config.
        now: the moment the question came in (its UTC day keys the query log and the budget); default now.
        origin: who asked, kept in the query log and the trace (``user``, ``check`` for the DAG's own check).
        request_id: the request's id (the canary hashes it: a retry with the same id gets the same arm); default:
            one derived from the assistant, the UTC day and the redacted question.

    Raises:
        QuestionRejected: empty, too long, or binary-looking input.
        BudgetExceeded: the day's token budget is spent.
        PromptUnavailable: no prompt with the alias in MLflow.
        GeneratorUnavailable: the model file or folder is missing (or the adapter does not load).
        IndexUnavailable, AssistantConfigError: no live index, or its config does not load.
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    day = now.astimezone(UTC).date()
    text = validate_question(question, config.budgets.max_question_chars)
    safe_question = redact(text)
    rag = index_config(config)
    query_log.check_budget(rag.instance, config.dag_id, day, config.budgets.max_tokens_per_day, settings)
    request_id = request_id or release.request_id_for(config.dag_id, day, safe_question)
    asked = _Asked(text, safe_question, rag, now, origin, request_id)
    live = release.active_release(config, origin, settings)
    if live is None:
        return _answer_arm(asked, config, settings, started)
    arm = live.arm_for(request_id)
    if arm == release.CHALLENGER_ARM:
        try:
            return _answer_arm(asked, live.challenger.answering_config(config), settings, started,
                               _ArmRun(live, arm, shown=True))
        except (PromptUnavailable, GeneratorUnavailable) as exc:  # the challenger cannot answer: the champion does
            log.warning("The canary challenger %s cannot answer (%s): the champion answers", live.challenger_label, exc)
    shown = _answer_arm(asked, config, settings, started, _ArmRun(live, release.CHAMPION_ARM, shown=True))
    if live.mode == "shadow":
        shadow = replace(asked, origin=release.SHADOW_ORIGIN)
        try:
            _answer_arm(shadow, live.challenger.answering_config(config), settings, time.perf_counter(),
                        _ArmRun(live, release.CHALLENGER_ARM, shown=False))
        except Exception:  # the user has the champion's answer: a shadow failure must not take it away
            log.exception("The shadow challenger %s failed on request %s; the user's answer is the champion's",
                          live.challenger_label, request_id)
    return shown


@dataclass(frozen=True)
class _Asked:
    """A question, checked: as asked (never stored), redacted, its index, time, origin and request id."""

    text: str
    safe_question: str
    rag: Any
    now: datetime
    origin: str
    request_id: str


@dataclass(frozen=True)
class _ArmRun:
    """One arm of a live release answering: which, whether the user sees it, and the release."""

    live: release.LiveRelease
    arm: str
    shown: bool


def _arm_label(config: AssistantConfig, kind: str, prompt: Any, adapter_version: str | None) -> str:
    """The version an arm answered with, as rows and traces name it (what it loaded, not what it looked up)."""
    if kind == "prompt":
        return release.version_label("prompt", prompt.name, prompt.version)
    name, _, version = (adapter_version or "").partition("/")
    return release.version_label("adapter", name or config.generator.adapter.model_name, version)  # type: ignore[union-attr]


def _answer_arm(asked: _Asked, config: AssistantConfig, settings: LooplineSettings, started: float,
                arm: _ArmRun | None = None) -> Answer:
    """Answer with one configuration (the champion's, or a challenger's): one trace, one query-log row."""
    now, day, rag = asked.now, asked.now.astimezone(UTC).date(), asked.rag
    text, safe_question, origin = asked.text, asked.safe_question, asked.origin
    prompt = load_champion(config, settings)
    served = generator_model.resolve_generator(config.generator, settings)  # base alone until an adapter is there
    backend, adapter_path, adapter_version = served.backend, served.adapter_path, served.adapter_version
    prepared = generator_model.prepare(config.generator.base_model, settings, backend=backend)
    index_version = live_version(rag, settings)
    generator = generator_model.load(str(prepared.path), adapter_path, backend=backend)
    model_label = model_name(prepared, backend)
    deadline = started + config.budgets.max_latency_ms / 1000

    import mlflow
    from mlflow.entities import SpanType
    from mlflow.entities.trace_location import MlflowExperimentLocation

    experiment = tracking.experiment_id(config.experiment_name, settings)  # points MLflow at Loopline's store
    generation = None
    release_fields: dict[str, Any] = {}
    with mlflow.start_span(name="answer", span_type=SpanType.CHAIN,
                           trace_destination=MlflowExperimentLocation(experiment)) as root:
        root.set_inputs({"question": safe_question})
        root.set_attributes({"loopline.assistant": config.dag_id, "loopline.prompt": f"{prompt.name}",
                             "loopline.prompt_version": prompt.version, "loopline.model": model_label,
                             "loopline.adapter_version": adapter_version or "", "loopline.index": rag.instance,
                             "loopline.backend": backend, "loopline.origin": origin,
                             "loopline.request_id": asked.request_id})
        if arm is not None:
            label = _arm_label(config, arm.live.challenger.kind, prompt, adapter_version)
            release_fields = {"arm": arm.arm, "version": label, "shown": arm.shown, "release_mode": arm.live.mode,
                              "challenger": arm.live.challenger_label, "champion": arm.live.champion_label}
            tags = {"loopline.arm": arm.arm, "loopline.release.version": label,
                    "loopline.shown": str(arm.shown).lower(), "loopline.release.mode": arm.live.mode,
                    "loopline.request_id": asked.request_id}
            root.set_attributes(tags)
            mlflow.update_current_trace(tags=tags)
        verdict = guard.check_question(safe_question, config.guard, settings)
        root.set_attributes({"loopline.guard": verdict.to_json() if config.guard.enabled else "off"})
        dropped: list[dict[str, Any]] = []
        if verdict.flagged:  # declined before retrieval: the question never reaches the index or the model
            found, context, word_overlap = Retrieved([], None, index_version), EMPTY_CONTEXT, 0.0
            reason = verdict.reason
        else:
            found, context, word_overlap, reason, dropped = _retrieve_traced(text, safe_question, config, rag,
                                                                             generator, settings)
        if reason is None:
            messages = prompt.render(context.text, text)
            generation = _generate_traced(generator, messages, config, deadline)
        raw_reply, passages, refused, reason = _reply(generation, context, reason)
        reply = redact(raw_reply)
        sources = redact_payload(unique_sources(passages))
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        tokens_in = generation.tokens_in if generation else 0
        tokens_out = generation.tokens_out if generation else 0
        root.set_outputs({"answer": reply, "sources": sources, "refused": refused})
        root.set_attributes({"loopline.index_version": found.version, "loopline.refused": refused,
                             "loopline.refusal_reason": redact(reason or ""), "loopline.tokens_in": tokens_in,
                             "loopline.tokens_out": tokens_out, "loopline.latency_ms": latency_ms})
        if arm is not None:  # the live scores the release comparison reads (no reference answer needed)
            scores = release.live_scores(
                reply, refused, [p.text for p in context.passages],
                lambda texts: guard.injection_model(settings).embedder.encode(list(texts)),
                arm.live.min_support, latency_ms=latency_ms, tokens=tokens_in + tokens_out)
            release_fields["scores"] = scores
            root.set_attributes({f"loopline.score.{key}": value for key, value in scores.items()
                                 if key in ("groundedness", "hallucinated") and value is not None})
        trace_id = root.trace_id

    result = Answer(
        answer=reply, sources=sources, prompt_version=prompt.version, model=model_label,
        adapter_version=adapter_version, index_version=found.version, tokens_in=tokens_in, tokens_out=tokens_out,
        latency_ms=latency_ms, trace_id=trace_id, refused=refused,
        retrieval_scores=[round(float(h.score), 4) for h in found.hits], similarity=found.similarity,
        overlap=round(word_overlap, 3), refusal_reason=reason,
        first_token_ms=generation.first_token_ms if generation else None,
        stopped=generation.stopped if generation else None, guard_dropped=dropped, request_id=asked.request_id,
        arm=arm.arm if arm else None, release_version=release_fields.get("version"))
    query_log.write_row(rag.instance, day, trace_id, {
        "query": safe_question, "answer": reply, "ts": now.astimezone(UTC).isoformat(),
        "assistant": config.dag_id, "origin": origin, "trace_id": trace_id, "refused": refused,
        "refusal_reason": redact(reason) if reason else None, "sources": sources, "prompt": prompt.name,
        "guard_dropped": [d["chunk_id"] for d in dropped], "request_id": asked.request_id, "shown": True,
        **release_fields, **_row_figures(result)}, settings)
    log.info("Answered in %.0f ms (%s): %d+%d tokens, index %s, prompt v%s%s%s", latency_ms,
             "declined: " + reason if reason else "generated", tokens_in, tokens_out, found.version, prompt.version,
             f", first token {generation.first_token_ms:.0f} ms" if generation and generation.first_token_ms else "",
             f"; {arm.live.mode} {arm.arm} {release_fields['version']}" + ("" if arm.shown else " (not shown)")
             if arm else "")
    return result


def model_name(prepared: Any, backend: str) -> str:
    """The model as answers report it: name and the weights' digest, and ``:llama_cpp`` when llama.cpp ran it.

    Both backends run the same GGUF file (same digest); the suffix tells their answers apart in the query log.
    """
    label = f"{prepared.name}:{prepared.digest[:12]}"
    return label if backend == "transformers" else f"{label}:{backend}"


def _row_figures(result: Answer) -> dict[str, Any]:
    """The versions and figures of an answer that its query-log row keeps."""
    return {"prompt_version": result.prompt_version, "model": result.model, "adapter_version": result.adapter_version,
            "index_version": result.index_version, "tokens_in": result.tokens_in, "tokens_out": result.tokens_out,
            "latency_ms": result.latency_ms, "similarity": result.similarity, "overlap": result.overlap}


EMPTY_CONTEXT = Context((), "", 0, 0, 0)


def _retrieve_traced(question: str, safe_question: str, config: AssistantConfig, rag: Any, generator: Any,
                     settings: LooplineSettings) -> tuple[Retrieved, Context, float, str | None, list[dict[str, Any]]]:
    """Retrieve, guard and assemble the context in their spans; say why to decline, if the context is too weak.

    Args:
        question: the question as asked (searched with; never stored).
        safe_question: the redacted question (what the span records).

    Returns:
        The retrieval, the assembled context, the question's word overlap with it, the refusal reason (None:
        generate an answer), and the chunks the guard left out (chunk id, document, reason).
    """
    import mlflow
    from mlflow.entities import SpanType

    with mlflow.start_span(name="retrieve", span_type=SpanType.RETRIEVER) as span:
        span.set_inputs({"query": safe_question, "k": config.retrieval.k, "mode": config.retrieval.mode})
        found = retrieve(question, config, rag, settings)
        verdicts = guard.check_passages([h.text for h in found.hits], config.guard, settings)
        dropped = [{"chunk_id": h.chunk_id, "doc_id": h.doc_id, "reason": v.reason}
                   for h, v in zip(found.hits, verdicts, strict=True) if v.flagged]
        span.set_outputs(_documents(found.hits, verdicts))
        span.set_attributes({"loopline.index_version": found.version, "loopline.similarity": found.similarity,
                             "loopline.guard_dropped": redact_payload(dropped)})
    if dropped:
        log.warning("The guard left %d retrieved chunk(s) out of the context: %s", len(dropped),
                    ", ".join(f"{d['chunk_id']} ({d['doc_id']}: {d['reason']})" for d in dropped))
    kept = [h for h, v in zip(found.hits, verdicts, strict=True) if not v.flagged]
    with mlflow.start_span(name="assemble", span_type=SpanType.PARSER) as span:
        context: Context = assemble_context(kept, config.retrieval.max_context_tokens,
                                            generator.count_tokens, generator.truncate)
        word_overlap = overlap(question, context.text)
        reason = refusal_reason(found.similarity, word_overlap, context,
                                min_similarity=config.retrieval.min_similarity,
                                min_overlap=config.retrieval.min_overlap)
        span.set_outputs(redact_payload({**context.summary(), "overlap": round(word_overlap, 3),
                                         "refusal_reason": reason}))
    return found, context, word_overlap, reason, dropped


def _generate_traced(generator: Any, messages: list[dict[str, str]], config: AssistantConfig,
                     deadline: float) -> Any:
    """Generate inside a CHAT_MODEL span that records the (redacted) messages, token usage and latency."""
    import mlflow
    from mlflow.entities import SpanType
    from mlflow.tracing.constant import SpanAttributeKey, TokenUsageKey

    with mlflow.start_span(name="generate", span_type=SpanType.CHAT_MODEL) as span:
        span.set_inputs({"messages": redact_payload(messages), "max_new_tokens": config.generator.max_new_tokens})
        generation = generator_model.generate(generator, messages, config.generator.max_new_tokens,
                                              threads=config.generator.threads, deadline=deadline)
        span.set_outputs({"content": redact(generation.text), "stopped": generation.stopped})
        span.set_attribute(SpanAttributeKey.CHAT_USAGE, {
            TokenUsageKey.INPUT_TOKENS: generation.tokens_in,
            TokenUsageKey.OUTPUT_TOKENS: generation.tokens_out,
            TokenUsageKey.TOTAL_TOKENS: generation.tokens_in + generation.tokens_out})
        span.set_attributes({"loopline.latency_ms": generation.latency_ms,
                             "loopline.first_token_ms": generation.first_token_ms,
                             "loopline.threads": config.generator.threads})
    return generation


def _reply(generation: Any, context: Context, reason: str | None) -> tuple[str, list[Any], bool, str | None]:
    """The reply shown, the passages it cites, whether it declines, and why (None: it answers)."""
    if generation is None:
        return REFUSAL, [], True, reason
    reply = clean_answer(generation.text) or REFUSAL
    refused = is_refusal(reply)
    passages, unknown = ([], []) if refused else cited_sources(reply, context)
    if unknown:
        log.info("The answer cites passages that were not given: %s", unknown)
    if refused and reason is None:
        reason = "the model declined"
    return reply, passages, refused, reason
