"""The OpenLineage extractor of Loopline's ``@task`` steps: the datasets a step declared, as OpenLineage datasets.

Airflow's OpenLineage provider has no extractor of its own for ``@task`` functions; without one it keeps only
hook-lineage assets whose scheme a provider can translate (``file``, ``s3``, …). Loopline's datasets also live in
MLflow, Feast, dbt and the index, so this extractor reads what the step declared and translates every URI itself:
``scheme://authority/path`` → namespace ``scheme://authority``, name ``path``.
Registered by ``AIRFLOW__OPENLINEAGE__EXTRACTORS`` (:func:`pipelines.core.airflow_runtime.airflow_environment`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.providers.openlineage.extractors.base import BaseExtractor, OperatorLineage


def dataset(uri: str):
    """The OpenLineage dataset of a Loopline URI."""
    from openlineage.client.event_v2 import Dataset

    parts = urlsplit(uri)
    return Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=parts.path or "/")


class LooplineTaskExtractor(BaseExtractor):
    """Inputs and outputs of a ``@task`` step, from what it declared (:func:`pipelines.lineage.declare`)."""

    @classmethod
    def get_operator_classnames(cls) -> list[str]:
        return ["_PythonDecoratedOperator"]

    def _execute_extraction(self) -> OperatorLineage | None:
        return OperatorLineage()  # the START event: nothing is known before the step runs

    def extract_on_complete(self, task_instance) -> OperatorLineage | None:
        from pipelines.lineage import declared

        inputs, outputs = declared(task_instance)
        return OperatorLineage(inputs=[dataset(uri) for uri in inputs], outputs=[dataset(uri) for uri in outputs])

    def extract_on_failure(self, task_instance) -> OperatorLineage | None:
        return self.extract_on_complete(task_instance)
