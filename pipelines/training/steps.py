"""The steps of the ``training`` template, one function per task.

Re-running a step for the same window and inputs changes nothing: the training set is rebuilt
identically, an existing registered version with the same training key is reused instead of
registering a second one, and promotion is decided again on the same evidence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from pipelines.audit import records
from pipelines.audit.records import git_commit
from pipelines.core.errors import NotRetryable
from pipelines.core.files import write_atomic
from pipelines.core.home import DataHome
from pipelines.core.locks import instance_lock
from pipelines.core.params import apply_form
from pipelines.core.settings import LooplineSettings, get_settings
from pipelines.core.trusted_models import UntrustedModel, load_registered_model, serialization_format
from pipelines.features.config import FeaturesConfig
from pipelines.training import audit
from pipelines.training.config import TRAINING_FORM, TrainingConfig, entity_keys, load_features_config
from pipelines.training.dataset import SPLIT, TrainingSetError, Window

log = logging.getLogger(__name__)

TRAINING_KEY_TAG = "loopline.training_key"

# What each step returns: its XCom, passed to the next steps and read by `make demo`'s summary (pipelines/demo/run.py).


class TrainingSetInfo(TypedDict):
    """``build_training_set``: the training set file of a window and what the next steps need to read it."""

    path: str
    window_start: str
    window_end: str
    rows: int
    train_rows: int
    holdout_rows: int
    label_rate: float
    labels_without_features: int
    digest: str  # dataset_digest of the frame: part of the training key
    feature_service: str
    feast_project: str
    numeric: list[str]
    categorical: list[str]
    entity_keys: list[str]  # the entity's join key column(s): one, or several for a composite key


class TrainingSetChecked(TypedDict):
    """``validate_training_set``: the training set passed its Great Expectations checks."""

    expectations: int
    rows: int


class TrainedVersion(TypedDict):
    """``train_and_register``: the registered version of these inputs, new or ``reused``."""

    version: str
    run_id: str
    reused: bool
    training_key: str
    metrics: NotRequired[dict[str, float]]  # holdout metrics; only when trained by this run


class PromotionResult(TypedDict):
    """``evaluate_and_promote``: whether the version took the ``champion`` alias, why, and who holds it now."""

    version: str
    promoted: bool
    reason: str
    champion: str | None
    metric: str  # the promotion metric (TrainingConfig.policy.metric)
    challenger_value: float
    champion_value: NotRequired[float | None]  # absent when the version already was the champion
    baseline_value: NotRequired[float | None]  # the baseline's metric on the same holdout (promotion.baseline)
    # The same figures under their old names, for a roc_auc policy (churn's); absent for other metrics.
    challenger_roc_auc: NotRequired[float]
    champion_roc_auc: NotRequired[float | None]
    # promotion.approval: required and the gate said promote: the alias waits for a person (finalize_promotion).
    awaiting_approval: NotRequired[bool]
    judged_against: NotRequired[str | None]  # the champion the gate judged against (the approval is for that)
    approval_subject: NotRequired[str]
    approval_body: NotRequired[str]  # Markdown: the evidence shown on the Required Actions page
    evidence: NotRequired[dict[str, Any]]  # the gate's figures, per slice too, for the approval's audit record
    record: NotRequired[str]  # the audit record's MLflow run (pipelines/audit)


class ScoredBatch(TypedDict):
    """``score_latest``: the newest feature day scored by the champion, and where the predictions are."""

    ds: str
    rows: int
    model_version: str
    path: str
    prediction_column: str  # the score column's name (TrainingConfig.prediction_name)
    mean_prediction: float  # of that column (for multiclass: the mean predicted class id)


class TrainingSetRejected(NotRetryable, ValueError):
    """The training set failed its checks: nothing was trained or registered, the champion is untouched."""


def features_config(training: TrainingConfig) -> FeaturesConfig:
    """The features instance a training config reads (its YAML in dags/configs/, or a path)."""
    return load_features_config(training)


def resolve_run(training: TrainingConfig, params: dict[str, Any] | None) -> TrainingConfig:
    """The config with a run's trigger-form values (:data:`TRAINING_FORM`) applied, validated.

    Raises:
        pydantic.ValidationError: a value breaks the config's bounds (a ``ValueError`` naming the field).
    """
    return apply_form(training, TRAINING_FORM, params)


def window_for(training: TrainingConfig, run_after: date, window_end: str | None = None) -> Window:
    """The label window of a run: ``window_days`` days ending the day the run starts (or at ``window_end``)."""
    end = date.fromisoformat(window_end) if window_end else run_after
    return Window.ending(end, training.window_days)


def features_ready(training: TrainingConfig, window: Window) -> bool:
    """Whether the features pipeline has materialized the newest feature day the window reads."""
    from pipelines.features.feast_store import materialized_days

    features = features_config(training)
    done = materialized_days(features.feast.project, features.feast.feature_views)
    ready = window.last_feature_day in done
    log.info("Window %s needs features of %s: %s (materialized through %s)", window, window.last_feature_day,
             "ready" if ready else "not yet", max(done) if done else "nothing yet")
    return ready


def build_training_set(training: TrainingConfig, window: Window) -> TrainingSetInfo:
    """Labels of the window joined point-in-time to the feature service; written as parquet.

    Raises:
        TrainingSetError: no labels in the window, a missing feature service, or a window too short to split;
            ``LabelLeakage`` / ``DuplicateLabels`` when the labels break the timestamp rule or repeat.
        SliceColumnError: ``promotion.slices.column`` or the baseline's feature is not a fitting feature of the
            feature service.
    """
    from pipelines.training import dataset
    from pipelines.training.evaluation import check_baseline_column, check_slice_column

    settings = get_settings()
    features = features_config(training)
    keys = entity_keys(features)
    project, service = features.feast.project, features.feast.feature_service
    columns = dataset.feature_columns(project, service, settings)
    # Before anything is read or fitted: the slice column is only knowable from Feast's feature service.
    where = f"dags/configs/{training.dag_id}.yaml (feature service {service})"
    check_slice_column(training.promotion.slices, list(columns.numeric), list(columns.categorical), where)
    check_baseline_column(training.promotion, list(columns.numeric), list(columns.categorical), where)
    labels = dataset.load_labels(features, training, window, settings)
    dataset.check_labels(labels, training, keys)
    joined = dataset.join_features(labels, project, service, settings)
    if joined.empty:
        raise TrainingSetError(
            f"none of the {len(labels)} labels in {window} has features at its label time; "
            f"run {features.dag_id} for the days before them"
        )
    frame = dataset.split_by_time(joined, training.holdout_fraction)
    ordered = [*keys, dataset.ENTITY_TIMESTAMP, "label", "label_day", SPLIT, *columns.all]
    frame = frame[ordered].sort_values([dataset.ENTITY_TIMESTAMP, *keys]).reset_index(drop=True)
    digest = dataset.dataset_digest(frame)
    # Content-addressed: a second run of the window with other data (late labels, a new holdout share) writes a
    # file of its own, and the file a champion's lineage names is never overwritten under it.
    path = write_atomic(training_set_file(training, window, digest, settings),
                        lambda partial: frame.to_parquet(partial, index=False))
    info = TrainingSetInfo(
        path=str(path), window_start=str(window.start), window_end=str(window.end),
        rows=len(frame), train_rows=int((frame[SPLIT] == "train").sum()),
        holdout_rows=int((frame[SPLIT] == "holdout").sum()), label_rate=round(float(frame["label"].mean()), 4),
        labels_without_features=len(labels) - len(joined), digest=digest,
        feature_service=service, feast_project=project,
        numeric=list(columns.numeric), categorical=list(columns.categorical),
        entity_keys=keys,
    )
    _declare_training_set_lineage(training, features, frame, path)
    # label_rate is the label's mean: a rate for a 0/1 label, not for class ids or a regression target.
    log.info("Training set for %s: %d rows (%d train, %d holdout), label %s %.3f, digest %s…",
             window, info["rows"], info["train_rows"], info["holdout_rows"],
             "rate" if training.task == "binary" else "mean", info["label_rate"], info["digest"][:12])
    return info


def _declare_training_set_lineage(training: TrainingConfig, features: FeaturesConfig, frame, path: Path) -> None:
    """The training set read the label files of its label days and the feature views' days before each."""
    from datetime import timedelta

    from pipelines import lineage
    from pipelines.features.landing import partition_dir, table_file
    from pipelines.lineage import uris

    settings = get_settings()
    label_days = sorted(set(frame["label_day"]))
    landing_root = settings.resolve(features.landing.path)
    labels = [table_file(features.landing, partition_dir(features.landing, landing_root, day), training.label.table)
              for day in label_days]
    feature_days = [uris.feature_view_day(features.feast.project, view, day - timedelta(days=1))
                    for day in label_days for view in features.feast.feature_views]
    lineage.declare(inputs=[*(uris.file(p) for p in labels), *feature_days], outputs=[uris.file(path)])


def training_set_file(training: TrainingConfig, window: Window, digest: str,
                      settings: LooplineSettings | None = None) -> Path:
    """The training set of a window with this content: ``window=<start>_<end>/training_set-<digest[:16]>.parquet``.

    Keyed by the window and the dataset digest, so the same data lands on the same file (a re-run rewrites it
    identically) and other data on another file.
    """
    from pipelines.training import dataset

    path = dataset.training_set_path(training, window, settings)
    return path.with_name(f"{path.stem}-{digest[:16]}{path.suffix}")


def training_set_path(info: TrainingSetInfo, what: str, settings: LooplineSettings | None = None) -> Path:
    """The training set file an XCom names, if it lies inside the data home.

    Raises:
        PathOutsideDataHome: the path is relative or resolves (``..``, a symlink) outside the data home; nothing
            was read.
    """
    return DataHome(settings).require_inside(info["path"], what)


def validate_training_set(training: TrainingConfig, info: TrainingSetInfo, *,
                          settings: LooplineSettings | None = None) -> TrainingSetChecked:
    """Great Expectations checks of the training set: schema, row count, label balance."""
    import pandas as pd

    from pipelines.core.expectations import validate_dataframe
    from pipelines.training.dataset import FeatureColumns, validation_suite

    frame = pd.read_parquet(training_set_path(info, "XCom build_training_set.path", settings))
    columns = FeatureColumns(tuple(info["numeric"]), tuple(info["categorical"]))
    suite = validation_suite(training, columns, info["entity_keys"])
    report = validate_dataframe(frame, suite, batch_name=f"training set {training.dag_id} "
                                                         f"{info['window_start']}…{info['window_end']}")
    if not report.success:
        raise TrainingSetRejected(f"{report.summary()}; nothing was trained and the champion is unchanged")
    log.info("Training set passed %d expectations", report.evaluated)
    return TrainingSetChecked(expectations=report.evaluated, rows=len(frame))


def training_key(training: TrainingConfig, info: TrainingSetInfo) -> str:
    """Same data + same family, hyperparameters, seed and split → same key → same registered version."""
    from pipelines.training.families import family_params

    payload = {
        "digest": info["digest"], "family": training.family, "seed": training.seed,
        "hyperparameters": family_params(training.family, training.hyperparameters),
        "feature_service": info["feature_service"], "holdout_fraction": training.holdout_fraction,
    }
    if training.task != "binary":  # binary keys stay what they were, so existing versions are still reused
        payload["task"] = training.task
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def fit(training: TrainingConfig, frame, numeric: list[str], categorical: list[str]) -> Any:
    """Train the configured family on the ``train`` split (no MLflow: the benchmark times this alone)."""
    from pipelines.training.families import build_model

    train = frame[frame[SPLIT] == "train"]
    model = build_model(training.family, training.hyperparameters, training.seed, numeric, categorical, training.task)
    log.info("Training %s (%s) on %d rows and %d features", training.family, training.task, len(train),
             len(numeric) + len(categorical))
    return model.fit(train[numeric + categorical], train["label"].to_numpy())


@dataclass(frozen=True)
class TrainedModel:
    """A fitted model and its scores on the holdout, before anything is logged anywhere."""

    model: Any
    metrics: dict[str, float]  # the task's metrics on the holdout
    evaluation: Any  # promotion.Evaluation of the policy's metric
    plots: list[Path]
    baseline_metrics: dict[str, float] | None = None  # the task's metrics of promotion.baseline, same holdout


def raw_output(task: str, estimator: Any, X) -> Any:
    """What a fitted model gives for ``X``: class probabilities (classification) or values (regression)."""
    return estimator.predict(X) if task == "regression" else estimator.predict_proba(X)


def baseline_metrics(training: TrainingConfig, frame, classes=None) -> dict[str, float] | None:
    """The task's metrics of ``promotion.baseline`` on the holdout, learnt from the train split (None without one)."""
    from pipelines.training.evaluation import baseline_output, metrics

    if training.promotion.baseline is None:
        return None
    train, holdout = frame[frame[SPLIT] == "train"], frame[frame[SPLIT] == "holdout"]
    output = baseline_output(training.promotion.baseline, training.task, train, holdout, classes, training.seed)
    return metrics(holdout["label"].to_numpy(), output, training.task, classes)


def train_and_evaluate(training: TrainingConfig, frame, numeric: list[str], categorical: list[str],
                       plots_dir: Path) -> TrainedModel:
    """Fit on the train split, score the holdout overall and per slice (and the baseline), draw the plots.
    No MLflow."""
    from pipelines.training.evaluation import evaluation, metrics, model_output, save_plots

    task, policy = training.task, training.policy
    features = numeric + categorical
    holdout = frame[frame[SPLIT] == "holdout"]
    model = fit(training, frame, numeric, categorical)
    classes = getattr(model, "classes_", None) if task == "multiclass" else None
    output = model_output(task, raw_output(task, model, holdout[features]))
    y = holdout["label"].to_numpy()
    plots = save_plots(model, holdout[features], y, output, plots_dir, training.seed, task)
    return TrainedModel(model, metrics(y, output, task, classes),
                        evaluation(holdout, output, policy.slices, task, policy.metric, classes), plots,
                        baseline_metrics(training, frame, classes))


def train_and_register(training: TrainingConfig, info: TrainingSetInfo, *,
                       settings: LooplineSettings | None = None) -> TrainedVersion:
    """Train, log everything to MLflow and register a version, unless these inputs already have one.

    Holds the instance's lock (``training:<instance>``): two runs of the same inputs cannot both register.
    """
    settings = settings or get_settings()
    with instance_lock(f"training:{training.instance}", settings=settings):
        return _train_and_register(training, info, settings)


def _train_and_register(training: TrainingConfig, info: TrainingSetInfo, settings: LooplineSettings) -> TrainedVersion:
    from pipelines import lineage
    from pipelines.lineage import uris

    trained = _train_or_reuse(training, info, settings)
    lineage.declare(inputs=[uris.file(info["path"])], outputs=[uris.model_version(training.model_name,
                                                                                   trained["version"])])
    return trained


def _train_or_reuse(training: TrainingConfig, info: TrainingSetInfo, settings: LooplineSettings) -> TrainedVersion:
    import mlflow
    import pandas as pd

    from pipelines.core import tracking
    from pipelines.training.families import family_params

    key = training_key(training, info)
    existing = tracking.find_version_by_tag(training.model_name, TRAINING_KEY_TAG, key, settings)
    if existing is not None:
        saved_as = serialization_format(training.model_name, existing.version, settings)
        if saved_as == "skops":
            log.info("These inputs were trained before: reusing %s version %s (training key %s…)",
                     training.model_name, existing.version, key[:12])
            return TrainedVersion(version=str(existing.version), run_id=existing.run_id, reused=True,
                                  training_key=key)
        # An older Loopline's pickle, which workers refuse to load: these inputs get a skops version of their own.
        log.warning("These inputs were trained before as %s version %s, saved as %s, which Loopline no longer "
                    "loads: training a new version saved as skops", training.model_name, existing.version, saved_as)

    frame = pd.read_parquet(training_set_path(info, "XCom build_training_set.path", settings))
    experiment = tracking.experiment_id(f"{training.instance}_training", settings)
    with mlflow.start_run(experiment_id=experiment,
                          run_name=f"{training.family} {info['window_start']}…{info['window_end']}") as run, \
            tempfile.TemporaryDirectory() as plots_dir:
        mlflow.set_tags({"loopline.dag_id": training.dag_id, TRAINING_KEY_TAG: key, "git_commit": git_commit()})
        mlflow.log_params({
            "family": training.family, "seed": training.seed,
            **family_params(training.family, training.hyperparameters),
            "window_start": info["window_start"], "window_end": info["window_end"],
            "feature_service": info["feature_service"], "feast_project": info["feast_project"],
            "dataset_digest": info["digest"], "holdout_fraction": training.holdout_fraction,
            "train_rows": info["train_rows"], "holdout_rows": info["holdout_rows"],
            # Beside churn's params as they were: a binary run without a baseline logs what it always did.
            **({"task": training.task} if training.task != "binary" else {}),
            **({"baseline": training.promotion.baseline} if training.promotion.baseline else {}),
        })
        mlflow.log_input(
            mlflow.data.from_pandas(frame, source=info["path"], name=f"{training.instance}_training_set",
                                    targets="label"),
            context="training",
        )
        trained = train_and_evaluate(training, frame, info["numeric"], info["categorical"], Path(plots_dir))
        # One call each: every call is a round trip (a commit on the embedded SQLite store).
        metric = training.policy.metric
        mlflow.log_metrics({
            **{f"holdout_{k}": v for k, v in trained.metrics.items()},
            # The baseline beside the model, on the same holdout: baseline_<metric>.
            **{f"baseline_{k}": v for k, v in (trained.baseline_metrics or {}).items()},
            **{f"holdout_{metric}_{_metric_name(n)}": s.value for n, s in trained.evaluation.slices.items()
               if s.value is not None},
        })
        mlflow.log_artifacts(plots_dir, artifact_path="evaluation")
        model_uri = _log_model(training, trained.model, frame[info["numeric"] + info["categorical"]].head(5))
        version = mlflow.register_model(
            model_uri, training.model_name,
            tags={TRAINING_KEY_TAG: key, "dataset_digest": info["digest"], "family": training.family,
                  "window": f"{info['window_start']}…{info['window_end']}", "feature_service": info["feature_service"]},
        )
    baseline = trained.baseline_metrics
    log.info("Registered %s version %s (run %s): holdout %s %.4f%s", training.model_name, version.version,
             run.info.run_id, metric, trained.metrics[metric],
             f" (baseline {training.promotion.baseline}: {baseline[metric]:.4f})" if baseline else "")
    return TrainedVersion(version=str(version.version), run_id=run.info.run_id, reused=False, training_key=key,
                          metrics=trained.metrics)


def _log_model(training: TrainingConfig, model: Any, example) -> str:
    """Log the fitted model to the active MLflow run, with its signature and input example; return its URI."""
    import mlflow
    from threadpoolctl import threadpool_limits

    # log_model reloads the model and predicts the example to validate it for serving; on five rows,
    # OpenMP's worker threads only cost time (a lot of it when the cores are shared), so use one.
    with threadpool_limits(limits=1):
        model_info = mlflow.sklearn.log_model(
            model, name="model", input_example=example,
            signature=mlflow.models.infer_signature(example, raw_output(training.task, model, example)),
            pyfunc_predict_fn="predict" if training.task == "regression" else "predict_proba",
            pip_requirements=_pip_requirements(training.family),
            **_serialization(),
        )
    return model_info.model_uri


def _metric_name(slice_name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in slice_name).strip("_")


def _serialization() -> dict[str, Any]:
    """skops for every family: loading it builds plain data and the allowlisted types, never runs pickled code.

    ``skops_trusted_types`` only lets ``log_model`` check its own file; workers never read it back: they load
    through :mod:`pipelines.core.trusted_models` and Loopline's own allowlist.
    """
    from pipelines.core.trusted_models import TRUSTED_TYPES

    return {"serialization_format": "skops", "skops_trusted_types": list(TRUSTED_TYPES)}


def _pip_requirements(family: str) -> list[str]:
    """The model's runtime requirements, pinned from this environment (saves MLflow inferring them)."""
    from importlib.metadata import version

    packages = ["scikit-learn", "pandas", "numpy", "skops"]
    if family == "torch_mlp":  # the network's class (TorchMLPClassifier) lives in this package
        packages += ["torch", "loopline"]
    return [f"{name}=={version(name)}" for name in packages]


class ChampionUnscorable(RuntimeError):
    """The champion could not be scored on the challenger's holdout, so the gate cannot compare: no promotion.

    Retryable (an artifact store that was down comes back); the challenger is tagged ``rejected`` with the
    reason meanwhile, and ``force_promote`` overrules it when the champion can never score this holdout
    (a model trained on other features).
    """


class ChampionUntrusted(NotRetryable, ChampionUnscorable):
    """The champion's artifact is one Loopline will not load (pickle-only, or untrusted types): no comparison.

    Not retryable: the artifact stays what it is. ``force_promote`` replaces such a champion after a review.
    """


def evaluate_and_promote(training: TrainingConfig, info: TrainingSetInfo, trained: TrainedVersion, *,
                         force: bool = False, settings: LooplineSettings | None = None,
                         source: dict[str, Any] | None = None) -> PromotionResult:
    """Challenger against the current champion on the same holdout and slices; move the alias or say why not.

    Holds the instance's lock (``training:<instance>``) from reading the champion to moving the alias, and
    moves it only if it still points at the version judged against (:class:`~pipelines.core.tracking.ChampionMoved`
    otherwise, retryable). Both models are loaded by version number, never through the alias, so the scores
    belong to the versions named in the verdict.

    Both are loaded through Loopline's trusted-types allowlist (:mod:`pipelines.core.trusted_models`).

    With ``promotion.approval: required`` a version the gate (or ``force``) would promote is tagged
    ``awaiting_approval`` instead, and the result carries the request a person answers (:func:`finalize_promotion`
    applies it). Every verdict that moves or keeps the alias is written as an audit record (``source``: the
    Airflow run's ids, kept in it).

    Raises:
        UntrustedModel: the challenger is pickle-only or holds untrusted types; it is tagged ``rejected`` with
            the reason, nothing from it ran and the alias stays (``force`` does not overrule this).
        ChampionUnscorable: the champion's model cannot be loaded or cannot score this holdout; nothing was
            promoted (unless ``force``). ``ChampionUntrusted`` (not retryable) when its artifact is untrusted.
        ChampionMoved: the alias moved during the evaluation; nothing was recorded.
    """
    settings = settings or get_settings()
    with instance_lock(f"training:{training.instance}", settings=settings):
        return _evaluate_and_promote(training, info, trained, force, settings, source or {})


def _evaluate_and_promote(training: TrainingConfig, info: TrainingSetInfo, trained: TrainedVersion, force: bool,
                          settings: LooplineSettings, source: dict[str, Any]) -> PromotionResult:
    import pandas as pd

    from pipelines.core import tracking
    from pipelines.training import promotion
    from pipelines.training.evaluation import evaluation, model_output

    tracking.configure_mlflow(settings)
    name, version = training.model_name, str(trained["version"])
    frame = pd.read_parquet(training_set_path(info, "XCom build_training_set.path", settings))
    holdout = frame[frame[SPLIT] == "holdout"]
    features = info["numeric"] + info["categorical"]
    task, policy = training.task, training.policy
    classes_seen: list = []

    def score(model_version: str):
        model = load_registered_model(name, model_version, settings)
        classes = getattr(model.estimator, "classes_", None) if task == "multiclass" else None
        classes_seen.append(classes)
        return evaluation(holdout, model_output(task, model.predict(holdout[features])), policy.slices, task,
                          policy.metric, classes)

    try:
        challenger = score(version)
    except UntrustedModel as exc:
        # Not even force_promote moves the alias to a model Loopline will not load; the tags say why (unless it
        # holds the alias already, an older Loopline's champion: its tags keep saying why it got there).
        holder = tracking.champion(name, settings)
        if holder is None or str(holder.version) != version:
            tracking.keep_champion(name, version, f"not loaded: {exc}", settings)
        raise
    current = tracking.champion(name, settings)
    champion_version = str(current.version) if current is not None else None
    if champion_version == version:
        reason = f"version {version} is already the champion (same inputs as before)"
        return PromotionResult(version=version, promoted=False, champion=version, reason=reason,
                               **_figures(policy.metric, challenger.metric))
    # The baseline on the same holdout, learnt from the same train split (the challenger's classes for multiclass).
    baseline = baseline_metrics(training, frame, classes_seen[0]) if champion_version is None else None
    baseline_value = None if baseline is None else baseline[policy.metric]
    champion_eval = None
    unscorable = None
    untrusted_champion = False
    if champion_version is not None:
        try:
            champion_eval = score(champion_version)
        except UntrustedModel as exc:  # a retry reads the same artifact: only a person can decide
            unscorable = (f"champion v{champion_version} cannot be loaded safely ({exc}), so version {version} was "
                          "not compared and is not promoted: promote it with force_promote after reviewing it")
            untrusted_champion = True
            log.warning("%s", unscorable)
        except Exception as exc:  # the artifact is unavailable, or it was trained on other features
            unscorable = (f"champion v{champion_version} could not be scored on this holdout "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}), so version "
                          f"{version} was not compared and is not promoted: restore the champion's model artifact "
                          "and retry, or use force_promote")
            log.warning("%s", unscorable)
    if unscorable is not None:
        decision = tracking.Decision(False, unscorable)
        if force:
            decision = tracking.Decision(True, f"forced by the force_promote param; the gate said: {unscorable}")
    else:
        decision = promotion.decide(challenger, champion_eval, policy, champion_version=champion_version,
                                    force=force, baseline=baseline_value)
    figures = _figures(policy.metric, round(challenger.metric, 4),
                       round(champion_eval.metric, 4) if champion_eval else None,
                       baseline_value=None if baseline_value is None else round(baseline_value, 4), judged=True)
    evidence = audit.evidence(training, challenger, champion_eval, champion_version, baseline_value)
    made_of = audit.provenance(training, info, trained)
    source = {**source, "mlflow_run": trained["run_id"], "model_version": version}
    if decision.promote and policy.approval == "required":
        return _request_approval(training, version, decision, champion_version, evidence, made_of, figures,
                                 settings)
    champion_now = tracking.apply_decision(name, version, decision, settings, expected_champion=champion_version)
    record = records.record(audit.gate_event(training, version, decision.promote, decision.reason,
                                             datetime.now(UTC), champion_version, evidence, made_of, source), settings)
    if decision.promote:
        records.tag_model_version(name, version, record, settings)
    if unscorable is not None and not decision.promote:
        raise (ChampionUntrusted if untrusted_champion else ChampionUnscorable)(unscorable)
    return PromotionResult(version=version, promoted=decision.promote, reason=decision.reason,
                           champion=str(champion_now.version) if champion_now else None, record=record, **figures)


AWAITING_APPROVAL = "awaiting_approval"
APPROVE, REJECT = "Approve", "Reject"  # the options of the approval request (ApprovalOperator's own words)


def _request_approval(training: TrainingConfig, version: str, decision, champion_version: str | None,
                      evidence: dict[str, Any], made_of: dict[str, Any], figures: dict[str, Any],
                      settings: LooplineSettings) -> PromotionResult:
    """Tag the version ``awaiting_approval`` with the gate's reason; the alias stays until a person answers."""
    from pipelines.core import tracking

    client = tracking.client(settings)
    for key, value in (("loopline.promotion", AWAITING_APPROVAL), ("loopline.promotion_reason", decision.reason),
                       ("loopline.judged_against", champion_version or "")):
        client.set_model_version_tag(training.model_name, version, key, value)
    subject, body = audit.approval_request(training, version, decision.reason, evidence, made_of)
    log.info("%s version %s passed the gate and waits for approval (promotion.approval: required): %s",
             training.model_name, version, decision.reason)
    return PromotionResult(version=version, promoted=False, reason=decision.reason,
                           champion=champion_version, awaiting_approval=True, judged_against=champion_version,
                           approval_subject=subject, approval_body=body, evidence=evidence, **figures)


class ChampionMovedDuringApproval(NotRetryable, RuntimeError):
    """The champion alias moved while the approval request waited: the verdict was against another champion."""


def finalize_promotion(training: TrainingConfig, info: TrainingSetInfo, trained: TrainedVersion,
                       decision: PromotionResult, response: dict[str, Any] | None, *,
                       settings: LooplineSettings | None = None,
                       source: dict[str, Any] | None = None) -> PromotionResult:
    """Carry out a person's answer to the approval request: Approve moves the alias, Reject (or no answer before the
    timeout, which Airflow answers with Reject) leaves it; both are recorded with who answered.

    Args:
        decision: ``evaluate_and_promote``'s result (``awaiting_approval``).
        response: the approval task's result (``chosen_options``, ``responded_by_user``, ``responded_at``).

    Raises:
        ChampionMovedDuringApproval: the alias is no longer on the champion judged against (not retryable: run
            the training again to judge the version against the new champion); nothing moved.
    """
    settings = settings or get_settings()
    with instance_lock(f"training:{training.instance}", settings=settings):
        return _finalize_promotion(training, info, trained, decision, response or {}, settings, source or {})


def _finalize_promotion(training: TrainingConfig, info: TrainingSetInfo, trained: TrainedVersion,
                        decision: PromotionResult, response: dict[str, Any], settings: LooplineSettings,
                        source: dict[str, Any]) -> PromotionResult:
    from pipelines.audit.records import AuditEvent
    from pipelines.core import tracking

    name, version = training.model_name, decision["version"]
    chosen = (response.get("chosen_options") or [REJECT])[0]
    user = response.get("responded_by_user") or {}
    approver = user.get("name") or user.get("id")
    answered_at = response.get("responded_at")
    at = datetime.fromisoformat(answered_at) if isinstance(answered_at, str) else answered_at or datetime.now(UTC)
    judged_against = decision.get("judged_against")
    holder = tracking.champion(name, settings)
    holder_version = str(holder.version) if holder is not None else None
    figures = {k: decision[k] for k in ("metric", "challenger_value", "champion_value", "baseline_value",
                                        "challenger_roc_auc", "champion_roc_auc") if k in decision}
    if holder_version == version:  # this run's approval was carried out already (a retry)
        return PromotionResult(version=version, promoted=True, reason=decision["reason"], champion=version,
                               **figures)
    approved = chosen == APPROVE
    if approved and holder_version != judged_against:
        raise ChampionMovedDuringApproval(
            f"{name}@champion moved from {tracking.describe_version(judged_against)} to "
            f"{tracking.describe_version(holder_version)} while v{version}'s approval request waited: the approval was "
            f"for a verdict against {tracking.describe_version(judged_against)}, so nothing moved. Run "
            f"{training.dag_id} again to judge v{version} against {tracking.describe_version(holder_version)}")
    if approved:
        outcome, reason = "approved", f"{decision['reason']}; approved by {approver} at {at:%Y-%m-%d %H:%M} UTC"
    elif approver is None:
        outcome, reason = "timed_out", (f"no answer within {training.policy.approval_timeout_hours:g} h "
                                        f"(promotion.approval_timeout_hours): rejected; the gate had said: "
                                        f"{decision['reason']}")
    else:
        outcome, reason = "rejected", f"rejected by {approver}; the gate had said: {decision['reason']}"
    made_of = audit.provenance(training, info, trained)
    evidence = decision.get("evidence") or {**figures, "champion_version": judged_against}
    source = {**source, "mlflow_run": trained["run_id"], "model_version": version}
    key = f"model:{name}:v{version}:approval:{judged_against or 'none'}"
    client = tracking.client(settings)
    client.set_model_version_tag(name, version, "loopline.approval", outcome)
    client.set_model_version_tag(name, version, "loopline.approved_by" if approved else "loopline.rejected_by",
                                 approver or "timeout")
    answer = AuditEvent(kind="approval", subject=f"model {name}", version=version, decision=outcome, reason=reason,
                        at=at, key=key, previous=judged_against, approved_by=approver, evidence=evidence,
                        provenance=made_of, source=source)
    records.record(answer, settings)
    if not approved:
        tracking.keep_champion(name, version, reason, settings)
        return PromotionResult(version=version, promoted=False, reason=reason, champion=holder_version, **figures)
    tracking.promote(name, version, reason, settings)
    record = records.record(replace(answer, kind="promotion", decision="promoted", key=f"{key}:promotion"), settings)
    records.tag_model_version(name, version, record, settings)
    return PromotionResult(version=version, promoted=True, reason=reason, champion=version, record=record,
                           **figures)


def _figures(metric: str, challenger: float, champion: float | None = None, *, baseline_value: float | None = None,
             judged: bool = False) -> dict[str, Any]:
    """The verdict's figures: under generic names, and under the ``*_roc_auc`` names for a roc_auc policy."""
    out: dict[str, Any] = {"metric": metric, "challenger_value": challenger}
    if judged:
        out |= {"champion_value": champion, "baseline_value": baseline_value}
    if metric == "roc_auc":
        out["challenger_roc_auc"] = challenger
        if judged:
            out["champion_roc_auc"] = champion
    return out


def served_columns(task: str, model: Any, frame, column: str) -> dict[str, Any]:
    """The prediction column(s) scoring writes for ``frame``, scored by a loaded ``TrustedModel``.

    Returns:
        ``{column: ...}``: the positive class's probability (binary), the predicted value (regression), or the
        predicted class with ``<column>_probability``, that class's probability (multiclass).
    """
    import numpy as np

    raw = model.predict(frame)
    if task != "multiclass":
        return {column: positive_scores(raw)}
    probabilities = np.asarray(raw)
    best = np.argmax(probabilities, axis=1)
    classes = np.asarray(model.estimator.classes_)
    return {column: classes[best], f"{column}_probability": probabilities[np.arange(len(best)), best]}


def positive_scores(predictions) -> Any:
    """The positive class's scores (probabilities) of a pyfunc ``predict_proba`` output, array or DataFrame.

    Returns:
        A 1-D numpy array: column 1 of a two-column output, the output itself when it is one column already.
    """
    import numpy as np

    values = np.asarray(predictions)
    return values[:, 1] if values.ndim == 2 else values


def score_latest(training: TrainingConfig, *, settings: LooplineSettings | None = None) -> ScoredBatch:
    """Score the newest published day of features with the champion (the version ``@champion`` names); write
    predictions.

    The champion is loaded through Loopline's trusted-types allowlist: a pickle-only version, or one holding
    untrusted types, fails the task with :class:`~pipelines.core.trusted_models.UntrustedModel` and writes nothing.

    Predictions land in ``predictions/<instance>/ds=<day>/predictions.parquet`` (``DataHome.predictions``)
    with the model version, for the drift checks to read: columns ``<entity key(s)>`` (as published),
    ``ds``, ``<prediction_name>`` (``prediction_column``, default ``<model_name>_score``: the positive class's
    probability, the predicted class, or the predicted value, by task; a multiclass task adds
    ``<prediction_name>_probability``, the predicted class's), ``model_name``, ``model_version``, ``model_run_id``.
    """
    import pandas as pd

    from pipelines import lineage
    from pipelines.core import tracking
    from pipelines.features.feast_store import feature_store
    from pipelines.features.steps import FeaturePaths
    from pipelines.lineage import uris
    from pipelines.training.dataset import ENTITY_TIMESTAMP, day_end

    settings = settings or get_settings()
    features = features_config(training)
    champion = tracking.champion(training.model_name, settings)
    if champion is None:
        raise ValueError(f"{training.model_name} has no champion yet: nothing to score with; train one first")
    published = sorted(FeaturePaths(features, settings).offline.glob("*.parquet"))
    if not published:
        raise ValueError(f"no published features for {features.dag_id}; run it first")
    latest = date.fromisoformat(published[-1].stem)
    keys = entity_keys(features)
    entities = pd.read_parquet(published[-1], columns=keys).drop_duplicates()
    entities[ENTITY_TIMESTAMP] = day_end(latest)
    store = feature_store(features.feast.project, settings)
    service = store.get_feature_service(features.feast.feature_service)
    frame = store.get_historical_features(entity_df=entities, features=service).to_df()
    # By number, not through the alias: the predictions are stamped with this version, which the alias may
    # have left since it was read. Through the allowlist: an untrusted artifact is refused before it runs.
    model = load_registered_model(training.model_name, str(champion.version), settings)
    columns = model.input_names
    scored = frame.dropna(subset=columns)
    score = training.prediction_name
    out = pd.DataFrame({
        **{key: scored[key].to_numpy() for key in keys}, "ds": latest,
        **served_columns(training.task, model, scored[columns], score),
        "model_name": training.model_name, "model_version": str(champion.version), "model_run_id": champion.run_id,
    })
    target = write_atomic(DataHome(settings).predictions(training.instance, latest),
                          lambda partial: out.to_parquet(partial, index=False))
    log.info("Scored %d %s of %s with %s v%s (column %s) → %s", len(out), "/".join(keys), latest,
             training.model_name, champion.version, score, target)
    lineage.declare(inputs=[uris.model_version(training.model_name, champion.version),
                            *(uris.feature_view_day(features.feast.project, view, latest)
                              for view in features.feast.feature_views)],
                    outputs=[uris.file(target)])
    mean = round(float(out[score].mean()), 4)
    batch = ScoredBatch(ds=str(latest), rows=len(out), model_version=str(champion.version), path=str(target),
                        prediction_column=score, mean_prediction=mean)
    return batch
