"""The template loader: good configs build DAGs, bad ones fail naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.features.config import FeaturesConfig
from pipelines.templates import PipelineConfigError, load_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
CHURN = REPO / "dags" / "configs" / "churn_features.yaml"


def write(tmp_path: Path, text: str, name: str = "case.yaml") -> Path:
    path = tmp_path / "configs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_default_churn_config_is_valid():
    config = load_config(CHURN)
    assert isinstance(config, FeaturesConfig)
    assert config.dag_id == "churn_features"
    assert config.start_date.tzinfo is not None
    assert set(config.landing.tables) == {"customers", "events", "labels"}


def test_unknown_template_names_the_template(tmp_path):
    path = write(tmp_path, CHURN.read_text().replace("template: features", "template: forecasting"))
    with pytest.raises(PipelineConfigError,
                       match=r"configs/case.yaml: template: unknown template 'forecasting'; known: features"):
        load_config(path)


def test_missing_field_names_the_field(tmp_path):
    text = "\n".join(line for line in CHURN.read_text().splitlines() if not line.startswith("  mart:"))
    with pytest.raises(PipelineConfigError, match=r"case.yaml: dbt.mart: field required"):
        load_config(write(tmp_path, text))


def test_wrong_type_names_the_field_and_value(tmp_path):
    path = write(tmp_path, CHURN.read_text().replace("retries: 1", "retries: many"))
    with pytest.raises(PipelineConfigError, match=r"retries: .*valid integer.*'many'"):
        load_config(path)


def test_bad_yaml_names_the_line(tmp_path):
    with pytest.raises(PipelineConfigError, match=r"case.yaml: not valid YAML at line \d+, column \d+"):
        load_config(write(tmp_path, "template: features\ninstance: [oops\n"))


def test_unknown_field_is_refused(tmp_path):
    path = write(tmp_path, CHURN.read_text().replace("owner: ml-platform", "owner: ml-platform\nownr: typo"))
    with pytest.raises(PipelineConfigError, match=r"ownr: unknown field"):
        load_config(path)


def test_partition_pattern_needs_the_day(tmp_path):
    path = write(tmp_path, CHURN.read_text().replace('partition: "ds={ds}"', 'partition: "daily"'))
    with pytest.raises(PipelineConfigError, match=r"landing.partition: .*must contain \{ds\}"):
        load_config(path)


def test_not_a_mapping(tmp_path):
    with pytest.raises(PipelineConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_a_dag_file_of_another_template_is_refused(tmp_path):
    with pytest.raises(PipelineConfigError, match=r"case.yaml: template: this file is a 'features' config, but its "
                                                  r"DAG file builds a 'training' DAG; fix one of the two"):
        load_config(write(tmp_path, CHURN.read_text()), template="training")
