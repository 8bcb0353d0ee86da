"""Dataset URIs, one scheme per kind of thing Loopline reads or writes (``scheme://authority/path``).

Partitioned data carries its day (``…/ds=2026-11-20``), so the lineage of a model trained on 28 days names the
28 days' features and, through them, the exact landing partitions dbt read for each.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path


def file(path: str | Path) -> str:
    """A file on the data home or the landing zone: ``file:///abs/path``."""
    return Path(path).resolve().as_uri()


def dbt_model(project: str, model: str, ds: date) -> str:
    """One day of a dbt model (what ``dbt build`` wrote for that day)."""
    return f"dbt://{project}/{model}/ds={ds.isoformat()}"


def expectations_result(instance: str, suite: str, ds: date) -> str:
    """A Great Expectations validation of one day's mart that passed."""
    return f"gx://{instance}/{suite}/ds={ds.isoformat()}"


def feature_view_day(project: str, view: str, ds: date) -> str:
    """One day of a Feast feature view (its offline source)."""
    return f"feast://{project}/{view}/ds={ds.isoformat()}"


def model_version(name: str, version: str | int) -> str:
    """A version of a model in MLflow's registry (models, adapters, embedders)."""
    return f"mlflow://registry/models/{name}/versions/{version}"


def prompt_version(name: str, version: str | int) -> str:
    """A version of a prompt in MLflow's prompt registry."""
    return f"mlflow://registry/prompts/{name}/versions/{version}"


def corpus(instance: str, digest: str) -> str:
    """The corpus of an index instance as one digest of its documents."""
    return f"corpus://{instance}/{digest}"


def index_version(instance: str, version: str) -> str:
    """A version of a retrieval index (a blue/green build)."""
    return f"index://{instance}/{version}"


def embedding_model(model_id: str) -> str:
    """The embedding model an index was built with (a package name, a folder, or a registered model URI)."""
    return model_id if "://" in model_id else f"model://embedding/{model_id.strip('/')}"
