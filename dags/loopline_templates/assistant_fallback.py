"""Template ``assistant_fallback``: on its Asset, move the assistant's champion back to the last version that passed."""

from __future__ import annotations

from airflow.sdk import DAG, Param, dag, task

from loopline_templates.common import dag_arguments, fail_without_retry
from pipelines.llm_eval.config import AssistantFallbackConfig


def _steps():
    """``pipelines.llm_eval.steps``, imported when a task runs, never when the DAG file is parsed."""
    from pipelines.llm_eval import steps

    return steps


def _reasons(triggering_asset_events, reason: str | None) -> list[str]:
    """Why this run rolls back: the reasons in the triggering events' extras, or the trigger form's reason."""
    reasons = []
    for events in (triggering_asset_events or {}).values():
        for event in events:
            extra = event.extra or {}
            source = extra.get("source", "live traffic")
            day = (extra.get("traffic") or {}).get("day", "?")
            reasons += [f"{source} ({day}): {r}" for r in extra.get("crossed") or extra.get("reasons") or []]
    return reasons or ([reason] if reason else [])


def build_dag(config: AssistantFallbackConfig) -> DAG:
    """Build the DAG ``{instance}_assistant_fallback`` from its config: scheduled on the Asset of the same name."""
    from pipelines.templates import load_named

    evaluation = load_named(config.evaluation, "llm_eval")
    ref = evaluation.fallback_asset_ref

    @dag(
        **dag_arguments(config),
        schedule=[ref.asset()],
        max_active_runs=1,
        doc_md=f"""\
# {config.dag_id}

{config.description or "Rolls the assistant back to the last version that passed the gate."}

**When it runs:** when `{evaluation.dag_id}` emits the Asset `{ref.name}` (yesterday's live answers crossed a
threshold of its `live:` block: downvotes, refusals or latency; cooldown and a daily cap there), or by hand with a
reason.

**roll_back_champion**: the most recently promoted of the assistant `{evaluation.assistant}`'s prompt and adapter
gets its `@champion` alias moved back to the version it replaced (the last one that passed the gate), and both
versions are tagged with why (`loopline.rollback.reason`). Prompts are read without cache: the next answer uses
the restored version. Fails, saying so, when the gate promoted nothing (the regression has another cause).

Config: `dags/configs/{config.dag_id}.yaml`. See docs/llm-eval.md.
""",
        params={"reason": Param(None, type=["null", "string"], minLength=3, maxLength=500, title="Reason",
                                description="Why you roll back by hand (recorded on the versions).")},
    )
    def assistant_fallback_pipeline() -> None:
        @task(inlets=[ref.asset()])
        def roll_back_champion(params=None, dag_run=None, triggering_asset_events=None) -> dict:
            """Move the champion alias back to the last version that passed; tag both versions with why."""
            reasons = _reasons(triggering_asset_events, (params or {}).get("reason"))
            with fail_without_retry():
                return _steps().roll_back_champion(config, reasons, dag_run.run_id)

        roll_back_champion()

    return assistant_fallback_pipeline()
