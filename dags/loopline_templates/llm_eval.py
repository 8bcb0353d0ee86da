"""Template ``llm_eval``: an assistant asked its golden set; answers scored by code scorers in MLflow; HTML report."""

from __future__ import annotations

from airflow.sdk import DAG, Param, dag, task

from loopline_templates.common import asset_schedule, dag_arguments, fail_without_retry
from pipelines.llm_eval.config import LlmEvalConfig


def _index_asset(config: LlmEvalConfig):
    """The Asset the assistant's index emits on a new live version (YAML and pydantic only, at parse time)."""
    from pipelines.assistant.retrieval import index_config
    from pipelines.templates import load_named

    return index_config(load_named(config.assistant, "assistant")).index_asset


def _steps():
    """``pipelines.llm_eval.steps``, imported when a task runs, never when the DAG file is parsed."""
    from pipelines.llm_eval import steps

    return steps


def _doc(config: LlmEvalConfig, ref) -> str:
    when = f"when the Asset `{ref.name}` is updated (a new live index)"
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

Config: `dags/configs/{config.dag_id}.yaml`. See docs/llm-eval.md.
"""


def build_dag(config: LlmEvalConfig) -> DAG:
    """Build the DAG ``{instance}_llm_eval`` from its config."""
    ref = _index_asset(config)

    @dag(
        **dag_arguments(config),
        schedule=asset_schedule(config.schedule, ref.asset()),
        max_active_runs=1,  # one model answering at a time: latency is part of what is measured
        doc_md=_doc(config, ref),
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

        write_report(evaluate_answers(load_golden_set()))

    return llm_eval_pipeline()
