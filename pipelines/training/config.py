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
TaskKind = Literal["binary", "multiclass", "regression"]

# Each task's holdout metrics and whether higher is better. The promotion metric is one of its task's; the
# direction decides what "beats", "floor" and "a slice regresses" mean (pipelines/training/promotion.py).
TASK_METRICS: dict[str, dict[str, bool]] = {
    "binary": {"roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False, "accuracy": True},
    "multiclass": {"macro_f1": True, "accuracy": True, "log_loss": False},
    "regression": {"rmse": False, "mae": False, "r2": True},
}
# The promotion metric when promotion.metric is not given.
DEFAULT_METRIC: dict[str, str] = {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}
# Metrics bounded to [0, 1], whose floor must be too (log loss, RMSE and MAE are unbounded; R² is at most 1).
UNIT_METRICS = frozenset({"roc_auc", "pr_auc", "brier", "accuracy", "macro_f1"})
# The floor churn has always had; other metrics have none unless the YAML sets promotion.floor.
ROC_AUC_DEFAULT_FLOOR = 0.65


def higher_is_better(metric: str) -> bool:
    """The direction of a metric of :data:`TASK_METRICS` (a name means the same in every task)."""
    for metrics in TASK_METRICS.values():
        if metric in metrics:
            return metrics[metric]
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(sorted(_all_metrics()))}")


def _all_metrics() -> set[str]:
    return {m for metrics in TASK_METRICS.values() for m in metrics}


def describe_metrics(task: str) -> str:
    """``rmse (lower is better), mae (lower is better), r2 (higher is better)``: a task's metrics for a message."""
    return ", ".join(f"{m} ({'higher' if up else 'lower'} is better)" for m, up in TASK_METRICS[task].items())


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
    target: str = Field(min_length=1, description="Its column holding the outcome: 0/1 (binary), a class id "
                                                   "(multiclass, int64) or a number (regression, int64 or float64).")


class TrainingSetChecks(StrictModel):
    """Great Expectations checks of the training set, built from these bounds."""

    min_rows: int = Field(200, ge=1)
    label_rate_min: float = Field(0.02, ge=0, le=1)
    label_rate_max: float = Field(0.80, ge=0, le=1)
    max_classes: int = Field(50, ge=2, le=1000, description="Most classes a multiclass label may have.")


class SliceSpec(StrictModel):
    """Slices the promotion policy compares, on one feature: buckets ``[edges[i], edges[i+1])`` of a numeric
    one (``edges`` and ``labels``), or the rows holding each of ``values`` (any feature, compared as text)."""

    column: str = Field(min_length=1, description="A feature of the feature service (numeric when edges are given).")
    edges: list[float] | None = Field(None, min_length=3)
    labels: list[str] | None = None
    values: list[str] | None = Field(None, min_length=1, description="Categorical slices: one per value.")
    min_rows: int = Field(20, ge=1, description="Slices with fewer holdout rows are reported, not judged.")

    @model_validator(mode="after")
    def _labels_match_edges(self) -> SliceSpec:
        if (self.edges is None) == (self.values is None):
            raise ValueError(f"slices of {self.column!r} need either edges (numeric buckets, with labels) or values "
                             "(categorical), not both or neither")
        if self.values is not None:
            if self.labels is not None:
                raise ValueError("slices by values are named by their values: remove labels")
            return self
        labels = self.labels or []
        if len(labels) != len(self.edges) - 1:
            raise ValueError(f"needs {len(self.edges) - 1} labels for {len(self.edges)} edges, got {len(labels)}")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"edges must increase, got {self.edges}")
        return self

    @property
    def names(self) -> list[str]:
        """The slices' names: the bucket labels, or the values."""
        return list(self.values if self.values is not None else self.labels)


BASELINE_PATTERN = r"^(prior|previous_value:[A-Za-z_][A-Za-z0-9_]*|rule:[A-Za-z_][A-Za-z0-9_]*)$"


class PromotionPolicy(StrictModel):
    """When a challenger takes the ``champion`` alias (docs/training.md).

    ``metric`` and ``floor`` left unset are resolved per task by :attr:`TrainingConfig.policy`.
    """

    metric: str | None = Field(None, description="One of the task's metrics; default roc_auc, macro_f1 or rmse.")
    min_improvement: float = Field(0.005, ge=0, description="Challenger must beat the champion by this much.")
    max_slice_regression: float = Field(0.03, ge=0, description="No slice may lose more than this.")
    floor: float | None = Field(
        None, description="Worst value a champion may have (a floor when higher is better, a ceiling when lower "
                          "is); default 0.65 for roc_auc, none for other metrics.")
    # None: no slice gate (a use case names its own slice column; there is no default one to assume).
    slices: SliceSpec | None = None
    baseline: str | None = Field(
        None, pattern=BASELINE_PATTERN,
        description="What a first model must beat on the same holdout: prior (the train split's label rate, class "
                    "shares or mean), previous_value:<feature> (regression: that feature, the day before's value, "
                    "as the prediction) or rule:<feature> (the best one-split rule on that feature).")
    min_gain_over_baseline: float = Field(0.0, ge=0, description="A first model must beat the baseline by this much.")
    approval: Literal["none", "required"] = Field(
        "none", description="required: a version the gate promotes waits for a person to approve it in the Airflow "
                            "UI (Required Actions) before it takes the alias; a rejection or no answer leaves the "
                            "champion as it is.")
    approval_timeout_hours: float = Field(
        72, gt=0, le=24 * 30, description="With approval: required, how long the request waits; then it is rejected.")

    @property
    def metric_name(self) -> str:
        return self.metric or DEFAULT_METRIC["binary"]

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric_name)

    @property
    def baseline_kind(self) -> str | None:
        """``prior``, ``previous_value`` or ``rule`` (None without a baseline)."""
        return None if self.baseline is None else self.baseline.split(":", 1)[0]

    @property
    def baseline_column(self) -> str | None:
        """The feature a ``previous_value:`` or ``rule:`` baseline reads."""
        return None if self.baseline is None or ":" not in self.baseline else self.baseline.split(":", 1)[1]


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
    task: TaskKind = Field("binary", description="binary (0/1 label), multiclass (int class ids) or regression.")
    family: ModelFamily = Field(
        "gradient_boosting", description="gradient_boosting (scikit-learn) or torch_mlp (PyTorch, binary only)."
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

    @property
    def _reserved_columns(self) -> set[str]:
        """The training set's label and bookkeeping columns: never a feature to slice on or a baseline to read."""
        return {self.label.timestamp, self.label.target, "label", "label_day", "split", "event_timestamp"}

    @model_validator(mode="after")
    def _slice_is_not_bookkeeping(self) -> TrainingConfig:
        # The feature columns are only known from Feast at run time; what is known now is what a slice can't be.
        slices = self.promotion.slices
        if slices is not None and slices.column in self._reserved_columns:
            raise ValueError(f"promotion.slices.column {slices.column!r} is a label or bookkeeping column, not a "
                             "feature: name a numeric feature of the feature service")
        return self

    @model_validator(mode="after")
    def _fits_the_task(self) -> TrainingConfig:
        task, policy = self.task, self.promotion
        metric = self.policy.metric
        if metric not in TASK_METRICS[task]:
            raise ValueError(f"promotion.metric {metric!r} is not a metric of task {task}; its metrics are "
                             f"{describe_metrics(task)}: name one of those")
        if policy.floor is not None and metric in UNIT_METRICS and not 0 <= policy.floor <= 1:
            raise ValueError(f"promotion.floor {policy.floor} is outside [0, 1], where {metric} lies")
        if self.family == "torch_mlp" and task != "binary":
            raise ValueError(f"family torch_mlp trains binary tasks only (its network has one sigmoid output); "
                             f"use family gradient_boosting for task {task}")
        if policy.baseline_kind == "previous_value" and task != "regression":
            raise ValueError(f"promotion.baseline {policy.baseline!r} predicts a number, which only a regression "
                             f"task can score; for task {task} use prior or rule:<feature>")
        if policy.baseline_column in self._reserved_columns:
            raise ValueError(f"promotion.baseline {policy.baseline!r} reads a label or bookkeeping column: name a "
                             "feature of the feature service")
        return self

    @property
    def policy(self) -> PromotionPolicy:
        """``promotion`` with the task's default metric, and roc_auc's default floor, filled in."""
        metric = self.promotion.metric or DEFAULT_METRIC[self.task]
        floor = self.promotion.floor
        if floor is None and metric == "roc_auc" and "floor" not in self.promotion.model_fields_set:
            floor = ROC_AUC_DEFAULT_FLOOR
        return self.promotion.model_copy(update={"metric": metric, "floor": floor})

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
    return features.feast.join_keys


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
    keys = entity_keys(features)
    for key in keys:
        if key not in columns:
            problems.append(f"the entity key {key!r} (feast.entity_key of {features.dag_id}) is not a column of it")
    if label.timestamp not in columns or columns[label.timestamp] not in ("timestamp", "date"):
        problems.append(f"label.timestamp {label.timestamp!r} is not a timestamp or date column of it")
    target_types = ("int64", "float64") if training.task == "regression" else ("int64",)
    if label.target not in columns or columns[label.target] not in target_types:
        problems.append(f"label.target {label.target!r} is not an {' or '.join(target_types)} column of it "
                        f"(task {training.task})")
    slices = training.promotion.slices
    if slices is not None and slices.column in keys:
        problems.append(f"promotion.slices.column {slices.column!r} is the entity key, not a feature")
    if problems:
        raise TrainingConfigError(f"{where}: the label table {label.table!r} of {features.dag_id} has columns "
                                  f"{available}; " + "; ".join(problems) + ". Fix the training YAML or the "
                                  "table's columns under landing.tables in the features YAML")
