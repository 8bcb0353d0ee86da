"""Config of the ``training`` template: Feast training set → model → MLflow registry → champion alias."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.core.assets import AssetRef, champion_model, retrain_request
from pipelines.core.config import IDENTIFIER, PipelineBase, StrictModel
from pipelines.core.params import FormField

ModelFamily = Literal["gradient_boosting", "torch_mlp"]


class Hyperparameters(StrictModel):
    """Every family's knobs; each family reads the ones it knows (see pipelines/training/families.py)."""

    learning_rate: float = Field(0.05, ge=0.0001, le=1, description="Step size of either family.")
    max_iter: int = Field(100, ge=10, le=2000, description="Boosting iterations; gradient_boosting only.")
    max_depth: int = Field(3, ge=1, le=16, description="Tree depth; gradient_boosting only.")
    min_samples_leaf: int = Field(40, ge=1, le=10000,
                                  description="Rows per leaf; gradient_boosting only, larger resists overfitting.")
    hidden_units: int = Field(32, ge=4, le=512, description="Width of the hidden layers; torch_mlp only.")
    epochs: int = Field(60, ge=1, le=500, description="Passes over the training set; torch_mlp only.")


class LabelSource(StrictModel):
    """Where labels come from: a table of the features instance's landing partitions."""

    table: str = "labels"
    timestamp: str = "label_ts"
    target: str = "churned"


class TrainingSetChecks(StrictModel):
    """Great Expectations checks of the training set, built from these bounds."""

    min_rows: int = Field(200, ge=1)
    label_rate_min: float = Field(0.02, ge=0, le=1)
    label_rate_max: float = Field(0.80, ge=0, le=1)


class SliceSpec(StrictModel):
    """Slices the promotion policy compares: buckets of one numeric feature."""

    column: str = "tenure_days"
    edges: list[float] = Field(default_factory=lambda: [0, 365, 730, 1e9], min_length=3)
    labels: list[str] = Field(default_factory=lambda: ["tenure<1y", "tenure 1-2y", "tenure>2y"])
    min_rows: int = Field(20, ge=1, description="Slices with fewer holdout rows are reported, not judged.")

    @model_validator(mode="after")
    def _labels_match_edges(self) -> SliceSpec:
        if len(self.labels) != len(self.edges) - 1:
            raise ValueError(f"needs {len(self.edges) - 1} labels for {len(self.edges)} edges, got {len(self.labels)}")
        return self


class PromotionPolicy(StrictModel):
    """When a challenger takes the ``champion`` alias (docs/training.md)."""

    metric: Literal["roc_auc"] = "roc_auc"
    min_improvement: float = Field(0.005, ge=0, description="Challenger must beat the champion by this much.")
    max_slice_regression: float = Field(0.03, ge=0, description="No slice may lose more than this.")
    floor: float = Field(0.65, ge=0, le=1, description="Absolute floor every champion must reach.")
    slices: SliceSpec = SliceSpec()


class TrainingConfig(PipelineBase):
    """Template ``training``: trains on a window of labelled features and promotes by alias."""

    template: Literal["training"]
    features_config: str = Field(
        "churn_features", description="The features instance (its YAML name) whose Feast project and landing it reads."
    )
    model_name: str = Field(pattern=IDENTIFIER, description="Registered model name in MLflow.")
    schedule: str = "@weekly"
    retrain_asset: str | None = Field(
        None, description="Asset whose events also start a run (drift-driven retraining); default {instance}_retrain."
    )
    window_days: int = Field(28, ge=2, le=365, description="Days of labels to learn from (a time split needs 2).")
    holdout_fraction: float = Field(0.25, gt=0, lt=0.9, description="Latest share of label days held out.")
    seed: int = 42
    family: ModelFamily = Field(
        "gradient_boosting", description="gradient_boosting (scikit-learn) or torch_mlp (PyTorch)."
    )
    hyperparameters: Hyperparameters = Hyperparameters()
    label: LabelSource = LabelSource()
    checks: TrainingSetChecks = TrainingSetChecks()
    promotion: PromotionPolicy = PromotionPolicy()
    features_wait_hours: float = Field(6, gt=0, description="How long to wait for the window's features.")

    @property
    def retrain_request(self) -> AssetRef:
        """The Asset whose events start a run besides the schedule (a drift check emits it)."""
        return retrain_request(self.instance, self.retrain_asset)

    @property
    def champion_asset(self) -> AssetRef:
        """The Asset emitted each time a version of the model has been judged for promotion."""
        return champion_model(self.instance, self.model_name)


# The training template's trigger form: Param name, config field, title. Type, bounds and description come
# from the fields above (pipelines.core.params); window_end and force_promote are per-run, not config.
TRAINING_FORM: tuple[FormField, ...] = (
    FormField("family", "family", "Model family"),
    FormField("learning_rate", "hyperparameters.learning_rate", "Learning rate"),
    FormField("max_iter", "hyperparameters.max_iter", "Boosting iterations"),
    FormField("max_depth", "hyperparameters.max_depth", "Tree depth"),
    FormField("min_samples_leaf", "hyperparameters.min_samples_leaf", "Rows per leaf"),
    FormField("hidden_units", "hyperparameters.hidden_units", "Hidden units"),
    FormField("epochs", "hyperparameters.epochs", "Epochs"),
    FormField("window_days", "window_days", "Training window (days)"),
)
