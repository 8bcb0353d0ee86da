"""The base model: build the default tiny Llama from scratch, or check a real checkpoint, and digest it.

No model can be downloaded here, so the default base model is made on the spot: a byte-level BPE tokenizer
trained on the corpus, a Llama-architecture causal LM of a few million parameters pre-trained briefly on
the corpus text, both written with ``save_pretrained``. Every later step loads it the way it would load a
real checkpoint (``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` on a local
folder, offline). Building is idempotent: a folder whose marker file carries the same spec digest is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, TypedDict

from pipelines.core.errors import NotRetryable
from pipelines.core.files import publish_folder, write_json_atomic

log = logging.getLogger(__name__)

MARKER = "loopline_tiny_model.json"
PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
# Files a digest covers: weights, configs, tokenizer; not caches or our own marker's timestamps.
_DIGEST_SKIP = {MARKER}


class BaseModelError(NotRetryable, ValueError):
    """The base model cannot be used as it is; the message names the folder, what is wrong and what to do."""


class BaseModelCheck(TypedDict):
    """What :func:`check_base_model` reads from a model folder's configs and tokenizer."""

    architecture: str
    model_type: str
    vocab_size: int
    tokenizer_size: int
    eos_token_id: int
    context_length: int


def spec_digest(spec: Any) -> str:
    """sha256 of the tiny model's spec (a pydantic model or dict): equal digests, equal recipe."""
    payload = spec.model_dump() if hasattr(spec, "model_dump") else dict(spec)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def model_digest(path: Path) -> str:
    """sha256 over every file of a model folder (relative names and bytes), in name order."""
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name not in _DIGEST_SKIP):
        h.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def tiny_model_state(path: Path, spec: Any) -> str:
    """What the folder holds: ``missing``, ``current`` (this spec), ``stale`` (another spec) or ``foreign``.

    ``foreign`` is a model we did not build (a real checkpoint someone put there): it is never overwritten.
    """
    if not path.exists() or not any(path.iterdir()):
        return "missing"
    marker = path / MARKER
    if not marker.exists():
        return "foreign" if (path / "config.json").exists() else "missing"
    recorded = json.loads(marker.read_text()).get("spec_digest")
    return "current" if recorded == spec_digest(spec) else "stale"


def train_tokenizer(texts: list[str], vocab_size: int, context_length: int):
    """A byte-level BPE tokenizer trained on ``texts``, as a ``PreTrainedTokenizerFast`` with pad/bos/eos."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   model_max_length=context_length)


def tiny_llama(spec: Any, tokenizer):
    """An untrained ``LlamaForCausalLM`` of ``spec``'s shape, its vocabulary the tokenizer's."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.context_length, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(spec.seed)
    return LlamaForCausalLM(config)


def pretrain(model, token_ids: list[int], spec: Any, device: str = "cpu") -> list[float]:
    """Next-token pre-training on random windows of the token stream; returns the loss of every step."""
    import torch

    if spec.pretrain_steps == 0:
        return []
    seq = min(spec.pretrain_sequence_length, len(token_ids) - 1)
    if seq < 8:
        raise BaseModelError(f"the corpus has {len(token_ids)} tokens: too little text to pre-train a base model on")
    stream = torch.tensor(token_ids, dtype=torch.long)
    generator = torch.Generator().manual_seed(spec.seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.pretrain_learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 20) * max(0.1, 1 - step / spec.pretrain_steps))
    losses, started = [], time.perf_counter()
    every = max(1, spec.pretrain_steps // 20)
    for step in range(1, spec.pretrain_steps + 1):
        starts = torch.randint(0, len(stream) - seq, (spec.pretrain_batch_size,), generator=generator)
        batch = torch.stack([stream[s:s + seq] for s in starts.tolist()]).to(device)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if step % every == 0 or step == spec.pretrain_steps:
            log.info("pre-training step %d/%d: loss %.4f (%.1f s)", step, spec.pretrain_steps, losses[-1],
                     time.perf_counter() - started)
    return losses


def build_tiny_model(path: Path, spec: Any, texts: list[str], device: str = "cpu") -> dict[str, Any]:
    """Train a tokenizer and pre-train a tiny Llama on ``texts``; write both to ``path`` with ``save_pretrained``.

    The folder is published whole (:func:`pipelines.core.files.publish_folder`): a crash never leaves half
    a model at ``path``.
    """
    import torch

    torch.manual_seed(spec.seed)
    started = time.perf_counter()
    tokenizer = train_tokenizer(texts, spec.vocab_size, spec.context_length)
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + [tokenizer.eos_token_id]
    model = tiny_llama(spec, tokenizer)
    parameters = sum(p.numel() for p in model.parameters())
    log.info("Building tiny Llama at %s: %d parameters, vocabulary %d, %d corpus tokens, %d pre-training steps",
             path, parameters, len(tokenizer), len(ids), spec.pretrain_steps)
    losses = pretrain(model, ids, spec, device)
    model.to("cpu").eval()
    with publish_folder(path) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_json_atomic(folder / MARKER, {
            "spec_digest": spec_digest(spec), "spec": spec.model_dump(), "parameters": parameters,
            "corpus_tokens": len(ids), "final_pretrain_loss": losses[-1] if losses else None,
        }, sort_keys=False)
    log.info("Tiny Llama written to %s in %.1f s (final pre-training loss %s)", path, time.perf_counter() - started,
             f"{losses[-1]:.4f}" if losses else "n/a")
    return {"parameters": parameters, "corpus_tokens": len(ids), "pretrain_losses": losses}


def load_tokenizer(path: Path):
    """The tokenizer of a local model folder (offline), with a pad token (eos if it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: Path, device: str = "cpu"):
    """The causal LM of a local model folder (offline), float32, in eval mode, on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    return model.to(device).eval()


def weights_bytes(path: Path) -> int:
    """Bytes of a model folder's weights: its ``.safetensors`` files, else its ``.bin`` files."""
    return (sum(p.stat().st_size for p in path.rglob("*.safetensors"))
            or sum(p.stat().st_size for p in path.rglob("*.bin")))


def check_base_model(path: Path) -> BaseModelCheck:
    """Check, without loading the weights, that ``path`` is a causal LM whose tokenizer matches it.

    Returns:
        ``architecture``, ``model_type``, ``vocab_size`` (embedding rows), ``tokenizer_size``,
        ``eos_token_id``, ``context_length``.

    Raises:
        BaseModelError: no folder, no ``config.json``, not a causal LM, no or mismatched tokenizer.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if not path.is_dir():
        raise BaseModelError(f"base model folder {path} does not exist: point base_model (or the form's "
                             "base_model_path) at a folder saved with save_pretrained, e.g. a local TinyLlama "
                             "or SmolLM checkpoint; nothing was tuned or registered")
    if not (path / "config.json").exists():
        raise BaseModelError(f"base model folder {path} has no config.json: it is not a transformers model "
                             "folder (save_pretrained writes config.json); nothing was tuned or registered")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise BaseModelError(f"base model folder {path}: config.json does not load ({exc}); nothing was tuned "
                             "or registered") from None
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise BaseModelError(f"base model {path} is a {config.model_type!r} model, which AutoModelForCausalLM "
                             "cannot load: LoRA tuning here needs a causal LM (Llama, Mistral, Qwen2, GPT-2, …)")
    try:
        tokenizer = load_tokenizer(path)
    except Exception as exc:
        raise BaseModelError(f"base model folder {path} has no tokenizer that loads ({str(exc).splitlines()[0]}): "
                             "save the model's tokenizer into the same folder with save_pretrained") from None
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    problems = []
    if len(tokenizer) > vocab:
        problems.append(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding has {vocab} rows")
    for name in ("eos_token_id", "bos_token_id"):
        model_id, tokenizer_id = getattr(config, name, None), getattr(tokenizer, name, None)
        if isinstance(model_id, list):
            model_id = model_id[0] if model_id else None
        if model_id is not None and tokenizer_id is not None and model_id != tokenizer_id:
            problems.append(f"the model's {name} is {model_id} but the tokenizer's is {tokenizer_id}")
    if tokenizer.eos_token_id is None:
        problems.append("the tokenizer has no end-of-sequence token")
    if problems:
        raise BaseModelError(f"tokenizer and model in {path} do not match: {'; '.join(problems)}. Save the "
                             "tokenizer the model was trained with into the folder; nothing was tuned or registered")
    return {
        "architecture": (config.architectures or [type(config).__name__])[0], "model_type": config.model_type,
        "vocab_size": vocab, "tokenizer_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id,
        "context_length": int(getattr(config, "max_position_embeddings", 0) or tokenizer.model_max_length),
    }
