"""Template ``drift_check``: Evidently drift check → policy → guard rails → a retrain or reindex Asset event."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import DAG, CronTriggerTimetable, Param, dag, task

from loopline_templates.common import dag_arguments, fail_without_retry, skipped_on

if TYPE_CHECKING:
    from pipelines.drift.config import DriftCheckConfig
    from pipelines.drift.targets import TargetAsset


def _signals(config: DriftCheckConfig) -> str:
    if config.kind == "tabular":
        t = config.tabular
        return f"""\
- **data drift**: Evidently `DataDriftPreset` over the champion's feature columns, per-column tests with
  `{t.num_method}` (numbers) / `{t.cat_method}` (categories) at threshold {t.column_threshold}; fires when
  at least **{t.drift_share:.0%}** of the columns drift;
- **prediction drift**: `ValueDrift` of the champion's scores (`{t.num_method}`, threshold
  {t.prediction_threshold});
- **performance**: once at least {t.min_labels} late labels arrived, ROC AUC of the champion's scores (binary)
  or the training's promotion metric (regression); fires when ROC AUC or R² falls more than
  **{t.performance_drop}** below the champion's holdout value, or RMSE / MAE rises more than
  **{t.performance_drop:.0%}** above it.

Reference: the training set of the current champion of `{t.training_config}`, found through its MLflow
lineage (dataset input and `dataset_digest`). Current: the last {config.window_days} days of published features,
with the champion's batch predictions (rows without them are scored by the check)."""
    r = config.rag
    return f"""\
- **retrieval**: hit@k of the live index of `{r.rag_config}` on its frozen question set; fires when it falls more
  than **{r.hit_rate_drop}** below the value recorded for the live version;
- **corpus change**: fires when **{r.corpus_change_share:.0%}** of the chunks differ between the document folder
  and the live index;
- **corpus embeddings**: Evidently embeddings drift (cosine distance of the means) against the corpus as it was
  indexed; fires at **{r.corpus_drift_threshold}**;
- **query embeddings**: logged queries of the last {config.window_days} days against the frozen questions (at least
  {r.min_queries} queries); fires at **{r.query_drift_threshold}**."""


def _doc(config: DriftCheckConfig, target: TargetAsset) -> str:
    g = config.guard_rails
    default_description = (f"Daily drift check of {config.target_config}; asks for a {target.action} when drift "
                           "passes the policy.")
    return f"""\
# {config.dag_id}

{config.description or default_description}

**When it runs:** `{config.schedule}` (UTC), or by hand (form: window end, window days).

1. **check_drift**: measures, saves the Evidently HTML report to `reports/{config.instance}/drift/<day>.html`
   under the data home, logs it to MLflow (experiment `{config.experiment_name}`) and records the check in
   the drift history (`drift/history.db`). No reference yet (no champion or no live index) or no current
   data: the run is **skipped** with the reason. A schema mismatch between reference and current **fails**
   the run without retry, and nothing is triggered.
2. **judge_drift**: the thresholds. Any of these fires:
{_signals(config)}
3. **emit_{target.action}**: when drift fired and the guard rails allow, emits the Asset **`{target.name}`**
   (`{target.uri}`), on which **`{target.dag_id}`** is scheduled: the {target.action} starts with no one in the
   loop. The event's extra carries the evidence: signals and reasons, drift share, drifted columns,
   report URI, MLflow run id, the reference. Otherwise the task is **skipped** and its log says why.

**Guard rails** (per target Asset, from the drift history, on the runs' logical times):

| rail | setting | effect |
|---|---|---|
| dedupe | always | a DAG run emits exactly once: a retry or a clear of the same run does not emit again, and a retry of a try that died after claiming the emission completes it |
| cap | `max_triggers_per_day: {g.max_triggers_per_day}` | at most {g.max_triggers_per_day} drift-triggered run(s) of `{target.dag_id}` per UTC day (0: report only) |
| cooldown | `cooldown_hours: {g.cooldown_hours:g}` | no second trigger within {g.cooldown_hours:g} h of the last one |

Config: `dags/configs/{config.dag_id}.yaml`. What to do when it fires: docs/drift.md.
"""  # noqa: E501 (a Markdown table row is one line)


def _params(config: DriftCheckConfig) -> dict[str, Param]:
    from pipelines.core.params import form_params
    from pipelines.drift.config import DRIFT_FORM

    return {
        "window_end": Param(None, type=["null", "string"], format="date", title="Window end (exclusive)",
                            description="First day not checked, YYYY-MM-DD; empty: the day the run starts."),
        **form_params(config, DRIFT_FORM),
    }


def build_dag(config: DriftCheckConfig) -> DAG:
    """Build the DAG ``{instance}_drift_check`` from its config."""
    from pipelines.drift.targets import target_asset

    target = target_asset(config)
    trigger = target.asset()

    @dag(
        schedule=CronTriggerTimetable(config.schedule, timezone="UTC"),
        max_active_runs=1,
        params=_params(config),
        doc_md=_doc(config, target),
        **dag_arguments(config),
    )
    def drift_check_pipeline() -> None:
        @task
        def check_drift(params=None, dag_run=None) -> dict:
            """Measure drift, save the Evidently report, log it to MLflow, record the check."""
            from pipelines.drift import checks, steps
            with fail_without_retry(), skipped_on(checks.NothingToCheck):
                return steps.check_drift(steps.resolve_run(config, params), dag_run.run_id, dag_run.run_after,
                                         params.get("window_end"))

        @task
        def judge_drift(evidence: dict, params=None) -> dict:
            """Apply the thresholds: which signals fire, and why."""
            from pipelines.drift import steps
            return steps.judge_drift(steps.resolve_run(config, params), evidence)

        # The target is an inlet too, only so that a retry can read its events: did Airflow record this run's?
        @task(task_id=f"emit_{target.action}", outlets=[trigger], inlets=[trigger])
        def emit(evidence: dict, verdict: dict, params=None, dag_run=None, ti=None, outlet_events=None,
                 inlet_events=None) -> dict:
            """Emit the target's Asset with the evidence, unless the policy or a guard rail says no."""
            from pipelines.drift import steps

            def already_emitted() -> bool:
                return any(e.source_dag_id == dag_run.dag_id and e.source_run_id == dag_run.run_id
                           for e in inlet_events[trigger])

            with skipped_on(steps.NotEmitted):
                extra = steps.emit_trigger(steps.resolve_run(config, params), target, evidence, verdict,
                                           dag_run.run_id, dag_run.run_after, ti.try_number,
                                           already_emitted=already_emitted)
            outlet_events[trigger].extra = extra
            return extra

        evidence = check_drift()
        emit(evidence, judge_drift(evidence))

    return drift_check_pipeline()
