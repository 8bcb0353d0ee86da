"""Config of the ``llm_eval`` template: an assistant asked a golden set, its answers scored in MLflow.

Nothing here reads the golden set or loads a model: the DAG file parses in milliseconds; the tasks do the work.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.core.config import PipelineBase, StrictModel


class EvalBudgets(StrictModel):
    """What one answer may cost; an answer over either is a failed ``within_budget`` case."""

    tokens_per_answer: int = Field(1500, ge=1, le=1_000_000, description="Prompt + answer tokens of one answer.")
    latency_p95_ms: int = Field(15_000, ge=1, le=3_600_000,
                                description="Latency of one answer; the run's p95 is compared with it too.")


class GroundednessSpec(StrictModel):
    """When an answer sentence counts as supported by the passages the model was given."""

    min_similarity: float = Field(
        0.6, ge=0, le=1,
        description="Cosine similarity (MiniLM, the index's embedding model) an answer sentence needs with some "
                    "sentence of the passages; its numbers and identifiers must also be in them (docs/llm-eval.md).")


class LlmEvalConfig(PipelineBase):
    """Template ``llm_eval``: ask an assistant every question of a golden set and score the answers."""

    template: Literal["llm_eval"]
    schedule: str | None = Field(  # type: ignore[assignment]
        "@daily", description="Cron (UTC); the DAG also runs when the assistant's index publishes a new version. "
                              "null: on the index alone.")
    assistant: str = Field("docs_assistant", min_length=1,
                           description="The assistant pipeline whose answers are scored: a name in dags/configs/ "
                                       "or a YAML path.")
    golden_set: str = Field("dags/evaluation/docs_golden.yaml", min_length=1,
                            description="The golden-set YAML: repo-relative, absolute or 'home:…'.")
    cases: int | None = Field(None, ge=1, le=10_000,
                              description="Ask at most this many cases, taken in turn from each category; null: all.")
    k: int | None = Field(None, ge=1, le=50,
                          description="hit@k and MRR cut-off; null: the assistant's retrieval.k (a larger k sees "
                                      "no more: the assistant retrieves retrieval.k chunks).")
    groundedness: GroundednessSpec = Field(GroundednessSpec(), description="Support of answer sentences.")
    budgets: EvalBudgets = Field(EvalBudgets(), description="Tokens and latency per answer.")
