"""What a LoRA run records in MLflow: lineage tags, params, step metrics, both splits, the adapter as a model.

The tuning run (experiment ``<instance>_lora_tune``) holds the params (base model, dataset, LoRA and tuning
settings), the train loss and learning rate of every step, both splits as dataset inputs, the eval metrics
and the adapter as a pyfunc model (``adapter_pyfunc.py``). A registered version and its run carry the lineage
tags (the corpus digest and docs index version among them: ``pipelines.lora.lineage``): a later run finds the
version of the same inputs by :data:`TUNING_KEY_TAG`, and knows which base model the champion was tuned on by
:data:`BASE_DIGEST_TAG`. mlflow and pandas are imported inside the functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.core import tracking
from pipelines.core.settings import LooplineSettings

log = logging.getLogger(__name__)

TUNING_KEY_TAG = "loopline.tuning_key"
BASE_DIGEST_TAG = "base_model_digest"
DATASET_DIGEST_TAG = "dataset_digest"
REGISTRATION_REASON_TAG = "loopline.registration_reason"
ADAPTER_ARTIFACT = "adapter"  # the pyfunc model's artifact that holds the PEFT folder
STEP_METRICS_BATCH = 40  # metrics sent to MLflow at a time while training


def data_lineage(data: Mapping[str, Any]) -> dict[str, str]:
    """The lineage tags (corpus digest, docs index and its live version) of ``build_dataset``'s output."""
    from pipelines.lora.lineage import lineage_tags

    return lineage_tags(data["corpus_digest"], data.get("index"), data.get("index_version"))


def tuning_params(config: Any, base: Mapping[str, Any], data: Mapping[str, Any], *, device: str, trainable: int,
                  total: int) -> dict[str, Any]:
    """The params of a tuning run: base model, dataset, LoRA and tuning settings, parameter counts."""
    lora, tuning = config.lora, config.tuning
    return {
        "base_model_path": base["path"], "base_model_digest": base["digest"], "architecture": base["architecture"],
        "dataset_digest": data["digest"], "corpus": data["corpus"], "corpus_digest": data["corpus_digest"],
        "train_pairs": data["train_pairs"], "eval_pairs": data["eval_pairs"], "max_tokens": data["max_tokens"],
        "lora_rank": lora.rank, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
        "lora_target_modules": ",".join(lora.target_modules), "epochs": tuning.epochs,
        "learning_rate": tuning.learning_rate, "max_steps": tuning.max_steps, "batch_size": tuning.batch_size,
        "weight_decay": tuning.weight_decay, "seed": tuning.seed, "device": device,
        "trainable_parameters": trainable, "total_parameters": total,
    }


@contextmanager
def tuning_run(config: Any, key: str, base: Mapping[str, Any], data: Mapping[str, Any], *, device: str,
               trainable: int, total: int, settings: LooplineSettings) -> Iterator[str]:
    """An active MLflow run with the lineage tags, the params and both splits logged; yields its id.

    Args:
        config: The run's ``LoraTuneConfig``.
        key: The tuning key of these inputs.
        base: ``prepare_base_model``'s output; data: ``build_dataset``'s.
    """
    import mlflow

    tracking.client(settings)  # points the fluent API at Loopline's store
    experiment = tracking.experiment_id(config.experiment_name, settings)
    with mlflow.start_run(experiment_id=experiment, run_name=f"lora r{config.lora.rank} {key[:8]}") as run:
        mlflow.set_tags({"loopline.dag_id": config.dag_id, TUNING_KEY_TAG: key, BASE_DIGEST_TAG: base["digest"],
                         DATASET_DIGEST_TAG: data["digest"], "base_model_path": base["path"], **data_lineage(data)})
        mlflow.log_params(tuning_params(config, base, data, device=device, trainable=trainable, total=total))
        log_datasets(config.instance, data)
        yield run.info.run_id


def log_datasets(instance: str, data: Mapping[str, Any]) -> None:
    """Both splits as dataset inputs of the active run (``<instance>_instruction_pairs_{training,evaluation}``)."""
    import mlflow
    import pandas as pd

    from pipelines.lora.dataset import read_pairs

    for split, context in (("train_path", "training"), ("eval_path", "evaluation")):
        frame = pd.DataFrame([p.__dict__ for p in read_pairs(data[split])])
        mlflow.log_input(mlflow.data.from_pandas(frame, source=data[split],
                                                 name=f"{instance}_instruction_pairs_{context}"),
                         context=context)


@contextmanager
def step_metrics(run_id: str, settings: LooplineSettings) -> Iterator[Callable[[Any], None]]:
    """An ``on_step`` callback for ``tuning.train`` that logs each step's ``train_loss`` and ``learning_rate``.

    Metrics go to MLflow :data:`STEP_METRICS_BATCH` at a time; the rest when the block ends.
    """
    from mlflow.entities import Metric

    mlflow_client = tracking.client(settings)
    pending: list[Metric] = []

    def on_step(step) -> None:
        stamp = int(step.elapsed_s * 1000)
        pending.extend([Metric("train_loss", step.loss, stamp, step.step),
                        Metric("learning_rate", step.learning_rate, stamp, step.step)])
        if len(pending) >= STEP_METRICS_BATCH:
            mlflow_client.log_batch(run_id, metrics=list(pending))
            pending.clear()

    yield on_step
    if pending:
        mlflow_client.log_batch(run_id, metrics=pending)


def pip_requirements() -> list[str]:
    """What the adapter's pyfunc model needs, pinned to the versions installed here."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "transformers", "peft", "safetensors", "pandas")]


def log_adapter(adapter_dir: Path, base_path: str, metrics: dict[str, float]) -> str:
    """Log the tuned adapter's metrics and the adapter as a pyfunc model (models from code) in the active run.

    Returns:
        The model's URI, which ``register_version`` registers.
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    mlflow.log_metrics(metrics)
    signature = ModelSignature(inputs=Schema([ColSpec("string", "instruction")]), outputs=Schema([ColSpec("string")]))
    info = mlflow.pyfunc.log_model(
        name="adapter", python_model=str(Path(__file__).with_name("adapter_pyfunc.py")),
        artifacts={ADAPTER_ARTIFACT: str(adapter_dir)},
        model_config={"base_model_path": base_path, "max_new_tokens": 64},
        signature=signature, pip_requirements=pip_requirements(),
    )
    return info.model_uri


def log_eval_metrics(run_id: str, metrics: dict[str, float], settings: LooplineSettings) -> None:
    """Add the eval metrics to the tuning run, unless it has them (a reused run was scored on the same inputs)."""
    import mlflow

    tracking.configure_mlflow(settings)
    if "eval_loss" in tracking.client(settings).get_run(run_id).data.metrics:
        return
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(metrics)


def set_registration_reason(run_id: str, reason: str, settings: LooplineSettings) -> None:
    """Record on the tuning run why its adapter was (not) registered."""
    tracking.client(settings).set_tag(run_id, REGISTRATION_REASON_TAG, reason)


def register_version(model_name: str, model_uri: str, *, key: str, base: Mapping[str, Any], data: Mapping[str, Any],
                     evaluation: Mapping[str, Any], reason: str, settings: LooplineSettings) -> str:
    """The version of ``model_name`` registered for tuning key ``key``: the existing one, else a new one.

    A new version carries the lineage tags (tuning key, base model and dataset digests, base model path),
    the eval perplexities and the registration reason.
    """
    import mlflow

    existing = tracking.find_version_by_tag(model_name, TUNING_KEY_TAG, key, settings)
    if existing is not None:
        log.info("These inputs were registered before: reusing %s version %s", model_name, existing.version)
        return str(existing.version)
    registered = mlflow.register_model(model_uri, model_name, tags={
        TUNING_KEY_TAG: key, BASE_DIGEST_TAG: base["digest"], DATASET_DIGEST_TAG: data["digest"],
        "base_model_path": base["path"], "eval_perplexity": str(evaluation["tuned_perplexity"]),
        "base_eval_perplexity": str(evaluation["base_perplexity"]), REGISTRATION_REASON_TAG: reason,
        **data_lineage(data),
    })
    log.info("Registered %s version %s: %s", model_name, registered.version, reason)
    return str(registered.version)


def download_adapter(version: Any, folder: Path) -> Path:
    """The PEFT folder of a registered adapter ``version``, downloaded under ``folder``.

    Where the folder sits inside the model is read from the model's ``MLmodel`` (its pyfunc artifacts), not
    assumed: MLflow keeps the name the folder had when it was logged.
    """
    import mlflow
    from mlflow.models import Model

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(folder)))
    artifacts = Model.load(str(local)).flavors["python_function"]["artifacts"]
    return local / artifacts[ADAPTER_ARTIFACT]["path"]
