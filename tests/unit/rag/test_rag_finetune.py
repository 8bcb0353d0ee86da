"""Fine-tuning the embedder on pairs made from a docstring corpus, and versioning it in MLflow.

Real sentence-transformers and MLflow on tiny inputs: four pairs, one optimizer step, the bundled
all-MiniLM-L6-v2 as the base model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.rag.corpus import Corpus, Document, normalise_text
from pipelines.rag.embeddings import default_model_path, model_id, resolve_model_path
from pipelines.rag.finetune import (
    EmbedderRegistryError,
    TrainingPair,
    fine_tune,
    register_embedder,
    registered_model_path,
    training_pairs,
)

pytestmark = pytest.mark.unit

MODULE = """\
# mlflow.tracking.client

Internal package providing a Python CRUD interface to MLflow experiments and runs.

## class MlflowClient

Client of an MLflow Tracking Server that creates and manages experiments and runs.

### MlflowClient.set_registered_model_alias

Set a registered model alias pointing to a model version. Aliases let serving code load a model by name.

### MlflowClient.get

Short.
"""


def corpus() -> Corpus:
    doc = Document("mlflow/tracking/client.md", "markdown", normalise_text(MODULE, "markdown"), "h")
    return Corpus(root=None, documents=[doc])  # type: ignore[arg-type]


def test_training_pairs_come_from_names_and_first_sentences_only():
    pairs = training_pairs(corpus())
    by_query = {p.query: p for p in pairs}
    name = by_query["mlflow client set registered model alias"]
    assert name.kind == "name"
    assert name.positive.startswith("Set a registered model alias")
    assert "set_registered_model_alias" not in name.positive  # the passage does not repeat the name
    summary = by_query["Set a registered model alias pointing to a model version."]
    assert summary.kind == "summary"
    assert summary.positive.startswith("mlflow.tracking.client.MlflowClient.set_registered_model_alias\n")
    assert summary.positive.endswith("Aliases let serving code load a model by name.")
    assert "pointing to a model version" not in summary.positive
    assert not any("Short" in p.positive for p in pairs)  # docstrings under 40 characters give no pair
    assert training_pairs(corpus(), max_pairs=2, seed=1) == training_pairs(corpus(), max_pairs=2, seed=1)
    assert len(training_pairs(corpus(), max_pairs=2)) == 2


def test_fine_tune_needs_a_batch():
    with pytest.raises(ValueError, match="at least 2 training pairs, got 1"):
        fine_tune(default_model_path(), [TrainingPair("q", "p", "name")], Path("/nonexistent"))


def test_fine_tune_one_step_then_register_and_resolve_from_mlflow(tmp_path, loopline_home):
    pairs = training_pairs(corpus())
    assert len(pairs) >= 2
    result = fine_tune(default_model_path(), pairs, tmp_path / "run", batch_size=4, max_steps=1)
    assert result["steps"] == 1 and result["train_loss"] > 0
    tuned = Path(result["model_path"])
    assert (tuned / "modules.json").exists()
    assert model_id(tuned) != model_id(default_model_path())  # weights moved: another model, another index

    registered = register_embedder(tuned, "test-docstrings-minilm", params={"pairs": len(pairs)})
    assert registered["uri"] == f"models:/test-docstrings-minilm/{registered['version']}"
    local = resolve_model_path(registered["uri"])
    assert local == loopline_home / "models" / "embedders" / "test-docstrings-minilm" / registered["version"] / "model"
    assert model_id(local).split("@")[1] == model_id(tuned).split("@")[1]  # the same files, byte for byte
    assert model_id(local).startswith(f"test-docstrings-minilm-v{registered['version']}@")
    assert resolve_model_path(registered["uri"]) == local  # the second time from the local copy

    with pytest.raises(EmbedderRegistryError, match="no such registered model version"):
        registered_model_path("models:/test-docstrings-minilm/999")
    with pytest.raises(EmbedderRegistryError, match="is not models:/<name>/<version>"):
        registered_model_path("models:/")
