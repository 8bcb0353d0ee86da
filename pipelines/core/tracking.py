"""MLflow for every pipeline: one tracking store, experiments with artifacts under the data home,
and the model registry's ``champion`` alias.

Embedded default: a SQLite backend store (``$LOOPLINE_HOME/mlflow/mlflow.db``) and local artifacts, no
server. ``LOOPLINE_MLFLOW_TRACKING_URI`` points every pipeline at a tracking server instead.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipelines.core.settings import LooplineSettings, get_settings

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

CHAMPION = "champion"


def configure_mlflow(settings: LooplineSettings | None = None) -> str:
    """Point MLflow (tracking and registry) at Loopline's store; return its URI."""
    import mlflow

    settings = settings or get_settings()
    uri = settings.mlflow_uri
    if uri.startswith("sqlite:///"):
        settings.path("mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def client(settings: LooplineSettings | None = None) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    uri = configure_mlflow(settings)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(name: str, settings: LooplineSettings | None = None) -> str:
    """The id of experiment ``name``, created with its artifacts under the data home if new."""
    import mlflow

    settings = settings or get_settings()
    configure_mlflow(settings)
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = settings.mlflow_artifacts / name
    location.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(name, artifact_location=location.as_uri())


def champion(model_name: str, settings: LooplineSettings | None = None) -> ModelVersion | None:
    """The registered version that carries the ``champion`` alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client(settings).get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def promote(model_name: str, version: str | int, reason: str, settings: LooplineSettings | None = None) -> None:
    """Move the ``champion`` alias to ``version`` and record why on the version."""
    mlflow_client = client(settings)
    mlflow_client.set_registered_model_alias(model_name, CHAMPION, str(version))
    mlflow_client.set_model_version_tag(model_name, str(version), "loopline.promotion", "promoted")
    mlflow_client.set_model_version_tag(model_name, str(version), "loopline.promotion_reason", reason)
    log.info("%s version %s is the champion now: %s", model_name, version, reason)


def keep_champion(model_name: str, version: str | int, reason: str, settings: LooplineSettings | None = None) -> None:
    """Leave the alias where it is and record on the challenger why it was not promoted."""
    mlflow_client = client(settings)
    mlflow_client.set_model_version_tag(model_name, str(version), "loopline.promotion", "rejected")
    mlflow_client.set_model_version_tag(model_name, str(version), "loopline.promotion_reason", reason)
    log.info("%s version %s not promoted: %s", model_name, version, reason)


def find_version_by_tag(model_name: str, key: str, value: str, settings: LooplineSettings | None = None) -> Any:
    """A registered version of ``model_name`` whose tag ``key`` equals ``value`` (for idempotency), or None."""
    mlflow_client = client(settings)
    try:
        versions = mlflow_client.search_model_versions(f"name = '{model_name}' and tags.`{key}` = '{value}'")
    except Exception:  # no such model yet
        return None
    return max(versions, key=lambda v: int(v.version)) if versions else None
