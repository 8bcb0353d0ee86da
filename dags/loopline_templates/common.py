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
