"""What an adapter learned from: the corpus digest and the docs index version live when its dataset was built.

Continual tuning: the docs index's Asset starts a re-tune, and the registered version records which index
version and corpus it learned from (:data:`CORPUS_DIGEST_TAG`, :data:`INDEX_VERSION_TAG`), on the MLflow run and
on the registered version alike. The index version is read from the ``rag_index`` instance whose Asset the
lora_tune instance schedules on (its version catalog under the data home: no store is opened); ``none`` when
there is no such instance or no live version yet.
"""

from __future__ import annotations

import logging
from typing import Any

from pipelines.core.assets import AssetRef
from pipelines.core.settings import LooplineSettings

log = logging.getLogger(__name__)

CORPUS_DIGEST_TAG = "loopline.lineage.corpus_digest"
INDEX_VERSION_TAG = "loopline.lineage.index_version"
INDEX_TAG = "loopline.lineage.index"
NO_INDEX = "none"


def live_index_version(ref: AssetRef | None, settings: LooplineSettings,
                       config_dir: Any = None) -> tuple[str | None, str | None]:
    """``(rag_index dag_id, live version)`` of the index whose Asset is ``ref``; ``(None, None)`` when none.

    Args:
        ref: The lora_tune instance's ``index_asset_ref`` (None: it schedules on no index).
        config_dir: Where the pipeline YAMLs are (default ``dags/configs/``).
    """
    if ref is None:
        return None, None
    from pipelines.rag import versions
    from pipelines.templates import CONFIG_DIR, config_files, load_config, read_yaml

    for path in config_files(config_dir or CONFIG_DIR):
        try:
            if read_yaml(path).get("template") != "rag_index":
                continue
            config = load_config(path, "rag_index")
        except Exception as exc:  # another pipeline's broken YAML is no reason to fail a tuning run
            log.warning("lineage: skipped %s (%s)", path.name, str(exc).splitlines()[0])
            continue
        if config.index_asset.uri != ref.uri:
            continue
        live = versions.VersionCatalog(versions.catalog_path(config, settings)).live_versions()
        return config.dag_id, (live[0] if live else None)
    return None, None


def lineage_tags(corpus_digest: str, index: str | None, index_version: str | None) -> dict[str, str]:
    """The lineage tags of a tuning run and of the version registered from it."""
    return {CORPUS_DIGEST_TAG: corpus_digest, INDEX_TAG: index or NO_INDEX,
            INDEX_VERSION_TAG: index_version or NO_INDEX}
