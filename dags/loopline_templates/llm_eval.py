"""Template ``llm_eval``: an assistant asked its golden set; answers scored by code scorers in MLflow; HTML report."""

from __future__ import annotations

from airflow.sdk import DAG, Param, dag, task

from loopline_templates.common import asset_schedule, dag_arguments, fail_without_retry, skipped_on
from pipelines.llm_eval.config import LlmEvalConfig


def _assets(config: LlmEvalConfig):
    """The Assets of the assistant's new live index and new prompt candidate (YAML and pydantic only)."""
    from pipelines.assistant.retrieval import index_config
    from pipelines.core.assets import prompt_candidate
    from pipelines.templates import load_named

    assistant = load_named(config.assistant, "assistant")
    return index_config(assistant).index_asset, prompt_candidate(assistant.instance)


def _schedule(config: LlmEvalConfig, ref, candidate):
    """The cron, or any of: a new live index, a new prompt candidate, a new adapter candidate (when the gate judges
    the assistant's ``generator.adapter``: its lora_tune DAG emits ``<model_name>_candidate``)."""
    from pipelines.core.assets import adapter_candidate
    from pipelines.templates import load_named

    assets = ref.asset() | candidate.asset()
    adapter = load_named(config.assistant, "assistant").generator.adapter
    if adapter is not None and "adapter" in config.gate.candidates:
        assets = assets | adapter_candidate(adapter.model_name).asset()
    return asset_schedule(config.schedule, assets)


def _steps():
    """``pipelines.llm_eval.steps``, imported when a task runs, never when the DAG file is parsed."""
    from pipelines.llm_eval import steps

    return steps


def _doc(config: LlmEvalConfig, ref, candidate) -> str:
    from pipelines.core.assets import adapter_candidate
    from pipelines.templates import load_named

    when = (f"when the Asset `{ref.name}` is updated (a new live index) or `{candidate.name}` (the assistant gave "
            "a new prompt version @challenger)")
    adapter = load_named(config.assistant, "assistant").generator.adapter
    if adapter is not None and "adapter" in config.gate.candidates:
        when += (f", or `{adapter_candidate(adapter.model_name).name}` (its lora_tune DAG gave a new adapter "
                 "version @challenger)")
    if config.schedule:
        when = f"on `{config.schedule}` (UTC) and " + when
    limit = f"at most {config.cases} cases" if config.cases else "every case"
    return f"""\
# {config.dag_id}

{config.description or "Asks an assistant its golden set and scores the answers."}

**When it runs:** {when}; or by hand (*Trigger*: `cases` asks only that many, taken in turn from each category,
for a quick look). From a shell: `python -m pipelines.llm_eval run {config.instance} [--limit N]`.

1. **load_golden_set**: reads and validates `{config.golden_set}`; its sha256 goes with every result.
2. **evaluate_answers**: asks {limit} through the assistant `{config.assistant}` (its live index, champion prompt
   and generator; one MLflow trace per answer), then `mlflow.genai.evaluate` scores them with code scorers: hit@k
   and MRR against the answering document, required facts, token F1, ROUGE-L, groundedness and hallucination
   (answer sentences against the passages, MiniLM similarity ≥ {config.groundedness.min_similarity} and their
   numbers and identifiers in the passages), citation precision, refusals, tokens ≤
   {config.budgets.tokens_per_answer:,} and latency ≤ {config.budgets.latency_p95_ms:,} ms per answer. One MLflow
   evaluation run in the assistant's experiment, next to the traces; metrics per category too. XCom: the metrics.
3. **write_report**: the HTML report (every case: question, answer, sources, retrieved documents, failed checks
   and why) under `reports/{config.instance}/llm_eval/`, and as an artifact of the run.
4. **find_candidate**: a prompt or adapter version under `@{config.gate.challenger_alias}` not yet judged against
   today's champion on this golden set; skipped (with the reason) when there is none, and so is what follows.
5. **evaluate_candidate** → **gate_candidate** → **write_candidate_report**: the same cases answered with the
   candidate; promoted to `@champion` only if no metric regresses beyond `gate.max_regression`, every
   `gate.ceilings` holds and no category slice drops more than {config.gate.max_slice_regression:g}. The decision
   and its reason are tags on the version and both evaluation runs (the Loopline page shows them).
6. **gate_index**: when the live index version is new since the last evaluation on this golden set, today's
   answers are judged against that evaluation's by the same gate; blocked: the index is rolled back to the
   version before. Skipped when the index did not change.
7. **check_live_traffic** → **emit_fallback**: yesterday's live answers (downvote share ≤
   {config.live.max_downvote_share:g}, refusal share ≤ {config.live.max_refusal_share:g}, p95 ≤
   {config.live.max_latency_p95_ms:,} ms, from {config.live.min_answers} answers); past a threshold, the Asset
   `{config.fallback_asset}` is emitted (cooldown {config.live.cooldown_hours:g} h, at most
   {config.live.max_triggers_per_day} a day, once per run) and the DAG `{config.fallback_asset}` rolls back.
8. **compare_release**: when the assistant has a `release:` (shadow or canary) and a challenger under its
   alias, yesterday's answers of both arms are compared with the gate's regression check (`release:` here: at
   least {config.release.min_answers} answers each); passed: the challenger takes `@champion`; blocked: it is
   tagged `rolled_back` and loses its alias. Skipped without a release; it runs before **find_candidate**.

Config: `dags/configs/{config.dag_id}.yaml`. See docs/llm-eval.md#shadow-and-canary-releases.
"""


def build_dag(config: LlmEvalConfig) -> DAG:
    """Build the DAG ``{instance}_llm_eval`` from its config."""
    ref, candidate = _assets(config)

    @dag(
        **dag_arguments(config),
        schedule=_schedule(config, ref, candidate),
        max_active_runs=1,  # one model answering at a time: latency is part of what is measured
        max_active_tasks=1,  # champion and candidate answer one after the other, never side by side
        doc_md=_doc(config, ref, candidate),
        params={"cases": Param(config.cases, type=["null", "integer"], minimum=1, maximum=10_000, title="Cases",
                               description="Ask at most this many cases (in turn from each category); empty: "
                                           "the config's value (all when null).")},
    )
    def llm_eval_pipeline() -> None:
        @task
        def load_golden_set() -> dict:
            """Read and validate the golden set; report its digest and counts."""
            with fail_without_retry():
                return _steps().load_golden_set(config)

        @task
        def evaluate_answers(golden: dict, params=None, dag_run=None) -> dict:
            """Ask every case through the assistant and score the answers with mlflow.genai.evaluate."""
            with fail_without_retry():
                return _steps().evaluate_answers(config, limit=(params or {}).get("cases"), run_key=dag_run.run_id)

        @task
        def write_report(evaluation: dict) -> dict:
            """Write the run's HTML report and log it to the evaluation run."""
            with fail_without_retry():
                return _steps().write_report(config, evaluation)

        @task(trigger_rule="none_failed")  # runs after compare_release, skipped or not
        def find_candidate(golden: dict) -> dict:
            """The challenger version to judge, or skipped: nothing new under the challenger alias."""
            steps = _steps()
            with fail_without_retry(), skipped_on(steps.NoCandidate):
                return steps.find_candidate(config, golden)

        @task
        def evaluate_candidate(candidate: dict, params=None, dag_run=None) -> dict:
            """The same cases answered with the candidate instead of the champion."""
            with fail_without_retry():
                return _steps().evaluate_answers(config, limit=(params or {}).get("cases"),
                                                 run_key=dag_run.run_id, candidate=candidate)

        @task
        def gate_candidate(champion: dict, candidate_eval: dict, candidate: dict) -> dict:
            """Judge the candidate against the champion; tag the decision; promote it when it passed."""
            with fail_without_retry():
                return _steps().gate_candidate(config, champion, candidate_eval, candidate)

        @task
        def gate_index(champion: dict) -> dict:
            """A new live index version judged on the answers against the one before it; rolled back if blocked."""
            steps = _steps()
            with fail_without_retry(), skipped_on(steps.NoCandidate):
                return steps.gate_index(config, champion)

        @task
        def check_live_traffic(dag_run=None) -> dict:
            """Yesterday's live answers against the thresholds in `live:`."""
            with fail_without_retry():
                return _steps().check_live_traffic(config, dag_run.run_after)

        @task(trigger_rule="all_done")  # a failed live check does not hold the release decision back
        def compare_release(dag_run=None) -> dict:
            """The assistant's shadow or canary release on yesterday's answers: promoted, rolled back or undecided."""
            steps = _steps()
            with fail_without_retry(), skipped_on(steps.NoRelease):
                return steps.compare_release(config, dag_run.run_after, dag_run.run_id)

        fallback = config.fallback_asset_ref.asset()

        @task(outlets=[fallback])
        def emit_fallback(live: dict, dag_run=None, outlet_events=None) -> dict:
            """Emit the fallback Asset when live traffic regressed and the guard rails allow; else skipped."""
            steps = _steps()
            with fail_without_retry(), skipped_on(steps.NoFallback):
                extra = steps.emit_fallback(config, live, dag_run.run_id, dag_run.run_after)
            outlet_events[fallback].extra = extra
            return extra

        golden = load_golden_set()
        champion = evaluate_answers(golden)
        write_report(champion)
        gate_index(champion)
        live = check_live_traffic()
        emit_fallback(live)
        release = compare_release()
        live >> release
        candidate = find_candidate(golden)
        release >> candidate  # the live decision first: a challenger it rolls back is not evaluated offline
        candidate_eval = evaluate_candidate(candidate)
        champion >> candidate_eval  # one model at a time: the champion's answers first
        gate_candidate(champion, candidate_eval, candidate)
        write_report.override(task_id="write_candidate_report")(candidate_eval)

    return llm_eval_pipeline()
