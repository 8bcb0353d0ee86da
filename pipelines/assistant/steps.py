"""The steps of the ``assistant`` template, one function per task, and the XCom each returns.

1. :func:`prepare_generator`: the generator's folder (the packaged GGUF converted once under the data home,
   or a saved causal LM checked), loaded once to prove it works; reports digest, parameters and timings.
2. :func:`seed_prompt`: the prompt file registered in MLflow's prompt registry if its content is new; the
   alias set if the prompt has none (:func:`pipelines.assistant.prompts.seed_prompt`).
3. :func:`check_answers`: the config's answerable question must be answered (from the expected document,
   when one is named), its off-corpus question declined; else the run fails without retry.

Each can be re-run: the conversion is keyed by the file's digest, a prompt's content is registered once,
and the check only reads (plus two query-log rows and traces, as any answer).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

from pipelines.assistant.prompts import SeededPrompt
from pipelines.core.errors import NotRetryable
from pipelines.core.settings import LooplineSettings, get_settings

if TYPE_CHECKING:
    from pipelines.assistant.config import AssistantConfig

log = logging.getLogger(__name__)


class AnswerCheckFailed(NotRetryable):
    """The answerable question was declined (or not from its document), or the off-corpus one was answered."""


class GeneratorInfo(TypedDict):
    """``prepare_generator``: the model folder, its source and digest, whether this run converted it, timings."""

    name: str
    path: str
    source: str
    digest: str
    converted: bool
    prepare_seconds: float
    load_seconds: float
    parameters: int | None
    saved_dtype: str | None
    adapter_version: str | None
    backend: str


class AnswerChecks(TypedDict):
    """``check_answers``: both answers as ``--json`` shows them, with the refusal reasons."""

    answerable: dict[str, Any] | None
    off_corpus: dict[str, Any] | None
    index_version: str
    prompt_version: int


def prepare_generator(config: AssistantConfig, settings: LooplineSettings | None = None) -> GeneratorInfo:
    """Convert the packaged model if this data home has not yet, or check the configured folder; load it once.

    Raises:
        GeneratorUnavailable: the model file or folder is missing, does not load, or the adapter does not fit.
    """
    from pipelines.assistant import model

    settings = settings or get_settings()
    served = model.resolve_generator(config.generator, settings)
    log.info("Generator: %s", served.note)
    backend, adapter_path, adapter_version = served.backend, served.adapter_path, served.adapter_version
    prepared = model.prepare(config.generator.base_model, settings, backend=backend)
    loaded = model.load(str(prepared.path), adapter_path, backend=backend)
    parameters = prepared.parameters or loaded.parameters
    if backend == "llama_cpp":
        state = "run as the GGUF file by llama.cpp (nothing converted)"
    else:
        state = f"converted in {prepared.seconds:.1f} s" if prepared.converted else "already converted"
    log.info("Generator %s (sha256 %s) at %s: %s; %s parameters, loads in %.1f s", prepared.name,
             prepared.digest[:12], prepared.path, state, f"{parameters:,}" if parameters else "?",
             loaded.load_seconds)
    return {"name": prepared.name, "path": str(prepared.path), "source": prepared.source, "digest": prepared.digest,
            "converted": prepared.converted, "prepare_seconds": prepared.seconds, "load_seconds": loaded.load_seconds,
            "parameters": parameters, "saved_dtype": prepared.dtype, "adapter_version": adapter_version,
            "backend": backend}


def seed_prompt(config: AssistantConfig, settings: LooplineSettings | None = None) -> SeededPrompt:
    """Register the prompt file in MLflow if its content is new; set the alias if the prompt has none."""
    from pipelines import lineage
    from pipelines.assistant import prompts
    from pipelines.core.settings import get_settings
    from pipelines.lineage import uris

    seeded = prompts.seed_prompt(config, settings)
    prompt_file = (settings or get_settings()).resolve(config.prompt.template_file)
    lineage.declare(inputs=[uris.file(prompt_file)], outputs=[uris.prompt_version(seeded["name"], seeded["version"])])
    log.info("Prompt %s: the file is version %s (%s); @%s is version %s%s", seeded["name"], seeded["version"],
             "registered now" if seeded["registered"] else "registered before", seeded["alias"],
             seeded["alias_version"], " (set now)" if seeded["alias_set"] else "")
    return seeded


def check_answers(config: AssistantConfig, settings: LooplineSettings | None = None, *,
                  now: datetime | None = None) -> AnswerChecks:
    """Ask the config's two questions; fail when the answerable one is declined or the off-corpus one is not.

    Raises:
        AnswerCheckFailed: the answers are not what the check expects (the message shows them).
        QuestionRejected, BudgetExceeded, PromptUnavailable, GeneratorUnavailable, IndexUnavailable: as
            :func:`pipelines.assistant.answer.answer`.
    """
    from pipelines.assistant.answer import answer
    from pipelines.assistant.prompts import load_champion
    from pipelines.assistant.retrieval import index_config, live_version

    settings = settings or get_settings()
    if config.check is None:
        version = live_version(index_config(config), settings)
        prompt = load_champion(config, settings)
        log.info("No check questions configured: index %s and prompt version %s are there", version, prompt.version)
        return {"answerable": None, "off_corpus": None, "index_version": version, "prompt_version": prompt.version}
    check = config.check
    good = answer(check.answerable, config, settings, now=now, origin="check")
    log.info("Answerable question %r: %s", check.answerable, good.answer if not good.refused else
             f"declined ({good.refusal_reason})")
    bad = answer(check.off_corpus, config, settings, now=now, origin="check")
    log.info("Off-corpus question %r: %s", check.off_corpus, bad.answer if not bad.refused else
             f"declined ({bad.refusal_reason})")
    problems = []
    if good.refused:
        problems.append(f"the answerable question {check.answerable!r} was declined: {good.refusal_reason} "
                        f"(similarity {good.similarity or 0:.2f}, overlap {good.overlap:.2f}); lower "
                        "retrieval.min_similarity / min_overlap or check the index")
    elif check.expected_source and check.expected_source not in {s["doc_id"] for s in good.sources}:
        problems.append(f"the answer to {check.answerable!r} does not come from {check.expected_source} (sources: "
                        f"{', '.join(s['doc_id'] for s in good.sources)})")
    if not bad.refused:
        problems.append(f"the off-corpus question {check.off_corpus!r} was answered: {bad.answer[:200]!r} "
                        f"(similarity {bad.similarity or 0:.2f}, overlap {bad.overlap:.2f}); raise "
                        "retrieval.min_similarity / min_overlap")
    if problems:
        raise AnswerCheckFailed(f"{config.dag_id} answer check failed on index {good.index_version}, prompt "
                                f"version {good.prompt_version}: " + "; ".join(problems))

    def shown(result) -> dict[str, Any]:
        return {**result.to_json(), "refusal_reason": result.refusal_reason, "similarity": result.similarity,
                "overlap": result.overlap}

    _declare_served(config, good)
    return {"answerable": shown(good), "off_corpus": shown(bad), "index_version": good.index_version,
            "prompt_version": good.prompt_version}


def _declare_served(config: AssistantConfig, good: Any) -> None:
    """Lineage: what the assistant answers from now (index version, prompt version, the model), checked by this run."""
    from pipelines import lineage
    from pipelines.assistant.retrieval import index_config
    from pipelines.lineage import uris

    served = [uris.index_version(index_config(config).instance, good.index_version),
              uris.prompt_version(config.prompt.name, good.prompt_version), f"model://generator/{good.model}"]
    lineage.declare(inputs=served, outputs=[f"assistant://{config.instance}/{config.dag_id}"])
