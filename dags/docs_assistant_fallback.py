"""Airflow DAG of the pipeline configured in dags/configs/docs_assistant_fallback.yaml (same name)."""

from loopline_templates.assistant_fallback import build_dag
from loopline_templates.common import config_for

dag = build_dag(config_for(__file__, "assistant_fallback"))
