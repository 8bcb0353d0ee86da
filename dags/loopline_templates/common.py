"""Pieces every template shares."""

from __future__ import annotations

from contextlib import contextmanager
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
