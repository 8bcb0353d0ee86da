"""Rebuild what a promotion record describes and check that its figures come back.

A model: the recorded training set (content-addressed; its digest is checked) and the recorded config train the
model again, and the policy metric on the holdout must match the record's within :data:`MODEL_TOLERANCE`
(gradient boosting and the seeded split are deterministic; the tolerance covers float summation order).

An index: the recorded config builds the index again from the corpus into a scratch data home (nothing live is
touched); the corpus digest must be the recorded one (documents changed since cannot reproduce it), and hit rate
and MRR per search mode must match the record's within :data:`INDEX_TOLERANCE`.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.audit.records import AuditEvent
from pipelines.core.errors import NotRetryable
from pipelines.core.settings import LooplineSettings, get_settings

log = logging.getLogger(__name__)

MODEL_TOLERANCE = 1e-4  # absolute, on the promotion metric
INDEX_TOLERANCE = 1e-3  # absolute, on hit rate and MRR (one question in a thousand)


class CannotRebuild(NotRetryable, ValueError):
    """The record's inputs are gone or changed (the message says which), or it is not a model or index record."""


@dataclass(frozen=True)
class Rebuilt:
    """The record's figures and the rebuilt ones (name → (recorded, rebuilt)), and the tolerance they must meet."""

    subject: str
    version: str | None
    figures: dict[str, tuple[float, float]]
    tolerance: float

    @property
    def reproduced(self) -> bool:
        return all(abs(recorded - rebuilt) <= self.tolerance for recorded, rebuilt in self.figures.values())

    def describe(self) -> str:
        lines = [f"{self.subject} v{self.version}: {'reproduced' if self.reproduced else 'NOT reproduced'} "
                 f"(tolerance {self.tolerance:g})"]
        lines += [f"  {name}: recorded {recorded:.6f}, rebuilt {rebuilt:.6f} (difference {rebuilt - recorded:+.2e})"
                  for name, (recorded, rebuilt) in self.figures.items()]
        return "\n".join(lines)


def rebuild(event: AuditEvent, settings: LooplineSettings | None = None) -> Rebuilt:
    """Rebuild the model or index version of a promotion (or rejection) record; compare its figures."""
    kind = event.subject.split(" ", 1)[0]
    if event.kind not in ("promotion", "rejection", "approval") or kind not in ("model", "index"):
        raise CannotRebuild(f"record {event.record_run} ({event.title}) is not a model or index verdict: only those "
                            "name the inputs a rebuild needs")
    return (_rebuild_model if kind == "model" else _rebuild_index)(event, settings or get_settings())


def _rebuild_model(event: AuditEvent, settings: LooplineSettings) -> Rebuilt:
    import pandas as pd

    from pipelines.training import steps
    from pipelines.training.config import TrainingConfig
    from pipelines.training.dataset import dataset_digest

    made_of, evidence = event.provenance, event.evidence
    training = TrainingConfig.model_validate(made_of["config"])
    path = Path(made_of["training_set"])
    if not path.exists():
        raise CannotRebuild(f"{event.subject} v{event.version}: its training set {path} is gone; rebuild it with "
                            f"{training.dag_id} for the window {made_of['window_start']} … {made_of['window_end']} "
                            "(its digest must come back as the record's)")
    frame = pd.read_parquet(path)
    digest = dataset_digest(frame)
    if digest != made_of["dataset_digest"]:
        raise CannotRebuild(f"{path} has digest {digest[:12]}…, not the record's {made_of['dataset_digest'][:12]}…: "
                            "the file was changed after the promotion")
    numeric, categorical = made_of["numeric"], made_of["categorical"]
    log.info("Rebuilding %s v%s: %s on %d rows of %s", training.model_name, event.version, training.family,
             len(frame), path.name)
    with tempfile.TemporaryDirectory() as plots:
        trained = steps.train_and_evaluate(training, frame, numeric, categorical, Path(plots))
    metric = evidence["metric"]
    figures = {metric: (float(evidence["challenger"]), float(trained.metrics[metric]))}
    if evidence.get("baseline") is not None and trained.baseline_metrics:
        figures[f"baseline {metric}"] = (float(evidence["baseline"]), float(trained.baseline_metrics[metric]))
    return Rebuilt(event.subject, event.version, figures, MODEL_TOLERANCE)


def _rebuild_index(event: AuditEvent, settings: LooplineSettings) -> Rebuilt:
    from pipelines.core import tracking
    from pipelines.rag.config import RagIndexConfig
    from pipelines.rag.steps import run_once

    made_of, evidence = event.provenance, event.evidence
    config = RagIndexConfig.model_validate(made_of["config"])
    # Embedded LanceDB and MLflow in a scratch home, whatever the profile: a rebuild never writes next to the live
    # index (a Weaviate alias would move) or into the production MLflow; the figures do not depend on the store.
    config = config.model_copy(update={"index": config.index.model_copy(update={"backend": "lancedb"})})
    with tempfile.TemporaryDirectory() as scratch:
        scratch_settings = LooplineSettings(home=Path(scratch), profile="embedded", mlflow_tracking_uri=None)
        try:
            summary = run_once(config, f"rebuild_{event.version}", scratch_settings)
        finally:
            tracking.configure_mlflow(settings)  # the scratch build pointed this process's MLflow at itself
    if summary["corpus_digest"] != made_of["corpus_digest"]:
        raise CannotRebuild(f"index {config.instance} {event.version}: the corpus under {config.corpus.path} has "
                            f"digest {summary['corpus_digest'][:12]}… now, not the recorded "
                            f"{made_of['corpus_digest'][:12]}…: its documents changed since the build")
    recorded = evidence.get("candidate") or {}
    figures = {f"{mode} {name}": (float(scores[name]), float(summary["metrics"][mode][name]))
               for mode, scores in recorded.items() for name in ("hit_rate", "mrr")}
    return Rebuilt(event.subject, event.version, figures, INDEX_TOLERANCE)


def find_record(record_run: str, settings: LooplineSettings | None = None) -> AuditEvent:
    """The audit record kept in MLflow run ``record_run``."""
    import json

    import mlflow
    from mlflow.artifacts import download_artifacts

    from pipelines.audit.records import RECORD_FOLDER
    from pipelines.core import tracking

    tracking.configure_mlflow(settings)
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = download_artifacts(run_id=record_run, artifact_path=f"{RECORD_FOLDER}/record.json",
                                      dst_path=folder, tracking_uri=mlflow.get_tracking_uri())
        except Exception as exc:
            raise CannotRebuild(f"no audit record in MLflow run {record_run!r} ({type(exc).__name__}); "
                                "list them with python -m pipelines.audit list --since DATE") from None
        return AuditEvent.from_json(json.loads(Path(path).read_text()), record_run=record_run)
