"""Fine-tune the embedding model on a corpus of code reference documents, and version it in MLflow.

Users ask about a task ("how do I give a model version a nickname"), the corpus names symbols
(``MlflowClient.set_registered_model_alias``) and describes them. The pairs taught here come from the corpus
alone, never from an evaluation question set:

- *name → description*: the symbol's name as words (``mlflow client set registered model alias``) → the
  docstring without its name;
- *summary → detail*: the docstring's first sentence → the symbol's name and the rest of the docstring.

Training is sentence-transformers' own loop (``old_fit``) with ``MultipleNegativesRankingLoss`` (the other
pairs of a batch are the negatives; no duplicate texts in a batch). The tuned model is a plain
sentence-transformers folder: it is logged to MLflow and registered as a model version, and a rag config
uses it with ``embedding.model: models:/<name>/<version>`` (or ``models:/<name>@<alias>``), resolved to a
local copy under the data home when a task runs. Another model means another digest, so the next run of
the DAG builds a new index version beside the live one and the evaluation gate decides (blue/green).

Run::

    python -m pipelines.rag.finetune home:corpora/docstrings --name docstrings-minilm --max-pairs 4000
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import NotRetryable
from pipelines.core.files import publish_folder
from pipelines.core.settings import LooplineSettings, get_settings
from pipelines.rag.corpus import Corpus, identifier_words, qualified_name, sections

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger(__name__)

MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")
EXPERIMENT = "rag_embedders"
MIN_BODY_CHARS = 40
_SENTENCE = re.compile(r"(.+?[.!?])(?=\s|$)", re.S)


class EmbedderRegistryError(NotRetryable, ValueError):
    """A ``models:/`` embedding model cannot be resolved; the message names the URI and what to do."""


@dataclass(frozen=True)
class TrainingPair:
    """A pseudo-query made from the corpus and the text that answers it."""

    query: str
    positive: str
    kind: str  # name | summary


def training_pairs(corpus: Corpus, *, max_pairs: int | None = None, max_chars: int = 1000,
                   seed: int = 0) -> list[TrainingPair]:
    """(pseudo-query, passage) pairs from every documented symbol of a docstring corpus.

    Args:
        corpus: Documents whose headings name symbols (``python -m pipelines.rag.docstring_corpus``).
        max_pairs: Keep a random sample of this many (seeded), or all when None.
        max_chars: Passages are cut to this many characters (the model reads 256 tokens at most).

    Returns:
        Pairs in a seeded random order; a symbol whose docstring is shorter than 40 characters gives none, and
        a query text appears once (the first symbol that made it).
    """
    pairs: list[TrainingPair] = []
    seen: set[str] = set()
    for doc in sorted(corpus.documents, key=lambda d: d.doc_id):
        for section in sections(doc.text, doc.kind):
            body = "\n\n".join(doc.text[a:b] for a, b in section.blocks).strip()
            if len(body) < MIN_BODY_CHARS:
                continue
            name = qualified_name(section.heading_path)
            # the innermost heading (``Class.method``), not the module path: users do not ask by module
            symbol = qualified_name(section.heading_path[-1:]) if section.heading_path else name
            words = identifier_words(symbol)
            if len(words.split()) >= 2 and words not in seen:
                seen.add(words)
                pairs.append(TrainingPair(words, body[:max_chars], "name"))
            found = _SENTENCE.match(body)
            sentence = " ".join(found.group(1).split()) if found else ""
            rest = body[found.end():].strip() if found else ""
            if 4 <= len(sentence.split()) <= 60 and len(rest) >= MIN_BODY_CHARS and sentence not in seen:
                seen.add(sentence)
                pairs.append(TrainingPair(sentence, f"{name}\n{words}\n\n{rest}"[:max_chars], "summary"))
    random.Random(seed).shuffle(pairs)
    return pairs if max_pairs is None else pairs[:max_pairs]


def fine_tune(base_model: Path, pairs: Sequence[TrainingPair], out: Path, *, epochs: int = 1,
              batch_size: int = 32, learning_rate: float = 2e-5, max_steps: int | None = None,
              max_seq_length: int = 128, seed: int = 0) -> dict[str, Any]:
    """Train ``base_model`` on ``pairs`` with MultipleNegativesRankingLoss and save it to ``out/model``.

    The loop is sentence-transformers' own ``old_fit`` with its ``NoDuplicatesDataLoader`` (no text twice in a
    batch, so no false in-batch negatives): the ``SentenceTransformerTrainer`` needs the ``datasets`` package,
    which Loopline does not install.

    Args:
        max_steps: Optimizer steps per epoch (None: one pass over the pairs).
        max_seq_length: Tokens per text while training (the saved model keeps the base model's limit).

    Returns:
        ``model_path``, ``pairs``, ``steps``, ``train_loss`` (mean of the last 10% of steps), ``first_loss``,
        ``seconds``.

    Raises:
        ValueError: fewer than two pairs (in-batch negatives need a batch).
    """
    if len(pairs) < 2:
        raise ValueError(f"fine-tuning needs at least 2 training pairs, got {len(pairs)}: is the corpus a "
                         "docstring corpus with documented symbols?")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.datasets.no_duplicates_dataloader import NoDuplicatesDataLoader
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.readers.input_example import InputExample

    started = time.perf_counter()
    random.seed(seed)
    torch.manual_seed(seed)
    model = SentenceTransformer(str(base_model), local_files_only=True)
    kept_length = model.max_seq_length
    model.max_seq_length = min(kept_length, max_seq_length)
    batch = min(batch_size, len(pairs))
    loader = NoDuplicatesDataLoader([InputExample(texts=[p.query, p.positive]) for p in pairs], batch_size=batch)
    steps = min(max_steps, len(loader)) if max_steps is not None else len(loader)
    total = max(1, steps * epochs)
    loss = MultipleNegativesRankingLoss(model)
    losses: list[float] = []

    def record(_module: Any, _inputs: Any, output: Any) -> None:
        losses.append(float(output.detach()))
        if len(losses) % max(1, total // 10) == 0 or len(losses) == total:
            log.info("Fine-tuning %s: step %d/%d, loss %.4f, %.0f s", base_model.name, len(losses), total,
                     losses[-1], time.perf_counter() - started)

    hook = loss.register_forward_hook(record)
    try:
        model.old_fit(train_objectives=[(loader, loss)], epochs=epochs, steps_per_epoch=steps,
                      warmup_steps=max(1, total // 10), optimizer_params={"lr": learning_rate},
                      show_progress_bar=False)
    finally:
        hook.remove()
    model.max_seq_length = kept_length
    model_path = out / "model"
    model.save(str(model_path))
    tail = losses[-max(1, len(losses) // 10):]
    seconds = time.perf_counter() - started
    log.info("Fine-tuned %s on %d pairs: %d steps, loss %.4f → %.4f, %.0f s → %s", base_model, len(pairs),
             len(losses), losses[0], sum(tail) / len(tail), seconds, model_path)
    return {"model_path": str(model_path), "pairs": len(pairs), "steps": len(losses),
            "train_loss": sum(tail) / len(tail), "first_loss": losses[0], "seconds": seconds}


def register_embedder(model_path: Path, name: str, *, params: dict[str, Any] | None = None,
                      metrics: dict[str, float] | None = None,
                      settings: LooplineSettings | None = None) -> dict[str, str]:
    """Log a sentence-transformers folder to MLflow (experiment ``rag_embedders``) and register it as a new
    version of model ``name``.

    Returns:
        ``name``, ``version``, ``run_id``, ``uri`` (``models:/<name>/<version>``, for ``embedding.model``).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipelines.core import tracking
    from pipelines.rag.embeddings import model_id

    client = tracking.client(settings)
    experiment = tracking.experiment_id(EXPERIMENT, settings)
    digest = model_id(model_path)
    with mlflow.start_run(experiment_id=experiment, run_name=f"{name} {digest}") as run:
        mlflow.log_params({**(params or {}), "model_id": digest})
        if metrics:
            mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(model_path), artifact_path="model")
        source = f"{run.info.artifact_uri}/model"
    try:
        client.create_registered_model(name, description="Sentence-transformers embedder for rag_index "
                                                          "(embedding.model: models:/<name>/<version>).")
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    version = client.create_model_version(name, source, run_id=run.info.run_id, tags={"model_id": digest})
    log.info("Registered embedder %s version %s (%s) from run %s", name, version.version, digest,
             run.info.run_id)
    return {"name": name, "version": str(version.version), "run_id": run.info.run_id,
            "uri": f"models:/{name}/{version.version}"}


def registered_model_path(uri: str, settings: LooplineSettings | None = None) -> Path:
    """The local folder of a registered embedder ``models:/<name>/<version>`` or ``models:/<name>@<alias>``.

    The version's artifacts are copied once to ``<data home>/models/embedders/<name>/<version>/``; later calls
    use that copy without asking MLflow again (an alias is looked up every time: it may have moved).

    Raises:
        EmbedderRegistryError: not a ``models:/`` URI, or MLflow has no such model, version or alias.
    """
    match = MODELS_URI.match(uri)
    if not match:
        raise EmbedderRegistryError(f"embedding.model {uri!r} is not models:/<name>/<version> or "
                                    "models:/<name>@<alias>")
    settings = settings or get_settings()
    name, version = match.group("name"), match.group("version")
    root = settings.path("models") / "embedders" / name
    if version and (root / version / "model").is_dir():
        return root / version / "model"
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipelines.core import tracking

    client = tracking.client(settings)
    try:
        found = (client.get_model_version(name, version) if version
                 else client.get_model_version_by_alias(name, match.group("alias")))
    except MlflowException as exc:
        raise EmbedderRegistryError(f"embedding.model {uri}: MLflow has no such registered model version "
                                    f"({exc.error_code}); register one with python -m pipelines.rag.finetune "
                                    "or fix the URI") from None
    target = root / str(found.version)
    if not (target / "model").is_dir():
        with publish_folder(target) as partial:  # a copy killed half-way never looks complete
            mlflow.artifacts.download_artifacts(artifact_uri=found.source, dst_path=str(partial))  # → partial/model
    return target / "model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", help="folder of the docstring corpus ('home:' = under the data home)")
    parser.add_argument("--name", default="docstrings-minilm", help="registered model name in MLflow")
    parser.add_argument("--base", default=None, help="base model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--max-pairs", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from pipelines.rag.corpus import load_corpus
    from pipelines.rag.embeddings import resolve_model_path

    settings = get_settings()
    corpus = load_corpus(settings.resolve(args.corpus), ["**/*.md"])
    pairs = training_pairs(corpus, max_pairs=args.max_pairs)
    base = resolve_model_path(args.base, settings)
    out = settings.path("models") / "embedders" / args.name / "training"
    result = fine_tune(base, pairs, out, epochs=args.epochs, batch_size=args.batch_size,
                       learning_rate=args.learning_rate)
    registered = register_embedder(Path(result["model_path"]), args.name, settings=settings,
                                   params={"base_model": str(base), "pairs": len(pairs), "epochs": args.epochs,
                                           "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                                           "loss": "MultipleNegativesRankingLoss"},
                                   metrics={"train_loss": result["train_loss"], "steps": result["steps"]})
    print(f"Registered {registered['uri']} (run {registered['run_id']}): set embedding.model to it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
