"""Airflow DAG of the pipeline configured in dags/configs/churn_features.yaml (same name)."""

from loopline_templates.common import config_for
from loopline_templates.features import build_dag

dag = build_dag(config_for(__file__, "features"))
