"""PEFT LoRA on a causal LM: encode the pairs, attach the adapter, train it, seeded, reporting every step.

The loss is the next-token loss of the answer only: prompt and padding positions carry the label -100,
so the adapter learns to answer, not to repeat the question. Only the adapter's parameters get
gradients and optimizer state; the base weights stay frozen (and are what the peak-memory gain comes from).

A tuned adapter lives in a folder named by its *tuning key* (:func:`tuning_key`): the PEFT files and
``loopline_run.json`` (:data:`RUN_RECORD`), written last, which marks the folder as finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.files import publish_folder, write_json_atomic
from pipelines.lora.dataset import Pair, prompt_ids, read_pairs

log = logging.getLogger(__name__)

IGNORE = -100
RUN_RECORD = "loopline_run.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# TuningSpec fields that change how a run uses the machine, not what it learns: left out of the tuning key.
RUNTIME_SETTINGS = {"device", "cpu_threads", "gradient_checkpointing"}


def tuning_key(lora: Any, tuning: Any, base_digest: str, dataset_digest: str, max_tokens: int) -> str:
    """Same base model, dataset, LoRA and tuning settings → same key → same adapter and registered version.

    Args:
        lora: The ``LoraSpec``.
        tuning: The ``TuningSpec``; where, on how many threads and with how much memory it runs (``device``,
            ``cpu_threads``, ``gradient_checkpointing``) is not part of the key.
        base_digest: sha256 of the base model's folder.
        dataset_digest: sha256 of the instruction pairs.
        max_tokens: The longest example, in tokens.
    """
    payload = {
        "base": base_digest, "dataset": dataset_digest, "lora": lora.model_dump(),
        "tuning": tuning.model_dump(exclude=RUNTIME_SETTINGS), "max_tokens": max_tokens,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Example:
    """One encoded pair: ``input_ids`` (prompt, answer, eos) and ``labels`` (-100 outside the answer)."""

    input_ids: list[int]
    labels: list[int]


def encode(pair: Pair, tokenizer, max_tokens: int) -> Example:
    """Tokenize a pair for training or evaluation; the answer is cut so the whole fits ``max_tokens``."""
    head = prompt_ids(tokenizer, pair.instruction)
    answer = tokenizer(pair.answer, add_special_tokens=False)["input_ids"]
    room = max(1, max_tokens - len(head) - 1)
    answer = answer[:room] + [tokenizer.eos_token_id]
    ids = (head + answer)[:max_tokens]
    labels = ([IGNORE] * len(head) + answer)[:max_tokens]
    return Example(ids, labels)


def encode_pairs(path: str | Path, tokenizer, max_tokens: int) -> list[Example]:
    """Every pair of one ``.jsonl`` split file, encoded (:func:`encode`)."""
    return [encode(pair, tokenizer, max_tokens) for pair in read_pairs(path)]


def batches(examples: list[Example], batch_size: int, pad_id: int, device: str = "cpu"):
    """Right-padded tensors ``(input_ids, attention_mask, labels)``, ``batch_size`` examples at a time."""
    import torch

    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        width = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
        for row, e in enumerate(chunk):
            ids[row, :len(e.input_ids)] = torch.tensor(e.input_ids)
            mask[row, :len(e.input_ids)] = 1
            labels[row, :len(e.labels)] = torch.tensor(e.labels)
        yield ids.to(device), mask.to(device), labels.to(device)


def pick_device(requested: str | None = None) -> str:
    """``requested``, else ``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def set_cpu_threads(threads: int | None) -> None:
    """Limit torch's CPU threads (intra-op) when asked; None leaves torch's default."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def prepare_device(spec: Any) -> str:
    """Apply a ``TuningSpec``'s ``cpu_threads`` and return the device it asks for (:func:`pick_device`)."""
    set_cpu_threads(spec.cpu_threads)
    return pick_device(spec.device)


def lora_config(spec: Any):
    """The ``peft.LoraConfig`` of a ``LoraSpec``: causal-LM task, no bias training."""
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=list(spec.target_modules), bias="none")


def attach_lora(model, spec: Any, seed: int | None = None):
    """The model wrapped by PEFT with fresh LoRA adapters on ``spec.target_modules``; only those train.

    ``seed`` seeds torch first, so the adapters' random initialisation is the same on every run.

    Raises:
        ValueError: no module of the model matches the target modules (the message lists its linear layers).
    """
    import torch
    from peft import get_peft_model

    if seed is not None:
        torch.manual_seed(seed)
    try:
        return get_peft_model(model, lora_config(spec))
    except ValueError as exc:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"LoRA target modules {list(spec.target_modules)} match nothing in this model "
                         f"({exc}); its linear layers are named {linear}") from None


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing on ``model``, a transformers model or a PEFT model around one.

    Each decoder layer keeps only its input in the forward pass and is recomputed in the backward pass
    (``torch.utils.checkpoint``, non-reentrant, as transformers and PEFT recommend: the recomputation restores the
    RNG state, so dropout masks and losses are those of a run without it). With frozen base weights the
    embeddings' output must require grad for gradients to reach the adapters through a checkpointed layer:
    ``enable_input_require_grads`` (transformers calls it itself for PEFT models; done again here, harmlessly,
    for versions that do not). Checkpointing acts only in train mode; evaluation is unaffected.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name is a deprecated alias
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if base is not model or any(not p.requires_grad for p in base.parameters()):
        base.enable_input_require_grads()
    base.config.use_cache = False  # a KV cache is of no use in training and conflicts with checkpointing


def parameter_counts(model) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step: its loss, learning rate, tokens in the batch, and seconds since the start."""

    step: int
    epoch: int
    loss: float
    learning_rate: float
    tokens: int
    elapsed_s: float


def progress_line(record: StepRecord, total: int, tokens_so_far: int) -> str:
    """The task log's line for one step: ``LoRA step 3/16 (epoch 1): loss 2.1, lr 1e-3, 310 tokens/s, 5.2 s/step,
    ETA 68 s`` (the ETA at the mean pace of the steps so far)."""
    pace = record.elapsed_s / max(record.step, 1)
    return (f"LoRA step {record.step}/{total} (epoch {record.epoch}): loss {record.loss:.4f}, "
            f"lr {record.learning_rate:.2e}, {tokens_so_far / max(record.elapsed_s, 1e-9):.0f} tokens/s, "
            f"{pace:.2f} s/step, ETA {pace * (total - record.step):.0f} s")


def train(model, examples: list[Example], tuning: Any, pad_id: int, device: str,
          on_step: Callable[[StepRecord], None] | None = None) -> list[StepRecord]:
    """Seeded AdamW over the trainable parameters for ``epochs`` passes or ``max_steps`` steps, whichever first.

    Each epoch visits the examples in a seeded shuffled order; the learning rate warms up over the first
    10% of steps and then decays linearly to 10%. Every step is logged and passed to ``on_step``.
    """
    import torch

    torch.manual_seed(tuning.seed)
    generator = torch.Generator().manual_seed(tuning.seed)
    steps_per_epoch = math.ceil(len(examples) / tuning.batch_size)
    total = min(tuning.max_steps, tuning.epochs * steps_per_epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tuning.learning_rate, weight_decay=tuning.weight_decay)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.1, 1 - (s - warmup) / max(1, total - warmup)))
    if tuning.gradient_checkpointing:
        enable_checkpointing(model)
    model.to(device).train()
    records: list[StepRecord] = []
    started = time.perf_counter()
    every = max(1, total // 25)
    log.info("LoRA tuning: %d examples, batch %d, %d steps (%d epochs of %d steps, max_steps %d) on %s%s%s",
             len(examples), tuning.batch_size, total, tuning.epochs, steps_per_epoch, tuning.max_steps, device,
             f" ({torch.cuda.get_device_name(device)})" if str(device).startswith("cuda") else
             f" ({torch.get_num_threads()} threads)",
             ", gradient checkpointing" if tuning.gradient_checkpointing else "")
    step = 0
    for epoch in range(1, tuning.epochs + 1):
        order = torch.randperm(len(examples), generator=generator).tolist()
        for ids, mask, labels in batches([examples[i] for i in order], tuning.batch_size, pad_id, device):
            if step >= total:
                break
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            rate = schedule.get_last_lr()[0]
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            record = StepRecord(step, epoch, float(loss.detach()), rate, int(mask.sum()), time.perf_counter() - started)
            records.append(record)
            if on_step:
                on_step(record)
            if step % every == 0 or step == total or step == 1:
                log.info("%s", progress_line(record, total, sum(r.tokens for r in records)))
        if step >= total:
            break
    model.eval()
    return records


def save_adapter(model, adapter_dir: Path) -> int:
    """Publish the PEFT adapter of ``model`` (``save_pretrained``) as ``adapter_dir``, whole; its weights' bytes.

    An earlier folder there (a run that stopped before its record) is replaced only once the new one is complete.
    """
    with publish_folder(adapter_dir) as folder:
        model.save_pretrained(str(folder))
    return (adapter_dir / ADAPTER_WEIGHTS).stat().st_size


def record_run(adapter_dir: Path, record: dict[str, Any]) -> None:
    """Write the run record that marks ``adapter_dir`` as tuned and logged (read back by :func:`recorded_run`)."""
    write_json_atomic(adapter_dir / RUN_RECORD, record, sort_keys=False)


def recorded_run(adapter_dir: Path) -> dict[str, Any] | None:
    """The run record of a finished adapter folder, or None if there is no finished adapter there."""
    record = adapter_dir / RUN_RECORD
    if record.exists() and (adapter_dir / ADAPTER_WEIGHTS).exists():
        return json.loads(record.read_text())
    return None
