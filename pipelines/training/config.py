"""Config of the ``training`` template: Feast training set → model → MLflow registry → champion alias."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from pipelines.core.assets import AssetRef, champion_model, retrain_request
from pipelines.core.config import IDENTIFIER, PipelineBase, StrictModel
from pipelines.core.params import FormField

if TYPE_CHECKING:
    from pipelines.features.config import FeaturesConfig

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
    """Where labels come from: a table of the features instance's landing partitions, named in full.

    No defaults: the names are the use case's own (churn's are ``labels`` / ``label_ts`` / ``churned``).
    """

    table: str = Field(min_length=1, description="A table under landing.tables of the features YAML.")
    timestamp: str = Field(min_length=1, description="Its column holding when the label was observed (UTC).")
    target: str = Field(min_length=1, description="Its column holding the 0/1 outcome.")


class TrainingSetChecks(StrictModel):
    """Great Expectations checks of the training set, built from these bounds."""

    min_rows: int = Field(200, ge=1)
    label_rate_min: float = Field(0.02, ge=0, le=1)
    label_rate_max: float = Field(0.80, ge=0, le=1)


class SliceSpec(StrictModel):
    """Slices the promotion policy compares: buckets ``[edges[i], edges[i+1])`` of one numeric feature."""

    column: str = Field(min_length=1, description="A numeric feature of the feature service.")
    edges: list[float] = Field(min_length=3)
    labels: list[str]
    min_rows: int = Field(20, ge=1, description="Slices with fewer holdout rows are reported, not judged.")

    @model_validator(mode="after")
    def _labels_match_edges(self) -> SliceSpec:
        if len(self.labels) != len(self.edges) - 1:
            raise ValueError(f"needs {len(self.edges) - 1} labels for {len(self.edges)} edges, got {len(self.labels)}")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"edges must increase, got {self.edges}")
        return self


class PromotionPolicy(StrictModel):
    """When a challenger takes the ``champion`` alias (docs/training.md)."""

    metric: Literal["roc_auc"] = "roc_auc"
    min_improvement: float = Field(0.005, ge=0, description="Challenger must beat the champion by this much.")
    max_slice_regression: float = Field(0.03, ge=0, description="No slice may lose more than this.")
    floor: float = Field(0.65, ge=0, le=1, description="Absolute floor every champion must reach.")
    # None: no slice gate (a use case names its own slice column; there is no default one to assume).
    slices: SliceSpec | None = None


# The longest training window. Labels are read one landing partition per day and held, joined to their
# features, in one in-memory frame; ten years bounds a run's time and memory (and the sensor's single
# "newest feature day" check) while allowing multi-year histories. Longer: sample or aggregate the labels.
MAX_WINDOW_DAYS = 3660

LabelLeakage = Literal["refuse", "warn"]


class TrainingConfig(PipelineBase):
    """Template ``training``: trains on a window of labelled features and promotes by alias.

    What a use case must name (no churn defaults): ``features_config``, ``model_name``, ``label`` (table,
    timestamp, target). Optional: ``promotion.slices`` (no slice gate without it), ``prediction_column``.
    """

    template: Literal["training"]
    features_config: str = Field(
        min_length=1,
        description="The features instance (its YAML name in dags/configs/, or a path to a .yaml) whose Feast "
                    "project and landing it reads.")
    model_name: str = Field(pattern=IDENTIFIER, description="Registered model name in MLflow.")
    prediction_column: str | None = Field(
        None, pattern=IDENTIFIER,
        description="Name of the score column in the predictions files (and what the drift checks read); "
                    "default <model_name>_score.")
    schedule: str = "@weekly"
    retrain_asset: str | None = Field(
        None, description="Asset whose events also start a run (drift-driven retraining); default {instance}_retrain."
    )
    window_days: int = Field(28, ge=2, le=MAX_WINDOW_DAYS,
                             description="Days of labels to learn from (a time split needs 2; at most 3660, ten "
                                         "years, because the window is held in memory).")
    holdout_fraction: float = Field(0.25, gt=0, lt=0.9, description="Latest share of label days held out.")
    seed: int = 42
    family: ModelFamily = Field(
        "gradient_boosting", description="gradient_boosting (scikit-learn) or torch_mlp (PyTorch)."
    )
    hyperparameters: Hyperparameters = Hyperparameters()
    label: LabelSource
    label_leakage: LabelLeakage = Field(
        "refuse",
        description="A label stamped at or after 23:59:59 UTC of its landing day would read that day's features: "
                    "refuse (fail the run) or warn (log it and train on them anyway).")
    checks: TrainingSetChecks = TrainingSetChecks()
    promotion: PromotionPolicy = PromotionPolicy()
    features_wait_hours: float = Field(6, gt=0, description="How long to wait for the window's features.")

    @model_validator(mode="after")
    def _slice_is_not_bookkeeping(self) -> TrainingConfig:
        # The feature columns are only known from Feast at run time; what is known now is what a slice can't be.
        slices = self.promotion.slices
        reserved = {self.label.timestamp, self.label.target, "label", "label_day", "split", "event_timestamp"}
        if slices is not None and slices.column in reserved:
            raise ValueError(f"promotion.slices.column {slices.column!r} is a label or bookkeeping column, not a "
                             "feature: name a numeric feature of the feature service")
        return self

    @property
    def prediction_name(self) -> str:
        """The predictions' score column: ``prediction_column``, else ``<model_name>_score``."""
        return self.prediction_column or f"{self.model_name}_score"

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


class TrainingConfigError(ValueError):
    """A training config that does not fit the features instance it names; the message names the YAML keys."""


def entity_keys(features: FeaturesConfig) -> list[str]:
    """The entity's join key columns: one (``feast.entity_key``) or several when given as a list (composite)."""
    key = features.feast.entity_key
    return [key] if isinstance(key, str) else list(key)


def load_features_config(training: TrainingConfig) -> FeaturesConfig:
    """The features instance a training config names (``features_config``: a YAML name or a path).

    Raises:
        TrainingConfigError: it names a config of another template.
        pipelines.templates.PipelineConfigError: the file is missing or invalid.
    """
    from pipelines.features.config import FeaturesConfig
    from pipelines.templates import load_named

    config = load_named(training.features_config)
    if not isinstance(config, FeaturesConfig):
        raise TrainingConfigError(f"{training.dag_id}: features_config {training.features_config!r} is a "
                                  f"{config.template} config, not features: name the features instance to read")
    return config


def check_against_features(training: TrainingConfig, features: FeaturesConfig) -> None:
    """What can be checked before a run: the label block against the features instance's landing contract.

    The label table must be a landing table with the entity key(s), a timestamp (or date) column and an
    integer target; the slice column must not be the entity key. (Whether the slice column is a feature is
    known only from Feast, at ``build_training_set``.)

    Raises:
        TrainingConfigError: naming each YAML key that does not fit, and what is there instead.
    """
    label, where = training.label, f"{training.dag_id}"
    tables = features.landing.tables
    if label.table not in tables:
        raise TrainingConfigError(
            f"{where}: label.table {label.table!r} is not a table of {features.dag_id}'s landing contract "
            f"({', '.join(sorted(tables))}): labels land like every other table, so add it under landing.tables "
            "in the features YAML, or name one of those")
    columns = tables[label.table].columns
    available = ", ".join(f"{c} ({t})" for c, t in columns.items())
    problems = []
    for key in entity_keys(features):
        if key not in columns:
            problems.append(f"the entity key {key!r} (feast.entity_key of {features.dag_id}) is not a column of it")
    if label.timestamp not in columns or columns[label.timestamp] not in ("timestamp", "date"):
        problems.append(f"label.timestamp {label.timestamp!r} is not a timestamp or date column of it")
    if label.target not in columns or columns[label.target] != "int64":
        problems.append(f"label.target {label.target!r} is not an int64 column of it")
    slices = training.promotion.slices
    if slices is not None and slices.column in entity_keys(features):
        problems.append(f"promotion.slices.column {slices.column!r} is the entity key, not a feature")
    if problems:
        raise TrainingConfigError(f"{where}: the label table {label.table!r} of {features.dag_id} has columns "
                                  f"{available}; " + "; ".join(problems) + ". Fix the training YAML or the "
                                  "table's columns under landing.tables in the features YAML")
