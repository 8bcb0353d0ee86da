"""MLflow for every pipeline: one tracking store, experiments with artifacts under the data home,
and the model registry's ``champion`` alias.

Embedded default: a SQLite backend store (``$LOOPLINE_HOME/mlflow/mlflow.db``) and local artifacts, no
server. ``LOOPLINE_MLFLOW_TRACKING_URI`` points every pipeline at a tracking server instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.faults import crash_point
from pipelines.core.settings import LooplineSettings, get_settings

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

CHAMPION = "champion"
RUN_KEY_TAG = "loopline.run_key"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class ChampionMoved(RuntimeError):
    """The ``champion`` alias moved while a gate was judging against it (a person or another run moved it).

    Retryable: nothing was recorded on the challenger, the alias stays where it was moved to, and the retry
    judges the challenger against the champion that holds the alias then.
    """


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


@dataclass(frozen=True)
class Decision:
    """A gate's verdict on a candidate (a model version, an adapter, an index version): go or no, and why.

    ``reason`` is a sentence a person can act on; it is recorded where the candidate is (a version tag,
    the index catalog) and shown on the Loopline page.
    """

    promote: bool
    reason: str


def log_to_run_by_key(experiment: str, run_key: str, run_name: str, *, params: dict[str, Any] | None = None,
                      metrics: dict[str, float | None] | None = None, tags: dict[str, Any] | None = None,
                      start_tags: dict[str, Any] | None = None, artifacts: dict[str, Path] | None = None,
                      settings: LooplineSettings | None = None) -> str:
    """Log into the one MLflow run of ``run_key`` in ``experiment``, creating it the first time; return its id.

    A task re-run (a retry, a cleared task) lands in the same MLflow run: the run is found by its
    ``loopline.run_key`` tag, params already logged are not logged again (MLflow refuses a changed value),
    metrics and tags are (re)written. ``artifacts`` maps an artifact folder to a local file.
    """
    from mlflow.entities import Metric, Param, RunTag

    run_key = run_key.replace("'", "_")  # it goes into a filter string
    mlflow_client = client(settings)
    experiment_key = experiment_id(experiment, settings)
    found = mlflow_client.search_runs([experiment_key], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'",
                                      max_results=1)
    if found:
        run_id, logged = found[0].info.run_id, found[0].data.params
    else:
        first_tags = {RUN_KEY_TAG: run_key, **{k: str(v) for k, v in (start_tags or {}).items()}}
        run_id, logged = mlflow_client.create_run(experiment_key, run_name=run_name, tags=first_tags).info.run_id, {}
    stamp = int(time.time() * 1000)  # MLflow's own bookkeeping, not business logic
    mlflow_client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), stamp, 0) for k, v in sorted((metrics or {}).items()) if v is not None],
        params=[Param(k, str(v)[:6000]) for k, v in sorted((params or {}).items()) if k not in logged],
        tags=[RunTag(k, str(v)[:5000]) for k, v in sorted((tags or {}).items())],
    )
    for folder, path in (artifacts or {}).items():
        mlflow_client.log_artifact(run_id, str(path), artifact_path=folder)
    mlflow_client.set_terminated(run_id)
    return run_id


def apply_decision(model_name: str, version: str | int, decision: Decision,
                   settings: LooplineSettings | None = None, *, expected_champion: str | None = UNSET,
                   ) -> ModelVersion | None:
    """Promote ``version`` or keep the champion, as ``decision`` says; return the champion afterwards.

    Args:
        expected_champion: the champion version the decision was judged against (None: there was none).
            When given, the alias is compared with it first, and a changed alias (moved by hand, or by another
            run) raises :class:`ChampionMoved` with nothing recorded: a verdict against one champion is never
            applied over another. Callers that change the registry hold their instance lock, so this
            check-then-set is atomic among Loopline writers; MLflow has no compare-and-set of its own, so a
            person moving the alias in the very same instant is not covered.
    """
    if expected_champion is not UNSET:
        now = champion(model_name, settings)
        holder = str(now.version) if now is not None else None
        expected = str(expected_champion) if expected_champion is not None else None
        if holder != expected:
            raise ChampionMoved(
                f"the {CHAMPION} alias of {model_name} moved from {describe_version(expected)} to "
                f"{describe_version(holder)} while version {version} was being judged: nothing was recorded and the "
                f"alias stays on {describe_version(holder)}; the retry judges version {version} against it")
    if decision.promote:
        promote(model_name, version, decision.reason, settings)
    else:
        keep_champion(model_name, version, decision.reason, settings)
    return champion(model_name, settings)


def describe_version(version: str | None) -> str:
    return f"v{version}" if version is not None else "no version"


def promote(model_name: str, version: str | int, reason: str, settings: LooplineSettings | None = None, *,
            alias: str = CHAMPION) -> None:
    """Record why on ``version``, then move ``alias`` (the ``champion``, by default) to it.

    Tags first, alias last: the alias is the commit point. A crash in between leaves the alias where it was
    (on a version whose tags say ``promoted``) and the challenger tagged with a verdict its retry carries
    out; the alias never points at a version whose tags do not say why it is there. The ``loopline.promotion``
    tag says ``promoted`` for the champion, the alias's name for another alias.
    """
    mlflow_client = client(settings)
    mlflow_client.set_model_version_tag(model_name, str(version), "loopline.promotion",
                                        "promoted" if alias == CHAMPION else alias)
    mlflow_client.set_model_version_tag(model_name, str(version), "loopline.promotion_reason", reason)
    crash_point("promotion:after_tags")
    mlflow_client.set_registered_model_alias(model_name, alias, str(version))
    log.info("%s version %s has @%s now: %s", model_name, version, alias, reason)


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
