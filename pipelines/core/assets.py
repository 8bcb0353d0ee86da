"""Every Airflow Asset Loopline emits or schedules on, declared once: its name and URI per instance.

A template uses the same :class:`AssetRef` as an outlet where it is produced and as a schedule where it is
consumed, so the two can never disagree. Airflow is imported only by :meth:`AssetRef.asset`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AssetRef:
    """An Airflow Asset by name and URI."""

    name: str
    uri: str

    def asset(self) -> Any:
        """The ``airflow.sdk.Asset`` for an outlet or a schedule."""
        from airflow.sdk import Asset

        return Asset(name=self.name, uri=self.uri)


def features_online(instance: str) -> AssetRef:
    """A day of features of ``instance`` reached the online store (emitted by ``<instance>_features``)."""
    return AssetRef(f"{instance}_features", f"loopline://features/{instance}")


def retrain_request(instance: str, name: str | None = None) -> AssetRef:
    """A drift check asks ``<instance>_training`` to retrain (``name`` overrides ``<instance>_retrain``)."""
    return AssetRef(name or f"{instance}_retrain", f"loopline://retrain/{instance}")


def champion_model(instance: str, model_name: str) -> AssetRef:
    """``<instance>_training`` evaluated a version of ``model_name`` for promotion."""
    return AssetRef(f"{instance}_champion", f"loopline://models/{model_name}")


def rag_index(instance: str) -> AssetRef:
    """Readers of the ``instance`` index see a new live version (emitted by ``<instance>_rag_index``)."""
    return AssetRef(f"{instance}_index", f"loopline://rag/{instance}")


def reindex_request(instance: str) -> AssetRef:
    """A drift check asks ``<instance>_rag_index`` to re-index."""
    return AssetRef(f"{instance}_reindex", f"loopline://reindex/{instance}")


def assistant_fallback(instance: str) -> AssetRef:
    """``<instance>_llm_eval`` found yesterday's live answers regressed: ``<instance>_assistant_fallback`` (the DAG
    of the same name) moves the champion back to the last version that passed the gate."""
    return AssetRef(f"{instance}_assistant_fallback", f"loopline://assistant-fallback/{instance}")


def prompt_candidate(instance: str) -> AssetRef:
    """``<instance>_assistant`` registered a new prompt version from its file and gave it ``@challenger``:
    ``<instance>_llm_eval`` judges it."""
    return AssetRef(f"{instance}_prompt_candidate", f"loopline://prompt-candidate/{instance}")


def adapter_candidate(model_name: str) -> AssetRef:
    """A ``lora_tune`` DAG registered a new version of the adapter ``model_name`` and gave it ``@challenger``: the
    llm_eval DAG of the assistant whose ``generator.adapter`` names it judges it. Keyed by the registered model's
    name, the one thing the tuning and the answering configs both name."""
    return AssetRef(f"{model_name}_candidate", f"loopline://adapter-candidate/{model_name}")
