"""Pieces every template shares."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path


@contextmanager
def fail_without_retry():
    """Turn a :class:`pipelines.core.errors.NotRetryable` into a failure Airflow does not retry.

    Bad data stays bad on a retry: the task fails for good, with the message a person needs. Any other
    exception (a lock, a dropped connection) propagates and is retried as configured.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.core.errors import NotRetryable

    try:
        yield
    except NotRetryable as exc:
        raise AirflowFailException(str(exc)) from exc


@contextmanager
def skipped_on(*reasons: type[Exception]):
    """Turn one of ``reasons`` (nothing to check, emit or judge) into a skipped task, its message the reason: the
    tasks downstream of it are skipped too."""
    from airflow.sdk.exceptions import AirflowSkipException

    try:
        yield
    except reasons as exc:
        raise AirflowSkipException(str(exc)) from exc


def config_for(dag_file: str | Path, template: str):
    """The validated config of the DAG file's own YAML (``dags/configs/<name>.yaml``), which must name ``template``.

    Raises:
        PipelineConfigError: the config is missing or invalid; Airflow shows it as this file's import error.
    """
    from pipelines.templates import config_path_for, load_config

    return load_config(config_path_for(dag_file), template=template)


def dag_arguments(config) -> dict:
    """What every Loopline DAG sets the same way from its config: id, owner, retries, task timeout, tags, no
    catch-up."""
    from datetime import timedelta

    return {
        "dag_id": config.dag_id,
        "description": config.description or None,
        "start_date": config.start_date,
        "catchup": False,
        "tags": ["loopline", f"template:{config.template}", *config.tags],
        "default_args": {
            "owner": config.owner,
            "retries": config.retries,
            "retry_delay": timedelta(minutes=config.retry_delay_minutes),
            "execution_timeout": timedelta(minutes=config.task_timeout_minutes),
        },
    }


# The guard task's own start_date: early enough that Airflow creates it for any logical date.
_GUARD_START = datetime(1970, 1, 1, tzinfo=UTC)


def run_before_start_message(config, logical_date: datetime | None,
                             data_interval: tuple[datetime | None, datetime | None] = (None, None),
                             run_type: str | None = None) -> str | None:
    """Why a run whose logical date is before the DAG's ``start_date`` is refused, or None when it is not.

    Airflow creates no task instance for a logical date before a task's start date (the DAG's), so such a run
    would "succeed" having done nothing: a copied YAML keeps another use case's ``start_date``. A backfill's run
    (``run_type`` ``backfill``) is not refused: Airflow creates every task of it whatever their start date, so
    it does the day's work.
    """
    start = config.start_date
    if logical_date is None or logical_date >= start or run_type == "backfill":
        return None
    begin, end = data_interval
    interval = f" (data interval [{begin.date()}, {end.date()}))" if begin and end else ""
    return (f"{config.dag_id}: this run's logical date {logical_date.isoformat()}{interval} is before the DAG's "
            f"start_date {start.isoformat()} (start_date in dags/configs/{config.dag_id}.yaml), so Airflow would run "
            "none of its tasks and mark the run a success having done nothing. Set start_date in the YAML on or "
            f"before {logical_date.date()} (the first day of your data), or run a later interval")


def start_date_guard(config):
    """The task ``check_start_date``: fails a run whose logical date is before the DAG's ``start_date``
    (a backfill's run excepted, see :func:`run_before_start_message`).

    Call it inside the DAG and connect it to nothing. It is the only task with an early start date of its own, so
    it is the one Airflow creates for such a run (the others are before their start date); and a run's state
    follows its leaf tasks, so the guard must be a leaf of its own: upstream of the first task, its failure
    would leave no leaf instance and the run would still be marked a success. In any other run it passes at
    once, beside the pipeline.
    """
    from airflow.sdk import task

    @task(task_id="check_start_date")
    def check_start_date(dag_run=None, data_interval_start=None, data_interval_end=None) -> None:
        """Fail the run if its logical date is before the DAG's start_date (no other task would run)."""
        from airflow.sdk.exceptions import AirflowFailException

        message = run_before_start_message(config, dag_run.logical_date, (data_interval_start, data_interval_end),
                                           dag_run.run_type)
        if message:
            raise AirflowFailException(message)

    guard = check_start_date()
    # add_task gave it the later of its own and the DAG's start date: set it after, so it alone runs early.
    guard.operator.start_date = _GUARD_START
    return guard


def asset_schedule(cron: str | None, asset):
    """On every update of ``asset``, and also on ``cron`` (UTC) when the YAML names one."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    if cron:
        return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=[asset])
    return [asset]
