"""Template ``lora_tune``: base model → instruction pairs from the docs → PEFT LoRA → evaluation → MLflow →
@challenger for the assistant's llm_eval gate (or @champion on perplexity)."""

from __future__ import annotations

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from loopline_templates.common import dag_arguments, fail_without_retry
from pipelines.core.params import form_params
from pipelines.lora.config import LORA_FORM, LoraTuneConfig


def _params(config: LoraTuneConfig) -> dict[str, Param]:
    """The trigger form: the config fields of ``LORA_FORM``, typed and bounded by the model, and force_promote."""
    return {
        **form_params(config, LORA_FORM),
        "force_promote": Param(False, type="boolean", title="Force promote",
                               description="Give a registered adapter the champion alias at once, past the "
                                           "perplexity rule or the llm_eval gate."),
    }


def _schedule(config: LoraTuneConfig):
    ref = config.index_asset_ref
    asset = ref.asset() if ref else None
    if config.schedule and asset:
        return AssetOrTimeSchedule(timetable=CronTriggerTimetable(config.schedule, timezone="UTC"), assets=[asset])
    if config.schedule:
        return CronTriggerTimetable(config.schedule, timezone="UTC")
    return [asset] if asset else None


def _steps():
    """``pipelines.lora.steps``, imported when a task runs, never when the DAG file is parsed."""
    from pipelines.lora import steps

    return steps


def _doc(config: LoraTuneConfig) -> str:
    when = []
    if config.index_asset_ref:
        when.append(f"when the Asset `{config.index_asset_ref.name}` is updated (the docs index changed)")
    if config.schedule:
        when.append(f"on `{config.schedule}` (UTC)")
    base = (f"built here if missing: a tiny Llama ({config.tiny_model.num_layers} layers, hidden "
            f"{config.tiny_model.hidden_size}) with a BPE tokenizer trained on the corpus"
            if config.tiny_model else "a checkpoint that must be there")
    ev = config.evaluation
    if config.candidate_asset_ref:
        promotion = (f"the version takes `@{ev.candidate_alias}`, and the assistant's llm_eval gate moves `champion` "
                     "on answer metrics (against the base model alone while no adapter is champion).")
        announce = (f"\n6. **announce_adapter_candidate**: emits the Asset `{config.candidate_asset_ref.name}` when a "
                    f"version got `@{ev.candidate_alias}`, which starts the llm_eval DAG; skipped otherwise.")
    else:
        promotion = "the `champion` alias moves only if it also beats the champion on the same pairs."
        announce = ""
    form = ", ".join(field.title for field in LORA_FORM)
    return f"""\
# {config.dag_id}

{config.description or "LoRA fine-tuning of a causal LM on instruction pairs from the docs, gated and registered."}

**When it runs:** {" or ".join(when) or "only by hand"}; or by hand with the form ({form}, force promote).

1. **prepare_base_model**: `{config.base_model}`, {base}. Checks that it is a causal LM whose tokenizer
   matches its embedding, and digests the folder (lineage).
2. **build_dataset**: one instruction/answer pair per section of `{config.corpus.path}`, split by a stable
   hash ({config.dataset.eval_fraction:.0%} eval), validated: non-empty, length bounds, no text in both splits.
3. **tune_adapter**: PEFT LoRA (r={config.lora.rank}, alpha={config.lora.alpha}, on
   {", ".join(config.lora.target_modules)}), seeded, CUDA when there; the loss of every step goes to the
   log and to MLflow experiment `{config.experiment_name}` with the params, the dataset and the adapter.
   Same inputs again: the adapter and its run are reused.
4. **evaluate_adapter**: eval loss and perplexity of the base model and of base + adapter on the held-out
   pairs; merged weights must give base + adapter's logits within {ev.merge_tolerance:g}.
5. **register_adapter**: registers `{config.model_name}` only if perplexity drops by at least
   {ev.min_improvement:.0%}; {promotion}
   The reason is a tag of the version, with the lineage (corpus digest, docs index version).{announce}

A missing base model, a tokenizer that does not match, an empty dataset or a failed merge check fails the
run without retry: nothing is registered, the champion stays. Config: `dags/configs/{config.dag_id}.yaml`.
See docs/lora.md.
"""


def build_dag(config: LoraTuneConfig) -> DAG:
    """Build the DAG ``{instance}_lora_tune`` from its config."""

    @dag(
        **dag_arguments(config),
        schedule=_schedule(config),
        max_active_runs=1,  # one writer per adapter folder and registered model
        params=_params(config),
        doc_md=_doc(config),
    )
    def lora_tune_pipeline() -> None:
        def run_config(params) -> LoraTuneConfig:
            return _steps().resolve_run(config, params)

        @task
        def prepare_base_model(params=None) -> dict:
            """Build the tiny default model if needed; check the base model and its tokenizer; digest it."""
            with fail_without_retry():
                return _steps().prepare_base_model(run_config(params))

        @task
        def build_dataset(base: dict, params=None) -> dict:
            """Instruction pairs from the corpus, split into train and eval, validated."""
            with fail_without_retry():
                return _steps().build_dataset(run_config(params), base)

        @task
        def tune_adapter(base: dict, data: dict, params=None) -> dict:
            """Train the LoRA adapter and log it to MLflow (or reuse the one these inputs made)."""
            return _steps().tune_adapter(run_config(params), base, data)

        @task
        def evaluate_adapter(base: dict, data: dict, tuned: dict, params=None) -> dict:
            """Base against base + adapter on the held-out pairs; the merge check."""
            with fail_without_retry():
                return _steps().evaluate_adapter(run_config(params), base, data, tuned)

        @task
        def register_adapter(base: dict, data: dict, tuned: dict, evaluation: dict, params=None) -> dict:
            """Register the adapter if it beats the base by the margin; @challenger for the gate, or champion."""
            force = bool(params.get("force_promote"))
            return _steps().register_adapter(run_config(params), base, data, tuned, evaluation, force=force)

        base = prepare_base_model()
        data = build_dataset(base)
        tuned = tune_adapter(base, data)
        evaluation = evaluate_adapter(base, data, tuned)
        registration = register_adapter(base, data, tuned, evaluation)
        if config.candidate_asset_ref:
            candidate = config.candidate_asset_ref.asset()

            @task(outlets=[candidate])
            def announce_adapter_candidate(registration: dict, outlet_events=None) -> dict:
                """Emit the adapter-candidate Asset when a version got the challenger alias; else skipped."""
                from airflow.sdk.exceptions import AirflowSkipException

                if not registration.get("challenger_set"):
                    raise AirflowSkipException(f"nothing new for the gate: {registration['reason']}")
                extra = {"model_name": registration["model_name"], "version": registration["version"],
                         "champion": registration["champion"], "index_version": registration.get("index_version")}
                outlet_events[candidate].extra = extra
                return extra

            announce_adapter_candidate(registration)

    return lora_tune_pipeline()
