"""Airflow DAG of the pipeline configured in dags/configs/churn_training.yaml (same name)."""

from loopline_templates.common import config_for
from loopline_templates.training import build_dag

dag = build_dag(config_for(__file__, "training"))
