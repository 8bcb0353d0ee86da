"""Airflow DAG of the pipeline configured in dags/configs/docs_rag_index.yaml (same name)."""

from loopline_templates.registry import dag_for_config_file

dag = dag_for_config_file(__file__)
