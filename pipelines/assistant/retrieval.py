"""The index the assistant reads: its rag_index config, its live version, and search within one version.

Reads the index only through the RAG package's public functions (``pipelines.rag.steps.search``, the store
interface) and :func:`pipelines.templates.load_config`; the template imports :func:`index_config` at parse
time (YAML and pydantic only) to schedule on the index's Asset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import NotRetryable

if TYPE_CHECKING:
    from pipelines.assistant.config import AssistantConfig
    from pipelines.core.settings import LooplineSettings
    from pipelines.rag.config import RagIndexConfig

log = logging.getLogger(__name__)


class IndexUnavailable(NotRetryable):
    """The index the assistant reads has no live version."""


class AssistantConfigError(NotRetryable):
    """The assistant's config names something that does not exist (its rag_index config)."""


def index_config(config: AssistantConfig) -> RagIndexConfig:
    """The rag_index config the assistant reads: a name in ``dags/configs/`` or a YAML path.

    Raises:
        AssistantConfigError: the file is missing, invalid, or not a rag_index config.
    """
    from pipelines.templates import PipelineConfigError, config_path, load_config

    name = config.index
    path = config_path(name)
    if not path.exists():
        raise AssistantConfigError(f"the assistant's index {name!r} has no config at {path}: fix `index` in "
                                   f"dags/configs/{config.dag_id}.yaml")
    try:
        rag = load_config(path)
    except PipelineConfigError as exc:
        raise AssistantConfigError(f"the assistant's index config {path} is invalid: {exc}") from None
    if rag.template != "rag_index":
        raise AssistantConfigError(f"the assistant's index {name!r} is a {rag.template!r} config, not a rag_index one")
    return rag


# --- retrieval --------------------------------------------------------------------------------------------------

def live_version(rag: RagIndexConfig, settings: LooplineSettings) -> str:
    """The live version of the index.

    Raises:
        IndexUnavailable: the index has none yet.
    """
    from pipelines.rag.stores import open_store

    with open_store(rag.index.backend, rag.instance, settings) as store:
        live = store.live_version()
    if live is None:
        raise IndexUnavailable(f"index {rag.instance} has no live version: run the {rag.dag_id} DAG first")
    return live


@dataclass(frozen=True)
class Retrieved:
    hits: list[Any]
    similarity: float | None
    version: str


def retrieve(question: str, config: AssistantConfig, rag: RagIndexConfig, settings: LooplineSettings) -> Retrieved:
    """The ``k`` best chunks of the live version and the best cosine similarity, from one version.

    The version is read before and after the searches; when a switch happened in between, the searches
    run again, so hits and version always belong together.
    """
    from pipelines.rag.plans import IndexStateError
    from pipelines.rag.steps import search

    spec = config.retrieval
    for _ in range(3):
        before = live_version(rag, settings)
        try:
            hits = search(rag, question, spec.k, spec.mode, settings)
            vector = hits if spec.mode == "vector" else search(rag, question, 1, "vector", settings)
        except IndexStateError as exc:
            raise IndexUnavailable(str(exc)) from None
        if live_version(rag, settings) == before:
            similarity = max((float(h.score) for h in vector), default=None)
            return Retrieved(list(hits), similarity, before)
        log.info("Index %s switched from %s during the search: searching again", rag.instance, before)
    raise IndexUnavailable(f"index {rag.instance} kept switching versions during the search: ask again")
