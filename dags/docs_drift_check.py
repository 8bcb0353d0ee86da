"""Airflow DAG of the pipeline configured in dags/configs/docs_drift_check.yaml (same name)."""

from loopline_templates.common import config_for
from loopline_templates.drift_check import build_dag

dag = build_dag(config_for(__file__, "drift_check"))
