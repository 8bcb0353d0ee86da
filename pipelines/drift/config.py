"""Config of the ``drift_check`` template: Evidently drift checks that ask for retraining or re-indexing.

One model for both kinds. ``kind: tabular`` checks a trained model (its features, predictions and, once
labels arrive, ROC AUC) against the training data of its champion and emits the training pipeline's
retrain Asset; ``kind: rag`` checks a retrieval index (query and corpus embeddings, hit rate on the frozen
question set) and emits the index's reindex Asset. Only the section of the chosen kind may be set.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.core.config import PipelineBase, StrictModel
from pipelines.core.params import FormField


class TabularDrift(StrictModel):
    """Thresholds of a tabular drift check (Evidently ``DataDriftPreset`` and ``ValueDrift``)."""

    training_config: str = Field(
        "churn_training", description="The training instance (its YAML name) whose champion is checked and "
                                      "whose retrain Asset is emitted.")
    column_threshold: float = Field(
        0.1, gt=0, le=1, description="A feature column drifts when its drift score reaches this "
                                     "(normed Wasserstein for numbers, Jensen-Shannon for categories).")
    num_method: Literal["wasserstein", "psi", "ks", "jensenshannon", "kl_div", "hellinger"] = "wasserstein"
    cat_method: Literal["jensenshannon", "psi", "chisquare", "kl_div", "hellinger"] = "jensenshannon"
    drift_share: float = Field(
        0.3, gt=0, le=1, description="Data drift fires when at least this share of the feature columns drift.")
    prediction_threshold: float = Field(
        0.1, gt=0, le=1, description="Prediction drift fires when the score column's drift score reaches this.")
    performance_drop: float = Field(
        0.08, ge=0, le=1, description="Performance fires when ROC AUC (binary) or R² on late labels falls this far "
                                      "below the champion's holdout value, or RMSE / MAE (regression) rises this "
                                      "share above it (0.08: 8 % worse).")
    min_labels: int = Field(300, ge=10, description="Labelled rows needed before performance is judged.")
    reference_rows: int = Field(50_000, ge=100, description="Reference rows kept (seeded sample above this).")


class RagDrift(StrictModel):
    """Thresholds of a retrieval drift check."""

    rag_config: str = Field("docs_rag_index", description="The rag_index instance checked and re-indexed: its "
                                                          "YAML name in dags/configs/, or a path to a .yaml file.")
    hit_rate_drop: float = Field(0.05, ge=0, le=1, description="Fires when hit@k on the frozen question set "
                                                                "falls this far below its recorded value.")
    corpus_change_share: float = Field(
        0.2, gt=0, le=1, description="Fires when this share of chunks differs between the corpus folder and "
                                     "the live index (new, changed or deleted).")
    corpus_drift_threshold: float = Field(
        0.15, gt=0, le=2, description="Fires when the cosine distance between the mean corpus embeddings of "
                                      "the reference and now reaches this (Evidently embeddings drift).")
    query_drift_threshold: float = Field(
        0.15, gt=0, le=2, description="Fires when the cosine distance between the mean embeddings of the "
                                      "frozen questions and the logged queries reaches this.")
    min_queries: int = Field(20, ge=1, description="Logged queries needed before query drift is judged.")
    max_chunks: int = Field(5000, ge=10, description="Chunks embedded per check at most (seeded sample).")


class GuardRails(StrictModel):
    """Limits on drift-triggered runs, so one bad week cannot retrain a model all day long."""

    cooldown_hours: float = Field(24, ge=0, le=24 * 30,
                                  description="No second trigger of the same target within this many hours.")
    max_triggers_per_day: int = Field(1, ge=0, le=24, description="Triggers of the same target per UTC day; "
                                                                  "0 turns triggering off (report only).")


class DriftCheckConfig(PipelineBase):
    """Template ``drift_check``: a scheduled drift check that emits a retrain or reindex Asset."""

    template: Literal["drift_check"]
    kind: Literal["tabular", "rag"]
    window_days: int = Field(7, ge=1, le=90, description="Days of current data (features, predictions, "
                                                         "queries) checked per run.")
    tabular: TabularDrift = TabularDrift()
    rag: RagDrift = RagDrift()
    guard_rails: GuardRails = GuardRails()

    @model_validator(mode="after")
    def _only_its_kind(self) -> DriftCheckConfig:
        other = "rag" if self.kind == "tabular" else "tabular"
        if other in self.model_fields_set:
            raise ValueError(f"{other}: set, but kind is {self.kind}; use the '{self.kind}' section")
        return self

    @property
    def target_config(self) -> str:
        """The YAML name of the pipeline this check triggers."""
        return self.tabular.training_config if self.kind == "tabular" else self.rag.rag_config

    @property
    def experiment_name(self) -> str:
        return f"{self.instance}_drift"


DRIFT_FORM = (FormField("window_days", "window_days", "Window (days)"),)
"""The config fields a person may set when triggering a drift check by hand (beside ``window_end``)."""
