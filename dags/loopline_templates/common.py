"""Pieces every template shares."""

from __future__ import annotations

from contextlib import contextmanager
from importlib import import_module

from airflow.sdk.exceptions import AirflowFailException


@contextmanager
def fail_without_retry(*errors: str):
    """Turn the named exceptions (``"module:Class"``) into a failure Airflow does not retry.

    Bad data stays bad on a retry: the task fails for good, with the message a person needs.
    The classes are imported only when an exception is raised, keeping parse time light.
    """
    try:
        yield
    except Exception as exc:
        for spec in errors:
            module, name = spec.split(":")
            if isinstance(exc, getattr(import_module(module), name)):
                raise AirflowFailException(str(exc)) from exc
        raise


def dag_arguments(config) -> dict:
    """What every Loopline DAG sets the same way from its config: id, owner, retries, tags, no catch-up."""
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
        },
    }
