"""Airflow DAG of the pipeline configured in dags/configs/docs_rag_index.yaml (same name)."""

from loopline_templates.common import config_for
from loopline_templates.rag_index import build_dag

dag = build_dag(config_for(__file__, "rag_index"))
