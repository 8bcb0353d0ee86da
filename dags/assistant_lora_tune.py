"""Airflow DAG of the pipeline configured in dags/configs/assistant_lora_tune.yaml (same name)."""

from loopline_templates.common import config_for
from loopline_templates.lora_tune import build_dag

dag = build_dag(config_for(__file__, "lora_tune"))
