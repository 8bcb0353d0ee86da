"""Helpers the integration tests share to look into Airflow's metadata database after ``dag.test()``."""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def load_dags(folder: Path = REPO / "dags") -> dict:
    """The DAGs of a folder, parsed the way the dag-processor does; fails on any import error."""
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=str(folder), bundle_path=folder)
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags


def xcom(run, task_id: str) -> Any:
    """The ``return_value`` XCom of one task of a finished run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(select(XComModel.value).where(
            XComModel.dag_id == run.dag_id, XComModel.run_id == run.run_id, XComModel.task_id == task_id,
            XComModel.key == "return_value"))
    return json.loads(value) if isinstance(value, str) else value


def build_and_register(config):
    """The template's DAG for a config that has no file in dags/, written to the metadata database as the
    dag-processor would: ``dag.test()`` only runs DAGs it finds serialized there.
    """
    import sys

    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    if str(REPO / "dags") not in sys.path:
        sys.path.insert(0, str(REPO / "dags"))
    from pipelines.templates import TEMPLATES

    dag = import_module(TEMPLATES[config.template].builder_module).build_dag(config)
    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    with create_session() as session:
        update_dag_parsing_results_in_db("dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None,
                                         set(), session=session)
    return dag
