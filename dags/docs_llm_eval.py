"""Airflow DAG of the pipeline configured in dags/configs/docs_llm_eval.yaml (same name)."""

from loopline_templates.common import config_for
from loopline_templates.llm_eval import build_dag

dag = build_dag(config_for(__file__, "llm_eval"))
