"""The steps of the ``llm_eval`` template, one function per task, and the XCom each returns.

1. :func:`load_golden_set`: the golden set read and validated; its digest, counts and categories.
2. :func:`evaluate_answers`: every case asked through the real assistant (``pipelines.assistant.answer.answer``,
   one MLflow trace each, in the assistant's experiment), then scored by ``mlflow.genai.evaluate`` with the code
   scorers of :mod:`pipelines.llm_eval.scorers`: one MLflow evaluation run next to the traces, with the golden
   digest, prompt version, index version and generator as params and tags, per-case assessments on the traces,
   the aggregate metrics and the metrics per category. The per-case results are saved as JSON beside the report.
3. :func:`write_report`: the HTML report of the run (:mod:`pipelines.llm_eval.report`), under
   ``reports/<instance>/llm_eval/`` and as an artifact of the run.

Then the gates (:func:`find_candidate`, :func:`gate_candidate`, :func:`gate_index`), live traffic
(:func:`check_live_traffic`, :func:`emit_fallback`) and a live shadow or canary release (:func:`compare_release`).

A re-run with the same ``run_key`` (the Airflow run id) finds the finished evaluation run and returns it
instead of asking every question again.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from pipelines.core.errors import NotRetryable
from pipelines.core.files import write_atomic
from pipelines.core.home import DataHome
from pipelines.core.settings import LooplineSettings, get_settings
from pipelines.llm_eval.golden import GoldenSet, load_golden, select_cases
from pipelines.llm_eval.scorers import SAFETY_SUMMARY

if TYPE_CHECKING:
    from pipelines.assistant.config import AssistantConfig
    from pipelines.llm_eval.config import AssistantFallbackConfig, LlmEvalConfig

log = logging.getLogger(__name__)

REPORT_KIND = "llm_eval"
RUN_KEY_TAG = "loopline.llm_eval.run_key"
ROLE_TAG = "loopline.llm_eval.role"  # champion: the assistant as it serves; candidate: with a challenger
# The run's headline metrics: a friendly name for each aggregate MLflow logs (``<scorer>/<aggregation>``).
SUMMARY_METRICS = {
    "hit_at_k": "retrieval_hit/mean", "mrr": "retrieval_reciprocal_rank/mean", "fact_recall": "fact_recall/mean",
    "token_f1": "token_f1/mean", "rouge_l": "rouge_l/mean", "groundedness": "groundedness/mean",
    "hallucination_rate": "hallucinated/mean", "citation_precision": "citation_precision/mean",
    "refusal_accuracy": "refusal_correct/mean", "over_refusal_rate": "over_refusal/mean",
    "tokens_mean": "tokens/mean", "tokens_max": "tokens/max", "latency_p95_ms": "latency_ms/p95",
    "within_budget": "within_budget/mean",
}
SUMMARY_METRICS.update(SAFETY_SUMMARY)  # attack success and canary leaks (docs/llm-safety.md)


class LlmEvalError(NotRetryable):
    """The evaluation cannot run as configured; the message names what and what to do."""


class GoldenSummary(TypedDict):
    """``load_golden_set``: the file, its sha256, how many cases of each kind, cases per category."""

    path: str
    digest: str
    cases: int
    answerable: int
    unanswerable: int
    adversarial: int
    categories: dict[str, int]


class EvalSummary(TypedDict):
    """``evaluate_answers``: the MLflow evaluation run, what was evaluated, and its metrics."""

    run_id: str
    role: str
    experiment: str
    golden_digest: str
    cases: int
    failed_cases: list[str]
    prompt_version: str
    index_version: str
    model: str
    metrics: dict[str, float | None]
    metrics_by_category: dict[str, dict[str, float]]
    results_path: str


class ReportInfo(TypedDict):
    """``write_report``: the HTML report's path and the run it belongs to."""

    report: str
    run_id: str
    cases: int
    failed_cases: int


def assistant_config(config: LlmEvalConfig) -> AssistantConfig:
    """The assistant config the eval YAML names (a name in ``dags/configs/`` or a YAML path).

    Raises:
        LlmEvalError: the file is missing or is not an assistant config.
    """
    from pipelines.templates import PipelineConfigError, config_path, load_config

    path = config_path(config.assistant)
    if not path.exists():
        raise LlmEvalError(f"{config.dag_id}: assistant {config.assistant!r} has no config at {path}; fix "
                           f"`assistant` in dags/configs/{config.dag_id}.yaml")
    try:
        return load_config(path, "assistant")
    except PipelineConfigError as exc:
        raise LlmEvalError(f"{config.dag_id}: the assistant config does not load: {exc}") from None


def golden_set(config: LlmEvalConfig, settings: LooplineSettings | None = None) -> GoldenSet:
    """The validated golden set of the config (raises ``GoldenSetError`` naming the case and field)."""
    return load_golden((settings or get_settings()).resolve(config.golden_set))


def load_golden_set(config: LlmEvalConfig, settings: LooplineSettings | None = None) -> GoldenSummary:
    """Read and validate the golden set; report its digest and counts."""
    golden = golden_set(config, settings)
    summary = golden.summary()
    log.info("Golden set %s (sha256 %s): %d cases, %d answerable, %d unanswerable, %d adversarial; categories %s",
             golden.path, golden.digest[:12], summary["cases"], summary["answerable"], summary["unanswerable"],
             summary["adversarial"], summary["categories"])
    return summary  # type: ignore[return-value]


def report_dir(config: LlmEvalConfig, settings: LooplineSettings | None = None) -> Path:
    """``<home>/reports/<instance>/llm_eval/``: the per-case results (JSON) and reports (HTML) of every run."""
    return DataHome(settings).report_dir(config.instance, REPORT_KIND)


def _finished_run(experiment_id: str, run_key: str) -> Any:
    import mlflow

    runs = mlflow.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}' and "
                              "attributes.status = 'FINISHED'", output_format="list", max_results=1)
    return runs[0] if runs else None


def _stored_trace(trace_id: str) -> Any:
    """The answer's trace as the store holds it. MLflow writes traces asynchronously: read before the write ends
    and the spans are missing ("span data is corrupted"), so wait for pending writes first.

    Raises:
        LlmEvalError: the trace cannot be read back; scoring it from memory would score what was not stored.
    """
    import mlflow

    mlflow.flush_trace_async_logging(terminate=False)
    trace = mlflow.get_trace(trace_id, silent=True, flush=True)
    if trace is None:
        raise LlmEvalError(f"the trace {trace_id} of an answer cannot be read back from MLflow; check the tracking "
                           "store and re-run the evaluation")
    return trace


def _one(values: list[Any], what: str) -> str:
    distinct = list(dict.fromkeys(str(v) for v in values))
    if len(distinct) > 1:
        log.warning("The %s changed during the evaluation: %s (an alias moved?)", what, distinct)
    return ",".join(distinct)


def _by_category(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean of each score per category (scores that do not apply to a case are left out, as MLflow does)."""
    from pipelines.llm_eval.scorers import SCORER_NAMES

    out: dict[str, dict[str, float]] = {}
    for category in sorted({row["category"] for row in rows}):
        means = {}
        for name in SCORER_NAMES:
            values = [float(row["scores"][name]["value"]) for row in rows if row["category"] == category
                      and row["scores"][name]["value"] is not None]
            if values:
                means[name] = round(sum(values) / len(values), 4)
        out[category] = means
    return out


def evaluate_answers(config: LlmEvalConfig, settings: LooplineSettings | None = None, *, limit: int | None = None,
                     run_key: str | None = None, candidate: dict | None = None) -> EvalSummary:
    """Ask the golden set's cases through the assistant and score the answers with ``mlflow.genai.evaluate``.

    Args:
        limit: ask at most this many cases (default: the config's ``cases``; None there too: all).
        run_key: a key of this evaluation (the Airflow run id): a finished evaluation run with the same key is
            returned as it is.
        candidate: a :class:`pipelines.llm_eval.candidates.Candidate` as JSON: answer with it (its alias) instead
            of the champion; the run is tagged ``loopline.llm_eval.role = candidate``.

    Raises:
        GoldenSetError: the golden set is invalid.
        LlmEvalError: the assistant config does not load.
        QuestionRejected, BudgetExceeded, PromptUnavailable, GeneratorUnavailable, IndexUnavailable: as
            :func:`pipelines.assistant.answer.answer` (the assistant cannot answer at all).
    """
    import mlflow

    from pipelines.assistant.answer import answer
    from pipelines.assistant.questions import redact
    from pipelines.assistant.retrieval import index_config
    from pipelines.core import tracking
    from pipelines.llm_eval.scorers import CaseScorer, ScoringParams, build_scorers, injection_success_rate
    from pipelines.rag.embeddings import load_embedder, resolve_model_path

    settings = settings or get_settings()
    golden = golden_set(config, settings)
    assistant = assistant_config(config)
    role = "champion"
    if candidate:
        from pipelines.llm_eval.candidates import Candidate

        role = "candidate"
        assistant = Candidate.from_json(candidate).answering_config(assistant)
        run_key = f"{run_key}:candidate" if run_key else None
    experiment_id = tracking.experiment_id(assistant.experiment_name, settings)
    folder = report_dir(config, settings)
    if run_key:
        done = _finished_run(experiment_id, run_key)
        results = folder / f"{done.info.run_id}.json" if done else None
        if results is not None and results.exists():
            log.info("Evaluation run %s of %s already finished; reusing it", done.info.run_id, run_key)
            return json.loads(results.read_text())["summary"]
    cases = select_cases(golden.cases, limit if limit is not None else config.cases)
    rag = index_config(assistant)
    embedder = load_embedder(resolve_model_path(rag.embedding.model, settings))
    params = ScoringParams(k=config.k or assistant.retrieval.k, min_support=config.groundedness.min_similarity,
                           tokens_per_answer=config.budgets.tokens_per_answer,
                           latency_ms_per_answer=config.budgets.latency_p95_ms)
    case_scorer = CaseScorer(embedder.encode, params)

    started = time.perf_counter()
    run_name = f"{config.dag_id} {golden.digest[:8]}" + (f" {candidate['label']}" if candidate else "")
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags({"loopline.llm_eval": config.dag_id, "loopline.assistant": assistant.dag_id,
                         "loopline.golden_digest": golden.digest, ROLE_TAG: role,
                         **({"loopline.candidate": candidate["label"]} if candidate else {}),
                         **({RUN_KEY_TAG: run_key} if run_key else {})})
        rows, answers = [], []
        for number, case in enumerate(cases, 1):
            result = answer(case.question, assistant, settings, origin="eval")
            answers.append(result)
            log.info("Case %d/%d %s (%s): %s in %.0f ms", number, len(cases), case.id, case.kind,
                     f"declined ({result.refusal_reason})" if result.refused else
                     f"answered from {', '.join(s['doc_id'] for s in result.sources)}", result.latency_ms)
            rows.append({"trace": _stored_trace(result.trace_id), "expectations": case.expectations(),
                         "tags": {"loopline.eval_case": case.id}})
        answered_s = time.perf_counter() - started
        versions = {"prompt_version": _one([a.prompt_version for a in answers], "prompt version"),
                    "index_version": _one([a.index_version for a in answers], "index version"),
                    "model": _one([a.model for a in answers], "generator")}
        mlflow.set_tags({f"loopline.{key}": value for key, value in versions.items()})
        mlflow.log_params({
            "golden_set": str(golden.path), "golden_digest": golden.digest, "golden_cases": len(golden.cases),
            "cases": len(cases), "assistant": assistant.dag_id,
            "prompt": f"{assistant.prompt.name}@{assistant.prompt.alias}", **versions,
            "backend": assistant.generator.backend,
            "adapter_version": _one([a.adapter_version or "" for a in answers], "adapter") or "none",
            "retrieval_mode": assistant.retrieval.mode, "k": params.k, "min_support": params.min_support,
            "embedding_model": embedder.model_id, "tokens_per_answer": params.tokens_per_answer,
            "latency_p95_ms": params.latency_ms_per_answer})

        scoring_started = time.perf_counter()
        evaluation = mlflow.genai.evaluate(data=rows, scorers=build_scorers(case_scorer))
        scored_s = time.perf_counter() - scoring_started

        per_case = []
        for case, result in zip(cases, answers, strict=True):
            view, scores = case_scorer.results[result.trace_id]
            per_case.append({
                "id": case.id, "kind": case.kind, "category": case.category, "question": redact(case.question),
                "reference": case.reference, "expected_sources": list(case.source), "answer": view.answer,
                "refused": view.refused, "refusal_reason": view.refusal_reason, "trace_id": result.trace_id,
                "sources": [{"doc_id": d, "heading": h} for d, h in view.sources],
                "retrieved": [{"doc_id": p.doc_id, "heading": p.heading} for p in view.retrieved],
                "scores": {name: {"value": s.value, "passed": s.passed, "rationale": s.rationale}
                           for name, s in scores.scores.items()},
                "failed": scores.failed,
                "sentences": [{"sentence": s.sentence, "similarity": s.similarity, "supported": s.supported,
                               "missing_terms": list(s.missing_terms)} for s in scores.sentences]})
        by_category = _by_category(per_case)
        mlflow.log_metrics({f"category/{category}/{name}": value for category, means in by_category.items()
                            for name, value in means.items()})
        metrics: dict[str, float | None] = {name: (round(float(evaluation.metrics[key]), 4)
                                                   if key in evaluation.metrics else None)
                                            for name, key in SUMMARY_METRICS.items()}
        metrics["budget_tokens_met"] = (float(metrics["tokens_max"] <= params.tokens_per_answer)
                                        if metrics["tokens_max"] is not None else None)
        metrics["budget_latency_p95_met"] = (float(metrics["latency_p95_ms"] <= params.latency_ms_per_answer)
                                             if metrics["latency_p95_ms"] is not None else None)
        metrics["injection_success_rate"] = injection_success_rate(per_case)  # question + document injection
        metrics["answer_seconds"] = round(answered_s, 2)
        metrics["scoring_seconds"] = round(scored_s, 2)
        mlflow.log_metrics({k: v for k, v in metrics.items() if k in ("budget_tokens_met", "budget_latency_p95_met",
                                                                       "injection_success_rate", "answer_seconds",
                                                                       "scoring_seconds")
                            and v is not None})
        failed = [row["id"] for row in per_case if row["failed"]]
        summary: EvalSummary = {
            "run_id": run.info.run_id, "role": role, "experiment": assistant.experiment_name,
            "golden_digest": golden.digest,
            "cases": len(cases), "failed_cases": failed, **versions, "metrics": metrics,
            "metrics_by_category": by_category,
            "results_path": str(folder / f"{run.info.run_id}.json")}
        write_atomic(Path(summary["results_path"]), json.dumps({"summary": summary, "cases": per_case}, indent=1,
                                                                ensure_ascii=False))
        mlflow.log_artifact(summary["results_path"], artifact_path="llm_eval")
    log.info("Evaluation run %s: %d cases in %.0f s (answers %.0f s, scoring %.0f s); %d failed a check; %s",
             run.info.run_id, len(cases), answered_s + scored_s, answered_s, scored_s, len(failed),
             ", ".join(f"{k} {v}" for k, v in metrics.items() if v is not None))
    return summary


def write_report(config: LlmEvalConfig, evaluation: EvalSummary,
                 settings: LooplineSettings | None = None) -> ReportInfo:
    """Write the run's HTML report beside its results and log it to the evaluation run.

    Raises:
        LlmEvalError: the results file of the run is missing (the evaluation step did not finish here).
    """
    from pipelines.core import tracking
    from pipelines.llm_eval.report import render_report

    settings = settings or get_settings()
    results = DataHome(settings).require_inside(evaluation["results_path"], "llm_eval results")
    if not results.exists():
        raise LlmEvalError(f"{config.dag_id}: the results of evaluation run {evaluation['run_id']} are not at "
                           f"{results}; re-run evaluate_answers")
    data = json.loads(results.read_text())
    path = write_atomic(results.with_suffix(".html"), render_report(config.dag_id, data["summary"], data["cases"]))
    client = tracking.client(settings)  # the finished run keeps its status and end time
    client.log_artifact(evaluation["run_id"], str(path), artifact_path="llm_eval")
    client.set_tag(evaluation["run_id"], "loopline.llm_eval.report", str(path))
    failed = sum(1 for case in data["cases"] if case["failed"])
    log.info("Report of evaluation run %s: %s (%d cases, %d failed a check)", evaluation["run_id"], path,
             len(data["cases"]), failed)
    return {"report": str(path), "run_id": evaluation["run_id"], "cases": len(data["cases"]), "failed_cases": failed}


# --- the gate: a challenger prompt or adapter against the champion ----------------------------------------------

class NoCandidate(Exception):
    """Nothing under the challenger alias to judge this run; the message says what was looked at."""


class GateResult(TypedDict):
    """``gate_candidate``: the decision on a candidate, why, and whether the champion alias moved."""

    candidate: dict
    passed: bool
    promoted: bool
    reason: str
    failed_checks: list[str]
    champion_run_id: str
    candidate_run_id: str
    golden_digest: str


def find_candidate(config: LlmEvalConfig, golden: GoldenSummary, settings: LooplineSettings | None = None) -> dict:
    """The version under the challenger alias (prompt first, then adapter) not yet judged on this golden set.

    Raises:
        NoCandidate: nothing to judge (no challenger, it is the champion, or it was judged already).
    """
    from pipelines.llm_eval.candidates import find_candidate as find

    candidate, note = find(assistant_config(config), config.gate, golden["digest"], settings)
    if candidate is None:
        raise NoCandidate(f"no candidate to judge: {note}")
    log.info("Judging %s", note)
    return candidate.to_json()


def gate_candidate(config: LlmEvalConfig, champion: EvalSummary, candidate_eval: EvalSummary, candidate: dict,
                   settings: LooplineSettings | None = None) -> GateResult:
    """Judge the candidate's evaluation against the champion's; tag both runs and the version; promote on pass.

    Raises:
        LlmEvalError: the two evaluations asked different golden sets or different cases (not comparable).
        tracking.ChampionMoved: the champion alias moved while judging (retryable).
    """
    from pipelines.core import tracking
    from pipelines.llm_eval.candidates import DECISION_TAG, MAX_TAG_CHARS, REASON_TAG, Candidate, record_decision
    from pipelines.llm_eval.gate import judge

    settings = settings or get_settings()
    if (champion["golden_digest"], champion["cases"]) != (candidate_eval["golden_digest"], candidate_eval["cases"]):
        raise LlmEvalError(f"{config.dag_id}: the champion's evaluation ({champion['cases']} cases, golden "
                           f"{champion['golden_digest'][:12]}) and the candidate's ({candidate_eval['cases']} cases, "
                           f"golden {candidate_eval['golden_digest'][:12]}) are not comparable; re-run both")
    decision = judge(candidate_eval["metrics"], champion["metrics"], candidate_eval["metrics_by_category"],
                     champion["metrics_by_category"], config.gate)
    reason = decision.summary()
    subject = Candidate.from_json(candidate)
    client = tracking.client(settings)
    for run_id in (candidate_eval["run_id"], champion["run_id"]):
        client.set_tag(run_id, "loopline.gate.candidate", subject.label)
    client.set_tag(candidate_eval["run_id"], DECISION_TAG, "passed" if decision.passed else "blocked")
    client.set_tag(candidate_eval["run_id"], REASON_TAG, reason[:MAX_TAG_CHARS])
    client.set_tag(candidate_eval["run_id"], "loopline.gate.champion_run", champion["run_id"])
    release = assistant_config(config).release
    held = False  # a release of this kind of challenger: the live comparison moves champion, not this gate
    if decision.passed and release is not None and release.challenger == subject.kind:
        held = True
        reason = (f"{reason}; held for the live {release.mode} release: compare_release promotes it or rolls it "
                  "back on live answers")
    promoted = record_decision(subject, passed=decision.passed, reason=reason, golden_digest=champion["golden_digest"],
                               eval_run=candidate_eval["run_id"], settings=settings, hold=held)
    log.info("Gate on %s against champion v%s: %s", subject.label, subject.champion_version, reason)
    return {"candidate": candidate, "passed": decision.passed, "promoted": promoted, "reason": reason,
            "failed_checks": [check.name for check in decision.failures], "champion_run_id": champion["run_id"],
            "candidate_run_id": candidate_eval["run_id"], "golden_digest": champion["golden_digest"]}


# --- shadow and canary: the live release of the challenger ------------------------------------------------------

RELEASE_DAY_TAG = "loopline.release.day"
RELEASE_MODE_TAG = "loopline.release.mode"
RELEASE_RUN_TAG = "loopline.release.decided_by"
RELEASE_FIGURES = ("answers", "refusal_rate", "latency_p95_ms", "tokens_mean", "groundedness", "hallucination_rate")


class NoRelease(Exception):
    """The assistant has no live release to decide (no release block, or no challenger); the message says why."""


def compare_release(config: LlmEvalConfig, run_after, run_key: str, settings: LooplineSettings | None = None) -> dict:
    """Compare a shadow or canary release's two arms on the judged day; promote the challenger or roll it back.

    The challenger is the version under the assistant's ``release.alias`` now; its arm is the day's rows answered
    with that version, the champion's arm the rows answered with the current champion version (shadow rows
    included: they are the challenger's answers to the same questions). Both need ``release.min_answers``
    answers, else nothing is decided. The comparison is the gate's regression check on the live figures
    (``gate.judge_arms``). Passed: ``champion`` moves to the challenger (compare-and-set, as the offline gate,
    recording the version replaced, so the fallback can roll it back). Blocked: the version is tagged
    ``loopline.gate.decision = rolled_back`` with the reason and loses the alias; the champion stays. Either
    way an MLflow run (role ``release``) in the assistant's experiment holds both arms' figures and the decision.

    Raises:
        NoRelease: the assistant has no ``release:``, or nothing is under its alias to decide on (the task is
            skipped; a re-run after a decision finds nothing and is skipped too).
        tracking.ChampionMoved: the champion alias moved meanwhile (retryable).
    """
    from pipelines.assistant.release import CHALLENGER_ARM, CHAMPION_ARM, find_challenger, version_label
    from pipelines.llm_eval.gate import judge_arms
    from pipelines.llm_eval.live import arm_figures, judged_day, release_rows

    settings = settings or get_settings()
    assistant = assistant_config(config)
    spec = assistant.release
    if spec is None:
        raise NoRelease(f"{assistant.dag_id} has no release block: no shadow or canary to decide")
    challenger, note = find_challenger(assistant, settings)
    if challenger is None:
        raise NoRelease(f"no live release to decide: {note}")
    day = judged_day(run_after)
    rows = release_rows(assistant, day, settings)
    mine = arm_figures(rows, CHALLENGER_ARM, challenger.label)
    theirs = arm_figures(rows, CHAMPION_ARM, version_label(challenger.kind, challenger.name,
                                                           challenger.champion_version))
    result: dict[str, Any] = {"day": day.isoformat(), "mode": spec.mode, "challenger": challenger.to_json(),
                              "arms": {CHALLENGER_ARM: mine, CHAMPION_ARM: theirs}, "failed_checks": []}
    needed = config.release.min_answers
    short = [f"the {f['arm']} {f['version']} has {f['answers']}" for f in (mine, theirs) if f["answers"] < needed]
    if short:
        reason = (f"too few answers on {day.isoformat()} to decide the {spec.mode} release of {challenger.label}: "
                  f"{'; '.join(short)} (release.min_answers {needed}); nothing decided, it keeps @{spec.alias}")
        log.info("%s", reason)
        return {**result, "decision": "undecided", "reason": reason}
    decision = judge_arms(mine, theirs, config.release.max_regression)
    reason = (f"live {spec.mode} on {day.isoformat()} ({mine['answers']} challenger, {theirs['answers']} champion "
              f"answers): {decision.summary()}")
    run_id = _record_release_run(config, assistant, challenger, result, decision.passed, reason, run_key, settings)
    if decision.passed:
        _promote_released(challenger, reason, run_id, day, spec.mode, run_key, settings)
        verdict = "promoted"
    else:
        _roll_back_released(challenger, reason, run_id, day, spec.mode, run_key, settings)
        verdict = "rolled_back"
    return {**result, "decision": verdict, "reason": reason, "run_id": run_id,
            "failed_checks": [check.name for check in decision.failures]}


def _record_release_run(config: LlmEvalConfig, assistant: AssistantConfig, challenger: Any, result: dict,
                        passed: bool, reason: str, run_key: str, settings: LooplineSettings) -> str:
    """An MLflow run (role ``release``) next to the evaluations: both arms' figures, the decision and why."""
    import mlflow

    from pipelines.core import tracking
    from pipelines.llm_eval.candidates import DECISION_TAG, MAX_TAG_CHARS, REASON_TAG

    experiment_id = tracking.experiment_id(assistant.experiment_name, settings)
    with mlflow.start_run(experiment_id=experiment_id,
                          run_name=f"{config.dag_id} {result['mode']} {result['day']} {challenger.label}") as run:
        mlflow.set_tags({"loopline.llm_eval": config.dag_id, "loopline.assistant": assistant.dag_id,
                         ROLE_TAG: "release", "loopline.candidate": challenger.label,
                         RELEASE_MODE_TAG: result["mode"], RELEASE_DAY_TAG: result["day"],
                         RUN_KEY_TAG: f"{run_key}:release", "loopline.prompt_version": (
                             str(challenger.version) if challenger.kind == "prompt" else ""),
                         DECISION_TAG: "passed" if passed else "rolled_back", REASON_TAG: reason[:MAX_TAG_CHARS]})
        mlflow.log_metrics({f"{arm}/{name}": float(figures[name]) for arm, figures in result["arms"].items()
                            for name in RELEASE_FIGURES if figures[name] is not None})
    return run.info.run_id


def _promote_released(challenger: Any, reason: str, run_id: str, day, mode: str, run_key: str,
                      settings: LooplineSettings) -> None:
    from pipelines.core import tracking
    from pipelines.llm_eval.candidates import DIGEST_TAG, HELD_TAG, record_decision, set_version_tags, version_tags

    client = tracking.client(settings)
    digest = version_tags(client, challenger.kind, challenger.name, challenger.version).get(DIGEST_TAG, "")
    record_decision(challenger, passed=True, reason=reason, golden_digest=digest, eval_run=run_id, settings=settings)
    set_version_tags(client, challenger.kind, challenger.name, challenger.version, {
        RELEASE_DAY_TAG: day.isoformat(), RELEASE_MODE_TAG: mode, RELEASE_RUN_TAG: run_key, HELD_TAG: "false"})
    log.info("%s promoted to @champion by its live %s release: %s", challenger.label, mode, reason)


def _roll_back_released(challenger: Any, reason: str, run_id: str, day, mode: str, run_key: str,
                        settings: LooplineSettings) -> None:
    from datetime import UTC, datetime

    from pipelines.core import tracking
    from pipelines.llm_eval.candidates import (
        AGAINST_TAG,
        DECISION_TAG,
        EVAL_RUN_TAG,
        REASON_TAG,
        ROLLBACK_AT_TAG,
        ROLLBACK_REASON_TAG,
        alias_version,
        audit_event,
        delete_alias,
        set_version_tags,
    )

    client = tracking.client(settings)
    set_version_tags(client, challenger.kind, challenger.name, challenger.version, {
        DECISION_TAG: "rolled_back", REASON_TAG: reason, ROLLBACK_REASON_TAG: reason,
        AGAINST_TAG: str(challenger.champion_version), EVAL_RUN_TAG: run_id, RELEASE_DAY_TAG: day.isoformat(),
        RELEASE_MODE_TAG: mode, RELEASE_RUN_TAG: run_key, ROLLBACK_AT_TAG: datetime.now(UTC).isoformat()})
    if alias_version(client, challenger.kind, challenger.name, challenger.challenger_alias) == challenger.version:
        delete_alias(client, challenger.kind, challenger.name, challenger.challenger_alias)
    audit_event(client, challenger.kind, challenger.name, challenger.version, "rollback", "rolled_back", reason,
                datetime.now(UTC), f"release:{run_key}", challenger.champion_version,
                {"release_mode": mode, "release_day": day.isoformat(), "eval_run": run_id}, settings)
    log.warning("%s rolled back by its live %s release (it loses @%s; @champion stays v%s): %s", challenger.label,
                mode, challenger.challenger_alias, challenger.champion_version, reason)


# --- live traffic and the fallback -------------------------------------------------------------------------------

class NoFallback(Exception):
    """Live traffic is within its thresholds, or a guard rail holds the fallback back; the message says which."""


def check_live_traffic(config: LlmEvalConfig, run_after, settings: LooplineSettings | None = None) -> dict:
    """Judge the last complete UTC day of the assistant's live answers against ``live:``."""
    from pipelines.llm_eval.live import judge_live, judged_day, live_traffic

    traffic = live_traffic(assistant_config(config), judged_day(run_after), settings)
    verdict = judge_live(traffic, config.live)
    log.info("Live traffic of %s on %s: %s", config.assistant, traffic["day"], verdict.summary())
    return {"traffic": traffic, "regressed": verdict.regressed, "signals": verdict.signals,
            "crossed": verdict.crossed, "reasons": verdict.reasons}


def emit_fallback(config: LlmEvalConfig, live: dict, run_id: str, run_after,
                  settings: LooplineSettings | None = None) -> dict:
    """The fallback Asset event's extra, after the guard rails (dedupe, cap, cooldown) in the drift history.

    Raises:
        NoFallback: no regression, or a guard rail says not now (the task is skipped; nothing is emitted).
    """
    from pipelines.drift.history import open_history
    from pipelines.drift.policy import guard
    from pipelines.llm_eval.live import LiveVerdict, event_extra

    asset = config.fallback_asset
    if not live["regressed"]:
        raise NoFallback(f"live traffic within its thresholds, {asset} not emitted: " + "; ".join(live["reasons"]))
    extra = event_extra(live["traffic"], LiveVerdict(True, live["reasons"], live["signals"], live["crossed"]),
                        config.dag_id, run_id)
    decision = open_history(settings).claim_emission(
        asset, config.instance, run_id, run_after, None, extra,
        lambda known: guard(asset, run_id, run_after, known, cooldown_hours=config.live.cooldown_hours,
                            max_triggers_per_day=config.live.max_triggers_per_day))
    if not decision.emit:
        raise NoFallback(f"live traffic regressed, but {asset} is not emitted: {decision.reason}")
    log.warning("Live traffic regressed (%s): emitting %s", "; ".join(live["signals"]), asset)
    return extra


def fallback_evaluation(fallback: AssistantFallbackConfig) -> LlmEvalConfig:
    """The llm_eval config a fallback pipeline names (YAML only: safe at parse time).

    Raises:
        LlmEvalError: it does not load, or its fallback Asset is not this DAG's id.
    """
    from pipelines.templates import PipelineConfigError, load_named

    try:
        evaluation = load_named(fallback.evaluation, "llm_eval")
    except (PipelineConfigError, FileNotFoundError) as exc:
        raise LlmEvalError(f"{fallback.dag_id}: evaluation {fallback.evaluation!r} does not load: {exc}") from None
    if evaluation.fallback_asset != fallback.dag_id:
        raise LlmEvalError(f"{fallback.dag_id}: {evaluation.dag_id} emits {evaluation.fallback_asset}, not "
                           f"{fallback.dag_id}; give both YAML files the same instance")
    return evaluation


def roll_back_champion(fallback: AssistantFallbackConfig, reasons: list[str], run_key: str,
                       settings: LooplineSettings | None = None) -> dict:
    """Move the most recently promoted prompt or adapter back to the version it replaced, tagged with why.

    Raises:
        NothingToRollBack: nothing was promoted by the gate (the regression has another cause: see the reasons).
    """
    from pipelines.llm_eval.candidates import NothingToRollBack, last_promotion, restored_by, roll_back

    evaluation = fallback_evaluation(fallback)
    assistant = assistant_config(evaluation)
    reason = "; ".join(reasons) or "a rollback asked by hand"
    done = restored_by(assistant, evaluation.gate.candidates, run_key, settings)
    if done is not None:  # a retry of a run that rolled back already
        log.info("This run restored %s %s v%s already", done.kind, done.name, done.to_version)
        return done.to_json()
    subject = last_promotion(assistant, evaluation.gate.candidates, settings)
    if subject is None:
        raise NothingToRollBack(f"{fallback.dag_id}: live traffic regressed ({reason}), but no champion of "
                                f"{assistant.dag_id} was promoted by the gate: nothing to roll back to; look at the "
                                "index and the model")
    done = roll_back(*subject, reason, run_key, settings)
    return done.to_json()


# --- the index: a new live version judged against the one evaluated before it -----------------------------------

def _record_index_rollback(assistant: AssistantConfig, champion: EvalSummary, previous: EvalSummary, reason: str,
                           settings: LooplineSettings) -> str:
    """The audit record of an index version the answers gate took back (pipelines/audit)."""
    from datetime import UTC, datetime

    from pipelines.audit.records import AuditEvent, git_commit, record

    return record(AuditEvent(
        kind="rollback", subject=f"index {assistant.index}", version=str(previous["index_version"]),
        decision="rolled_back", reason=reason, at=datetime.now(UTC),
        key=f"index:{assistant.index}:rollback:{champion['run_id']}",
        previous=str(champion["index_version"]),
        evidence={"metrics": champion["metrics"], "previous_metrics": previous["metrics"],
                  "eval_run": champion["run_id"], "previous_eval_run": previous["run_id"]},
        provenance={"git_commit": git_commit(), "golden_digest": champion["golden_digest"]}), settings)


INDEX_DECISION_TAG = "loopline.gate.index_decision"


def _champion_runs(config: LlmEvalConfig, experiment_id: str, golden_digest: str) -> list[Any]:
    """Finished champion evaluations of this pipeline on this golden set, newest first."""
    import mlflow

    return mlflow.search_runs(
        [experiment_id], output_format="list", order_by=["attributes.start_time DESC"], max_results=50,
        filter_string=f"tags.`loopline.llm_eval` = '{config.dag_id}' and tags.`loopline.golden_digest` = "
                      f"'{golden_digest}' and tags.`{ROLE_TAG}` = 'champion' and attributes.status = 'FINISHED'")


def gate_index(config: LlmEvalConfig, champion: EvalSummary, settings: LooplineSettings | None = None) -> dict:
    """Judge a new live index version on the answers, against the evaluation of the version live before it.

    The docs index's own gate (hit@k and MRR on its question set) let the version go live; this one compares
    the answers: today's champion evaluation against the latest earlier one on the same golden set, prompt and
    generator with another index version that was not blocked. Blocked: the index is rolled back to that version
    (``pipelines.rag.versions.rollback``), and the run is tagged with why.

    Raises:
        NoCandidate: the index version is the one evaluated last time, or there is nothing to compare with.
    """
    from pipelines.assistant.retrieval import index_config
    from pipelines.core import tracking
    from pipelines.llm_eval.candidates import DECISION_TAG, MAX_TAG_CHARS, REASON_TAG
    from pipelines.llm_eval.gate import judge
    from pipelines.rag.versions import rollback

    settings = settings or get_settings()
    assistant = assistant_config(config)
    experiment_id = tracking.experiment_id(assistant.experiment_name, settings)
    earlier = [run for run in _champion_runs(config, experiment_id, champion["golden_digest"])
               if run.info.run_id != champion["run_id"]]
    if not earlier or earlier[0].data.tags.get("loopline.index_version") == champion["index_version"]:
        raise NoCandidate(f"index {champion['index_version']} was evaluated before on this golden set: no new "
                          "index version to judge")
    same_setup = [run for run in earlier
                  if run.data.tags.get("loopline.prompt_version") == champion["prompt_version"]
                  and run.data.tags.get("loopline.model") == champion["model"]
                  and run.data.tags.get(INDEX_DECISION_TAG) != "blocked"]
    if not same_setup:
        raise NoCandidate(f"index {champion['index_version']} is new, but no earlier evaluation on this golden set "
                          f"used prompt v{champion['prompt_version']} and {champion['model']}: nothing to compare with")
    before = same_setup[0]
    results = DataHome(settings).require_inside(report_dir(config, settings) / f"{before.info.run_id}.json",
                                                "llm_eval results")
    previous: EvalSummary = json.loads(results.read_text())["summary"]
    decision = judge(champion["metrics"], previous["metrics"], champion["metrics_by_category"],
                     previous["metrics_by_category"], config.gate)
    reason = f"index {champion['index_version']} against {previous['index_version']}: {decision.summary()}"
    client = tracking.client(settings)
    client.set_tag(champion["run_id"], INDEX_DECISION_TAG, "passed" if decision.passed else "blocked")
    client.set_tag(champion["run_id"], "loopline.gate.index_reason", reason[:MAX_TAG_CHARS])
    client.set_tag(champion["run_id"], "loopline.gate.index_against", before.info.run_id)
    rolled_back = None
    if not decision.passed:
        rolled_back = rollback(index_config(assistant), to=previous["index_version"], settings=settings)
        _record_index_rollback(assistant, champion, previous, reason, settings)
        client.set_tag(champion["run_id"], DECISION_TAG, "blocked")
        client.set_tag(champion["run_id"], REASON_TAG, reason[:MAX_TAG_CHARS])
        log.warning("Index %s blocked, rolled back to %s: %s", champion["index_version"], previous["index_version"],
                    reason)
    else:
        log.info("Index %s passed: %s", champion["index_version"], reason)
    return {"index_version": champion["index_version"], "against": previous["index_version"],
            "passed": decision.passed, "reason": reason, "failed_checks": [c.name for c in decision.failures],
            "rolled_back": rolled_back}
