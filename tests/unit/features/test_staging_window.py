"""The staging window comes from the dbt project (var loopline_lookback_days), not from Loopline's code."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.features.dbt import DbtProjectError, staging_window_days

pytestmark = pytest.mark.unit

CHURN = Path(__file__).resolve().parents[3] / "dags" / "dbt" / "churn"


def project(tmp_path: Path, text: str) -> Path:
    (tmp_path / "dbt_project.yml").write_text(text)
    return tmp_path


def test_churn_names_its_30_day_window():
    assert staging_window_days(CHURN) == 30


def test_the_var_is_read_at_top_level_or_under_the_project_name(tmp_path):
    assert staging_window_days(project(tmp_path, "name: p\nvars:\n  loopline_lookback_days: 45\n")) == 45
    assert staging_window_days(project(tmp_path, "name: p\nvars:\n  p:\n    loopline_lookback_days: 400\n")) == 400


def test_a_project_without_the_var_stages_30_days(tmp_path, caplog):
    assert staging_window_days(project(tmp_path, "name: p\nvars:\n  ds: ''\n")) == 30
    assert "sets no vars.loopline_lookback_days" in caplog.text


@pytest.mark.parametrize("value", ["0", "'45'", "7.5", "true"])
def test_a_window_that_is_not_a_whole_number_of_days_is_named(tmp_path, value):
    with pytest.raises(DbtProjectError, match=r"dbt_project.yml: vars.loopline_lookback_days must be a whole number "
                                              r"of days, 1 or more .*got"):
        staging_window_days(project(tmp_path, f"name: p\nvars:\n  loopline_lookback_days: {value}\n"))


def test_a_missing_project_is_named(tmp_path):
    with pytest.raises(DbtProjectError, match=r"no dbt project at .*: expected .*dbt_project.yml"):
        staging_window_days(tmp_path / "nowhere")
