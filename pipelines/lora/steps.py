"""The steps of the ``lora_tune`` template, one function per task.

Re-running a step for the same inputs changes nothing: the tiny base model is kept when its spec is
unchanged, the dataset is rebuilt identically (same digest, same folder), an adapter already tuned for the
same *tuning key* (base model digest, dataset digest, LoRA and tuning settings) is reused with its MLflow
run instead of being trained again, a version registered for that key is reused, and the champion is
decided again on the same evidence.

State lives under ``$LOOPLINE_HOME/lora/<instance>/``: ``datasets/<digest>/{train,eval}.jsonl`` and
``adapters/<tuning key>/`` (the PEFT adapter and ``loopline_run.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipelines.lora.config import LoraTuneConfig
from pipelines.core.settings import LooplineSettings, get_settings
from pipelines.core.errors import NotRetryable

log = logging.getLogger(__name__)

TUNING_KEY_TAG = "loopline.tuning_key"
BASE_DIGEST_TAG = "base_model_digest"
DATASET_DIGEST_TAG = "dataset_digest"
RUN_RECORD = "loopline_run.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class AdapterRejected(NotRetryable, ValueError):
    """The tuned adapter failed a check (the merge check): nothing was registered, the champion is untouched."""


def resolve_run(config: LoraTuneConfig, params: dict[str, Any] | None) -> LoraTuneConfig:
    """The config with a manual run's params (from the trigger form) applied, validated.

    A ``base_model_path`` other than the config's ``base_model`` names a checkpoint that must already exist:
    the tiny model is only ever built at the configured default.
    """
    params = dict(params or {})
    overrides: dict[str, Any] = {}
    if params.get("base_model_path") and params["base_model_path"] != config.base_model:
        overrides["base_model"] = params["base_model_path"]
        overrides["tiny_model"] = None
    lora = {k: params[k] for k in ("rank", "alpha", "dropout", "target_modules") if params.get(k) is not None}
    if lora:
        overrides["lora"] = {**config.lora.model_dump(), **lora}
    tuning = {k: params[k] for k in ("epochs", "learning_rate", "max_steps") if params.get(k) is not None}
    if tuning:
        overrides["tuning"] = {**config.tuning.model_dump(), **tuning}
    return LoraTuneConfig.model_validate({**config.model_dump(), **overrides})


def state_dir(config: LoraTuneConfig, settings: LooplineSettings | None = None) -> Path:
    """``$LOOPLINE_HOME/lora/<instance>``."""
    return (settings or get_settings()).path("lora", config.instance)


def _corpus(config: LoraTuneConfig, settings: LooplineSettings):
    from pipelines.rag.corpus import CorpusError, load_corpus

    root = settings.resolve(config.corpus.path)
    try:
        return load_corpus(root, config.corpus.include, config.corpus.exclude)
    except CorpusError as exc:
        from pipelines.lora.dataset import DatasetError

        raise DatasetError(f"the instruction dataset cannot be built: {exc}") from None


def prepare_base_model(config: LoraTuneConfig, *, settings: LooplineSettings | None = None) -> dict[str, Any]:
    """Build the tiny default model if it is configured and not there yet; check the base model; digest it.

    Returns:
        ``path``, ``digest`` (sha256 of the folder), ``built``, and ``check_base_model``'s fields.

    Raises:
        BaseModelError: a missing folder, not a causal LM, a tokenizer that does not match the model.
    """
    from pipelines.lora import base_model

    settings = settings or get_settings()
    path = settings.resolve(config.base_model)
    built = False
    if config.tiny_model is not None:
        state = base_model.tiny_model_state(path, config.tiny_model)
        if state in ("missing", "stale"):
            from pipelines.lora.tuning import pick_device, set_cpu_threads

            set_cpu_threads(config.tuning.cpu_threads)
            texts = [doc.text for doc in _corpus(config, settings).documents]
            base_model.build_tiny_model(path, config.tiny_model, texts, pick_device(config.tuning.device))
            built = True
        elif state == "foreign":
            log.info("%s holds a model Loopline did not build: using it as the base model, as it is", path)
        else:
            log.info("Tiny base model at %s is current (spec digest unchanged): kept", path)
    info = base_model.check_base_model(path)
    digest = base_model.model_digest(path)
    size = sum(p.stat().st_size for p in path.rglob("*.safetensors")) or sum(
        p.stat().st_size for p in path.rglob("*.bin"))
    log.info("Base model %s: %s, vocabulary %d, digest %s…", path, info["architecture"], info["vocab_size"], digest[:12])
    return {"path": str(path), "digest": digest, "built": built, "weights_bytes": size, **info}


def build_dataset(config: LoraTuneConfig, base: dict[str, Any], *,
                  settings: LooplineSettings | None = None) -> dict[str, Any]:
    """Instruction pairs from the corpus, split and validated, written under the data home.

    Returns:
        ``train_path``, ``eval_path``, ``digest``, ``train_pairs``, ``eval_pairs``, ``documents``,
        ``corpus_digest``, ``max_tokens_seen`` and ``examples_cut`` (pairs longer than ``max_tokens``).

    Raises:
        DatasetError: no readable document, no pair, too few pairs, a text out of bounds, a text in both splits.
    """
    from pipelines.lora import dataset
    from pipelines.lora.base_model import load_tokenizer

    settings = settings or get_settings()
    corpus = _corpus(config, settings)
    pairs = dataset.build_pairs(corpus.documents, config.dataset)
    counts = dataset.validate_pairs(pairs, config.dataset, str(corpus.root))
    lengths = dataset.token_lengths(pairs, load_tokenizer(Path(base["path"])))
    limit = min(config.dataset.max_tokens, base["context_length"] or config.dataset.max_tokens)
    digest = dataset.dataset_digest(pairs)
    paths = dataset.write_pairs(pairs, state_dir(config, settings) / "datasets" / digest[:16])
    info = {
        "train_path": paths[dataset.TRAIN], "eval_path": paths[dataset.EVAL], "digest": digest, **counts,
        "documents": len(corpus.documents), "corpus_digest": corpus.digest, "corpus": str(corpus.root),
        "max_tokens": limit, "max_tokens_seen": max(lengths), "examples_cut": sum(n > limit for n in lengths),
    }
    log.info("Instruction dataset from %d documents: %d train and %d eval pairs, up to %d tokens (%d cut to %d), "
             "digest %s…", info["documents"], counts["train_pairs"], counts["eval_pairs"], info["max_tokens_seen"],
             info["examples_cut"], limit, digest[:12])
    return info


def tuning_key(config: LoraTuneConfig, base: dict[str, Any], data: dict[str, Any]) -> str:
    """Same base model, dataset, LoRA and tuning settings → same key → same adapter and registered version."""
    payload = {
        "base": base["digest"], "dataset": data["digest"], "lora": config.lora.model_dump(),
        "tuning": config.tuning.model_dump(exclude={"device", "cpu_threads"}), "max_tokens": data["max_tokens"],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _encoded(path: str, tokenizer, max_tokens: int):
    from pipelines.lora.dataset import read_pairs
    from pipelines.lora.tuning import encode

    return [encode(pair, tokenizer, max_tokens) for pair in read_pairs(path)]


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "transformers", "peft", "safetensors", "pandas")]


def _log_adapter_model(adapter_dir: Path, base_path: str):
    """Log the adapter as an MLflow pyfunc model (models from code) in the active run; its model info."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(inputs=Schema([ColSpec("string", "instruction")]), outputs=Schema([ColSpec("string")]))
    return mlflow.pyfunc.log_model(
        name="adapter", python_model=str(Path(__file__).with_name("adapter_pyfunc.py")),
        artifacts={"adapter": str(adapter_dir)}, model_config={"base_model_path": base_path, "max_new_tokens": 64},
        signature=signature, pip_requirements=_pip_requirements(),
    )


def tune_adapter(config: LoraTuneConfig, base: dict[str, Any], data: dict[str, Any], *,
                 settings: LooplineSettings | None = None) -> dict[str, Any]:
    """Train the LoRA adapter and log it to MLflow, unless these inputs were tuned before.

    MLflow gets the params, the train loss and learning rate of every step, the dataset as an input,
    the lineage tags (base model and dataset digests, tuning key) and the adapter as a pyfunc model.

    Returns:
        ``adapter_path``, ``run_id``, ``model_uri``, ``tuning_key``, ``reused``, ``steps``, ``final_loss``,
        ``trainable_parameters``, ``total_parameters``, ``trainable_fraction``, ``tokens_per_s``,
        ``adapter_bytes``, ``device``.
    """
    import mlflow

    from pipelines.core import tracking
    settings = settings or get_settings()
    key = tuning_key(config, base, data)
    adapter_dir = state_dir(config, settings) / "adapters" / key[:16]
    record = adapter_dir / RUN_RECORD
    if record.exists() and (adapter_dir / ADAPTER_WEIGHTS).exists():
        previous = json.loads(record.read_text())
        log.info("These inputs were tuned before (tuning key %s…): reusing the adapter of run %s", key[:12],
                 previous["run_id"])
        return {**previous, "reused": True}

    from pipelines.lora import tuning
    from pipelines.lora.base_model import load_model, load_tokenizer

    device = tuning.pick_device(config.tuning.device)
    tuning.set_cpu_threads(config.tuning.cpu_threads)
    tokenizer = load_tokenizer(Path(base["path"]))
    model = tuning.attach_lora(load_model(Path(base["path"]), device), config.lora, config.tuning.seed)
    trainable, total = tuning.parameter_counts(model)
    log.info("LoRA r=%d alpha=%s on %s: %d of %d parameters trainable (%.3f%%)", config.lora.rank, config.lora.alpha,
             config.lora.target_modules, trainable, total, 100 * trainable / total)
    examples = _encoded(data["train_path"], tokenizer, data["max_tokens"])
    mlflow_client = tracking.client(settings)
    experiment = tracking.experiment_id(config.experiment_name, settings)
    partial = adapter_dir.with_name(f".{adapter_dir.name}.partial")
    with mlflow.start_run(experiment_id=experiment, run_name=f"lora r{config.lora.rank} {key[:8]}") as run:
        mlflow.set_tags({"loopline.dag_id": config.dag_id, TUNING_KEY_TAG: key, BASE_DIGEST_TAG: base["digest"],
                         DATASET_DIGEST_TAG: data["digest"], "base_model_path": base["path"]})
        mlflow.log_params({
            "base_model_path": base["path"], "base_model_digest": base["digest"], "architecture": base["architecture"],
            "dataset_digest": data["digest"], "corpus": data["corpus"], "corpus_digest": data["corpus_digest"],
            "train_pairs": data["train_pairs"], "eval_pairs": data["eval_pairs"], "max_tokens": data["max_tokens"],
            "lora_rank": config.lora.rank, "lora_alpha": config.lora.alpha, "lora_dropout": config.lora.dropout,
            "lora_target_modules": ",".join(config.lora.target_modules), "epochs": config.tuning.epochs,
            "learning_rate": config.tuning.learning_rate, "max_steps": config.tuning.max_steps,
            "batch_size": config.tuning.batch_size, "weight_decay": config.tuning.weight_decay,
            "seed": config.tuning.seed, "device": device, "trainable_parameters": trainable,
            "total_parameters": total,
        })
        _log_dataset(data, config)
        pending: list = []

        def on_step(step) -> None:
            from mlflow.entities import Metric

            stamp = int(step.elapsed_s * 1000)
            pending.extend([Metric("train_loss", step.loss, stamp, step.step),
                            Metric("learning_rate", step.learning_rate, stamp, step.step)])
            if len(pending) >= 40:
                mlflow_client.log_batch(run.info.run_id, metrics=list(pending))
                pending.clear()

        steps = tuning.train(model, examples, config.tuning, tokenizer.pad_token_id, device, on_step)
        if pending:
            mlflow_client.log_batch(run.info.run_id, metrics=pending)
        seconds = steps[-1].elapsed_s
        tokens_per_s = sum(s.tokens for s in steps) / max(seconds, 1e-9)
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(str(partial))
        adapter_bytes = (partial / ADAPTER_WEIGHTS).stat().st_size
        mlflow.log_metrics({"final_train_loss": steps[-1].loss, "tokens_per_s": tokens_per_s,
                            "trainable_fraction": trainable / total, "adapter_bytes": adapter_bytes,
                            "adapter_to_base_size": adapter_bytes / max(base["weights_bytes"], 1)})
        model_info = _log_adapter_model(partial, base["path"])
    result = {
        "adapter_path": str(adapter_dir), "run_id": run.info.run_id, "model_uri": model_info.model_uri,
        "tuning_key": key, "steps": len(steps), "final_loss": round(steps[-1].loss, 4),
        "trainable_parameters": trainable, "total_parameters": total, "trainable_fraction": trainable / total,
        "tokens_per_s": round(tokens_per_s, 1), "seconds": round(seconds, 2), "adapter_bytes": adapter_bytes,
        "device": device,
    }
    (partial / RUN_RECORD).write_text(json.dumps(result, indent=2))
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    partial.rename(adapter_dir)
    log.info("Adapter tuned in %d steps (%.1f s, %.0f tokens/s), final loss %.4f; %d bytes at %s; MLflow run %s",
             len(steps), seconds, tokens_per_s, steps[-1].loss, adapter_bytes, adapter_dir, run.info.run_id)
    return {**result, "reused": False}


def _log_dataset(data: dict[str, Any], config: LoraTuneConfig) -> None:
    import mlflow
    import pandas as pd

    from pipelines.lora.dataset import read_pairs

    for split, context in (("train_path", "training"), ("eval_path", "evaluation")):
        frame = pd.DataFrame([p.__dict__ for p in read_pairs(data[split])])
        mlflow.log_input(mlflow.data.from_pandas(frame, source=data[split],
                                                 name=f"{config.instance}_instruction_pairs_{context}"),
                         context=context)


def _score(model, data: dict[str, Any], tokenizer, config: LoraTuneConfig, device: str) -> tuple[float, int]:
    from pipelines.lora.evaluation import eval_loss

    examples = _encoded(data["eval_path"], tokenizer, data["max_tokens"])
    return eval_loss(model, examples, config.evaluation.batch_size, tokenizer.pad_token_id, device)


def evaluate_adapter(config: LoraTuneConfig, base: dict[str, Any], data: dict[str, Any], tuned: dict[str, Any], *,
                     settings: LooplineSettings | None = None) -> dict[str, Any]:
    """Eval loss and perplexity of the base model and of base + adapter on the held-out pairs; the merge check.

    Returns:
        ``base_loss``, ``base_perplexity``, ``tuned_loss``, ``tuned_perplexity``, ``eval_tokens``,
        ``improvement`` (share of the base's perplexity), ``merge_max_abs_diff``.

    Raises:
        AdapterRejected: merged weights do not give base + adapter's logits within ``merge_tolerance``.
    """
    import mlflow
    from peft import PeftModel

    from pipelines.core import tracking
    from pipelines.lora.base_model import load_model, load_tokenizer
    from pipelines.lora.evaluation import merge_difference, merged_model, perplexity
    from pipelines.lora.tuning import pick_device, set_cpu_threads

    settings = settings or get_settings()
    device = pick_device(config.tuning.device)
    set_cpu_threads(config.tuning.cpu_threads)
    tokenizer = load_tokenizer(Path(base["path"]))
    model = load_model(Path(base["path"]), device)
    base_loss, tokens = _score(model, data, tokenizer, config, device)
    peft_model = PeftModel.from_pretrained(model, tuned["adapter_path"]).to(device).eval()
    tuned_loss, _ = _score(peft_model, data, tokenizer, config, device)
    examples = _encoded(data["eval_path"], tokenizer, data["max_tokens"])
    merged = merged_model(base["path"], tuned["adapter_path"], device)
    difference = merge_difference(peft_model, merged, examples, tokenizer.pad_token_id, device)
    del merged
    base_ppl, tuned_ppl = perplexity(base_loss), perplexity(tuned_loss)
    result = {
        "base_loss": round(base_loss, 5), "base_perplexity": round(base_ppl, 4), "tuned_loss": round(tuned_loss, 5),
        "tuned_perplexity": round(tuned_ppl, 4), "eval_tokens": tokens,
        "improvement": round((base_ppl - tuned_ppl) / base_ppl, 5), "merge_max_abs_diff": difference,
    }
    log.info("Eval on %d answer tokens: base loss %.4f (perplexity %.3f), base + adapter %.4f (perplexity %.3f), "
             "%+.1f%%; merge check: max |logit diff| %.2e (tolerance %.0e)", tokens, base_loss, base_ppl, tuned_loss,
             tuned_ppl, -100 * result["improvement"], difference, config.evaluation.merge_tolerance)
    tracking.configure_mlflow(settings)
    logged = tracking.client(settings).get_run(tuned["run_id"]).data.metrics
    if "eval_loss" not in logged:  # a reused run was scored before, on the same inputs
        with mlflow.start_run(run_id=tuned["run_id"]):
            mlflow.log_metrics({"eval_loss": tuned_loss, "eval_perplexity": tuned_ppl, "base_eval_loss": base_loss,
                                "base_eval_perplexity": base_ppl, "eval_improvement": result["improvement"],
                                "merge_max_abs_diff": difference, "eval_tokens": tokens})
    if difference > config.evaluation.merge_tolerance:
        raise AdapterRejected(
            f"merge check failed: merged weights differ from base + adapter by up to {difference:.2e} in the "
            f"logits (tolerance {config.evaluation.merge_tolerance:.0e}); adapter {tuned['adapter_path']} was "
            "not registered and the champion is unchanged")
    return result


def _champion_on_this_split(config: LoraTuneConfig, base: dict[str, Any], data: dict[str, Any], current,
                            settings: LooplineSettings) -> dict[str, Any]:
    """The champion's eval perplexity on this run's eval split, or why it cannot be scored here."""
    import mlflow
    from peft import PeftModel

    from pipelines.lora.base_model import load_model, load_tokenizer
    from pipelines.lora.evaluation import perplexity
    from pipelines.lora.tuning import pick_device, set_cpu_threads

    info = {"version": str(current.version), "perplexity": None}
    if current.tags.get(BASE_DIGEST_TAG) != base["digest"]:
        info["why_not_scored"] = (f"it was tuned on another base model (digest "
                                  f"{current.tags.get(BASE_DIGEST_TAG, '?')[:12]}…, this run's is {base['digest'][:12]}…)")
        return info
    device = pick_device(config.tuning.device)
    set_cpu_threads(config.tuning.cpu_threads)
    with tempfile.TemporaryDirectory() as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=current.source, dst_path=folder))
        tokenizer = load_tokenizer(Path(base["path"]))
        model = PeftModel.from_pretrained(load_model(Path(base["path"]), device),
                                          str(local / "artifacts" / "adapter")).to(device).eval()
        loss, _ = _score(model, data, tokenizer, config, device)
    info["perplexity"] = perplexity(loss)
    return info


def register_adapter(config: LoraTuneConfig, base: dict[str, Any], data: dict[str, Any], tuned: dict[str, Any],
                     evaluation: dict[str, Any], *, force: bool = False,
                     settings: LooplineSettings | None = None) -> dict[str, Any]:
    """Register the adapter if it beats the base model by the margin; move ``champion`` only on improvement.

    Returns:
        The run's summary (what ``make demo`` prints): ``registered``, ``version``, ``promoted``,
        ``champion``, ``reason``, ``registration_reason``, base and tuned perplexity, trainable fraction,
        adapter size, lineage digests.
    """
    import mlflow

    from pipelines.core import tracking
    from pipelines.lora.evaluation import champion_decision, registration_decision

    settings = settings or get_settings()
    tracking.configure_mlflow(settings)
    name, key = config.model_name, tuned["tuning_key"]
    summary = {
        "dag_id": config.dag_id, "model_name": name, "base_model": base["path"], "architecture": base["architecture"],
        "base_model_digest": base["digest"], "dataset_digest": data["digest"], "train_pairs": data["train_pairs"],
        "eval_pairs": data["eval_pairs"], "base_perplexity": evaluation["base_perplexity"],
        "tuned_perplexity": evaluation["tuned_perplexity"], "improvement": evaluation["improvement"],
        "merge_max_abs_diff": evaluation["merge_max_abs_diff"], "trainable_fraction": tuned["trainable_fraction"],
        "adapter_bytes": tuned["adapter_bytes"], "base_weights_bytes": base["weights_bytes"],
        "steps": tuned["steps"], "run_id": tuned["run_id"], "reused": tuned["reused"],
    }
    gate = registration_decision(evaluation["base_perplexity"], evaluation["tuned_perplexity"],
                                 config.evaluation.min_improvement)
    tracking.client(settings).set_tag(tuned["run_id"], "loopline.registration_reason", gate.reason)
    current = tracking.champion(name, settings)
    if not gate.yes:
        log.info("Adapter not registered: %s", gate.reason)
        return {**summary, "registered": False, "version": None, "promoted": False, "reason": gate.reason,
                "registration_reason": gate.reason, "champion": str(current.version) if current else None}
    existing = tracking.find_version_by_tag(name, TUNING_KEY_TAG, key, settings)
    if existing is not None:
        version = str(existing.version)
        log.info("These inputs were registered before: reusing %s version %s", name, version)
    else:
        registered = mlflow.register_model(tuned["model_uri"], name, tags={
            TUNING_KEY_TAG: key, BASE_DIGEST_TAG: base["digest"], DATASET_DIGEST_TAG: data["digest"],
            "base_model_path": base["path"], "eval_perplexity": str(evaluation["tuned_perplexity"]),
            "base_eval_perplexity": str(evaluation["base_perplexity"]), "loopline.registration_reason": gate.reason,
        })
        version = str(registered.version)
        log.info("Registered %s version %s: %s", name, version, gate.reason)
    summary.update(registered=True, version=version, registration_reason=gate.reason)
    if current is not None and str(current.version) == version:
        reason = f"version {version} is already the champion (same inputs as before)"
        return {**summary, "promoted": False, "champion": version, "reason": reason}
    champion_info = _champion_on_this_split(config, base, data, current, settings) if current else None
    decision = champion_decision(evaluation["tuned_perplexity"], champion_info,
                                 config.evaluation.min_gain_over_champion, force=force)
    if decision.yes:
        tracking.promote(name, version, decision.reason, settings)
    else:
        tracking.keep_champion(name, version, decision.reason, settings)
    now = tracking.champion(name, settings)
    return {**summary, "promoted": decision.yes, "reason": decision.reason,
            "champion": str(now.version) if now else None,
            "champion_perplexity": champion_info["perplexity"] if champion_info else None}

