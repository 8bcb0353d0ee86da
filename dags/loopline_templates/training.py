"""Template ``training``: Feast training set → Great Expectations → model → MLflow → champion alias → scoring."""

from __future__ import annotations

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from loopline_templates.common import dag_arguments, fail_without_retry, start_date_guard
from pipelines.core.params import form_params
from pipelines.training.config import TRAINING_FORM, TrainingConfig, check_against_features, load_features_config


def _params(config: TrainingConfig) -> dict[str, Param]:
    """The trigger form: the config fields of TRAINING_FORM (typed and bounded by the model), then the run's own."""
    return {
        **form_params(config, TRAINING_FORM),
        "window_end": Param(None, type=["null", "string"], format="date", title="Window end (exclusive)",
                            description="Last label day + 1, YYYY-MM-DD; empty: the day the run starts."),
        "force_promote": Param(False, type="boolean", title="Force promote",
                               description="Make this version the champion even if the policy says no."),
    }


def _doc(config: TrainingConfig) -> str:
    p = config.policy
    slices = (f"no slice of `{p.slices.column}` losing more than {p.max_slice_regression}" if p.slices is not None
              else "no slice gate (`promotion.slices` not set)")
    direction = "higher" if p.higher_is_better else "lower"
    floor = (f"`{p.metric}` {'≥' if p.higher_is_better else '≤'} {p.floor}" if p.floor is not None
             else f"no floor on `{p.metric}`")
    baseline = (f"a first model must beat the baseline `{p.baseline}` by {p.min_gain_over_baseline}"
                if p.baseline else "no baseline (`promotion.baseline` not set)")
    checks = config.checks
    label_check = {
        "binary": f"a label rate within [{checks.label_rate_min}, {checks.label_rate_max}]",
        "multiclass": f"2 to {checks.max_classes} classes",
        "regression": "a finite, varying target",
    }[config.task]
    approval = (f"""   **Approval required** (`promotion.approval: required`): a version the gate promotes waits in
   **approve_promotion** (Browse → Required Actions, or the task's page) with the evidence; Approve moves the alias
   (**finalize_promotion**, only if the champion judged against still holds it), Reject or no answer within
   {p.approval_timeout_hours:g} h leaves the champion. The answer and who gave it go into the audit record.
""" if p.approval == "required" else "")
    return f"""\
# {config.dag_id}

{config.description or "Trains, registers and promotes the " + config.model_name + " model."}

**When it runs:** on `{config.schedule}` (UTC) **or** when the Asset `{config.retrain_request.name}` gets an event
(drift-driven retraining), whichever comes first; or by hand with the form (model family, hyperparameters,
window, force promote).

0. **check_start_date** (beside the others): fails a run whose logical date is before `start_date`
   ({config.start_date:%Y-%m-%d}), for which Airflow would run no other task and report a success.
1. **wait_for_features**: waits (reschedule mode, up to {config.features_wait_hours} h) until
   `{config.features_config}` has materialized the newest feature day the window reads. It never trains on
   features that are not online yet.
2. **build_training_set**: labels of the last {config.window_days} days joined point-in-time to Feast's
   historical features (a label only sees values stamped before it); the latest {config.holdout_fraction:.0%} of
   label days are held out. Labels stamped at or after 23:59:59 UTC of their landing day would read that day's
   features: `label_leakage: {config.label_leakage}`. Two labels of one entity on one day are refused.
3. **validate_training_set**: Great Expectations: the schema, at least {config.checks.min_rows} rows,
   {label_check} (task `{config.task}`).
4. **train_and_register**: `{config.family}` by default, seeded; params, metrics, plots, the dataset and the
   model (with signature) go to MLflow, and a version of `{config.model_name}` is registered. Same inputs
   again: the existing version is reused, nothing new is registered.
5. **evaluate_and_promote**: the challenger and the `champion` on the same holdout, by `{p.metric}`
   ({direction} is better). Promotion needs {floor}, a gain of at least {p.min_improvement} over the champion,
   and {slices}; {baseline}.
   Otherwise the version is tagged with the reason. Every verdict is an audit record in MLflow
   (experiment `loopline_audit`: the evidence, git commit, config digest, window, dataset digest).
   The alias moves last, after the version's tags, and only if it still points at the champion judged
   against; a champion that cannot be scored blocks the promotion (the task fails and retries).
{approval}6. **score_batch**: the newest day of features scored with the version `@champion` names (loaded by number);
   predictions (column `{config.prediction_name}`), stamped with that version, go under the data home.

A training set that fails its checks fails the run without retry: nothing is registered, the champion stays.
Config: `dags/configs/{config.dag_id}.yaml`. Policy: docs/training.md.
"""


def build_dag(config: TrainingConfig) -> DAG:
    """Build the DAG ``{instance}_training`` from its config.

    Raises:
        TrainingConfigError: the label block does not fit the features instance's landing contract (an import
            error of this DAG file, at parse time: reading two YAML files, nothing else).
    """
    check_against_features(config, load_features_config(config))
    schedule = AssetOrTimeSchedule(timetable=CronTriggerTimetable(config.schedule, timezone="UTC"),
                                   assets=config.retrain_request.asset())

    @dag(
        schedule=schedule,
        max_active_runs=1,
        params=_params(config),
        doc_md=_doc(config),
        **dag_arguments(config),
    )
    def training_pipeline() -> None:
        def run_config(params):
            from pipelines.training import steps
            return steps.resolve_run(config, params)

        def run_window(params, dag_run):
            from pipelines.training import steps
            return steps.window_for(run_config(params), dag_run.run_after.date(), params.get("window_end"))

        @task.sensor(poke_interval=60, timeout=config.features_wait_hours * 3600, mode="reschedule")
        def wait_for_features(params=None, dag_run=None) -> bool:
            """Wait until the window's newest feature day is materialized."""
            from pipelines.training import steps
            return steps.features_ready(config, run_window(params, dag_run))

        @task
        def build_training_set(params=None, dag_run=None) -> dict:
            """Labels of the window joined point-in-time to the feature service."""
            from pipelines.training import steps
            with fail_without_retry():
                return steps.build_training_set(run_config(params), run_window(params, dag_run))

        @task
        def validate_training_set(info: dict, params=None) -> dict:
            """Great Expectations: schema, row count, label balance."""
            from pipelines.training import steps
            with fail_without_retry():
                return steps.validate_training_set(run_config(params), info)

        @task
        def train_and_register(info: dict, params=None) -> dict:
            """Train, log to MLflow and register a version (or reuse the one these inputs made)."""
            from pipelines.training import steps
            with fail_without_retry():
                return steps.train_and_register(run_config(params), info)

        @task(outlets=[config.champion_asset.asset()])
        def evaluate_and_promote(info: dict, trained: dict, params=None, dag_run=None) -> dict:
            """Challenger against champion on the same holdout; move the alias (or ask a person) or say why not."""
            from pipelines.training import steps
            with fail_without_retry():
                return steps.evaluate_and_promote(run_config(params), info, trained,
                                                  force=bool(params.get("force_promote")), source=_source(dag_run))

        @task(trigger_rule="none_failed")
        def score_batch(decision: dict) -> dict:
            """Score the newest features with the champion; write predictions with its version."""
            from pipelines.training import steps
            with fail_without_retry():
                return steps.score_latest(config)

        info = build_training_set()
        checked = validate_training_set(info)
        trained = train_and_register(info)
        decision = evaluate_and_promote(info, trained)
        start_date_guard(config)  # a leaf of its own (see its docstring)
        wait_for_features() >> info
        checked >> trained
        scored = score_batch(decision)
        if config.policy.approval == "required":
            approval_tasks(config, run_config, info, trained, decision) >> scored

    return training_pipeline()


def _source(dag_run) -> dict:
    return {"dag_id": dag_run.dag_id, "run_id": dag_run.run_id}


def approval_tasks(config: TrainingConfig, run_config, info, trained, decision):
    """``promotion.approval: required``: a person approves or rejects what the gate would promote.

    needs_approval skips the request when the gate said no (or the version is the champion already);
    approve_promotion waits in Airflow's Required Actions (Human-in-the-loop) with the evidence; no answer within
    ``approval_timeout_hours`` answers Reject; finalize_promotion moves the alias or records the rejection, and who.
    """
    from datetime import timedelta

    from airflow.providers.standard.operators.hitl import HITLOperator

    from pipelines.training.steps import APPROVE, REJECT

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def needs_approval(decision: dict) -> bool:
        """Ask a person only when the gate said promote (promotion.approval: required)."""
        return bool(decision.get("awaiting_approval"))

    pulled = "ti.xcom_pull(task_ids='evaluate_and_promote')"
    approve_promotion = HITLOperator(
        task_id="approve_promotion",
        subject="{{ " + pulled + "['approval_subject'] }}",
        body="{{ " + pulled + "['approval_body'] }}",
        options=[APPROVE, REJECT],
        defaults=[REJECT],  # what the timeout answers
        response_timeout=timedelta(hours=config.policy.approval_timeout_hours),
        doc_md="A person approves or rejects the promotion (Required Actions); no answer before the timeout rejects.",
    )

    @task
    def finalize_promotion(info: dict, trained: dict, decision: dict, response: dict, params=None,
                           dag_run=None) -> dict:
        """Move the alias if approved; record the answer and who gave it either way."""
        from pipelines.training import steps
        with fail_without_retry():
            return steps.finalize_promotion(run_config(params), info, trained, decision, response,
                                            source=_source(dag_run))

    needs_approval(decision) >> approve_promotion
    return finalize_promotion(info, trained, decision, approve_promotion.output)
