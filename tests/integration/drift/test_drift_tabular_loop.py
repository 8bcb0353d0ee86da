"""The churn drift check on simulated data: no champion, five normal days, an injected shift, a schema
mismatch, the guard rails, and the DAG through ``dag.test()`` emitting ``churn_retrain`` with its evidence.

The world (``support.churn_world``): 1,500 simulated customers, features published from the simulator's own truth,
a champion trained on 21 label days and registered in MLflow. Covariate drift starts on day 60.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pandas as pd
import pytest

from pipelines.core.home import DataHome
from support.churn_world import land, own_data_home, publish, train_champion

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
T0 = date(2026, 11, 1)
DRIFT_START = T0 + timedelta(days=60)
TRAIN_END = T0 + timedelta(days=46)
NORMAL_ENDS = [T0 + timedelta(days=n) for n in (47, 49, 51, 53, 55)]
DRIFTED_END = T0 + timedelta(days=64)


def at(day: date, hour: int = 3) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


def drift_config(**changes):
    import yaml

    from pipelines.drift.config import DriftCheckConfig

    raw = yaml.safe_load((REPO / "dags" / "configs" / "churn_drift_check.yaml").read_text())
    return DriftCheckConfig.model_validate({**raw, **changes})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data home of its own (MLflow, drift history, reports), the session's Airflow database."""
    home = tmp_path_factory.mktemp("drift-home")
    with own_data_home(home) as settings:
        land(settings, T0, 66, drift_start=DRIFT_START)
        publish(settings, [T0 + timedelta(days=n) for n in range(39, 66)])
        yield settings


@pytest.fixture(scope="module")
def champion(world):
    return train_champion(world, TRAIN_END, 21)


def history(settings):
    from pipelines.drift.history import open_history

    return open_history(settings)


def test_no_champion_yet_skips_with_a_clear_reason(world):
    from pipelines.drift import checks, steps

    with pytest.raises(checks.NothingToCheck, match=r"churn has no champion yet, so there is no reference to compare "
                                                   r"with: run churn_training first"):
        steps.check_drift(drift_config(), "no_champion", at(NORMAL_ENDS[0]), settings=world)
    row = history(world).check("churn", "no_champion")
    assert row["status"] == "skipped" and row["action"] == "none: nothing to check"
    assert history(world).emissions() == []


def test_five_normal_days_raise_no_alarm(world, champion):
    from pipelines.drift import steps

    config = drift_config()
    for end in NORMAL_ENDS:
        evidence = steps.check_drift(config, f"normal_{end}", at(end), settings=world)
        verdict = steps.judge_drift(config, evidence, settings=world)
        assert not verdict["drifted"], (end, verdict["reasons"])
        assert evidence["reference"]["version"] == champion["version"]
        assert evidence["reference"]["dataset_digest"] == champion["digest"]
        assert evidence["reference"]["training_set"] == champion["path"]
        assert evidence["current"]["rows"] > 7000
    normal = [r for r in history(world).checks("churn") if r["dag_run_id"].startswith("normal_")]
    assert {r["status"] for r in normal} == {"no_drift"}


def test_an_injected_shift_is_detected_reported_and_logged(world, champion):
    from pipelines.core import tracking
    from pipelines.drift import steps

    config = drift_config()
    evidence = steps.check_drift(config, "drifted", at(DRIFTED_END), settings=world)
    verdict = steps.judge_drift(config, evidence, settings=world)
    assert verdict["drifted"] and "data_drift" in verdict["signals"]
    assert evidence["drift_share"] >= 0.3 and "monthly_charges" in evidence["drifted_columns"]
    assert evidence["prediction_drifted"]
    report = DataHome(world).drift_report("churn", DRIFTED_END - timedelta(days=1))
    assert evidence["report_path"] == str(report) and report.stat().st_size > 10_000
    run = tracking.client(world).get_run(evidence["mlflow_run_id"])
    assert run.data.metrics["drift_share"] == evidence["drift_share"]
    assert run.data.params["champion_version"] == champion["version"]
    artifacts = [a.path for a in tracking.client(world).list_artifacts(run.info.run_id, "drift_report")]
    assert artifacts == [f"drift_report/{report.name}"]
    assert history(world).check("churn", "drifted")["status"] == "drift"

    again = steps.check_drift(config, "drifted", at(DRIFTED_END), settings=world)  # a re-run: same MLflow run
    assert again["mlflow_run_id"] == evidence["mlflow_run_id"]


def test_a_schema_mismatch_fails_clearly_and_triggers_nothing(world, champion):
    from pipelines.drift import steps
    from pipelines.drift.tabular import SchemaMismatch

    offline = DataHome(world).offline("churn", "customer_daily_features")
    day = T0 + timedelta(days=56)
    original = pd.read_parquet(offline / f"{day}.parquet")
    try:
        renamed = original.rename(columns={"monthly_charges": "monthly_charge"})
        renamed.to_parquet(offline / f"{day}.parquet", index=False)
        with pytest.raises(SchemaMismatch, match=r"the current window lacks monthly_charges\. Nothing was judged and "
                                                 r"nothing was triggered"):
            steps.check_drift(drift_config(window_days=1), "schema", at(day + timedelta(days=1)), settings=world)
    finally:
        original.to_parquet(offline / f"{day}.parquet", index=False)
    row = history(world).check("churn", "schema")
    assert row["status"] == "failed" and "monthly_charge" in row["verdict"]
    assert history(world).emissions() == []


def test_guard_rails_dedupe_and_cooldown(world, champion):
    from pipelines.drift import steps
    from pipelines.drift.targets import target_asset

    config = drift_config(guard_rails={"cooldown_hours": 24, "max_triggers_per_day": 5})
    target = target_asset(config)
    evidence = steps.check_drift(config, "guarded", at(DRIFTED_END), settings=world)
    verdict = steps.judge_drift(config, evidence, settings=world)
    extra = steps.emit_trigger(config, target, evidence, verdict, "guarded", at(DRIFTED_END), 1, settings=world)
    assert extra["action"] == "retrain" and extra["target_dag_id"] == "churn_training"
    assert extra["drifted_columns"] == evidence["drifted_columns"] and extra["report_uri"].startswith("file://")
    with pytest.raises(steps.NotEmitted, match="dedupe: this run \\(guarded\\) already emitted churn_retrain"):
        steps.emit_trigger(config, target, evidence, verdict, "guarded", at(DRIFTED_END), 2, settings=world)
    later = at(DRIFTED_END, 9)
    with pytest.raises(steps.NotEmitted, match="cooldown: churn_retrain was emitted 6.0 h earlier by guarded"):
        steps.emit_trigger(config, target, evidence, verdict, "later", later, 1, settings=world)
    assert [e["dag_run_id"] for e in history(world).emissions("churn_retrain")] == ["guarded"]
    assert history(world).check("churn", "guarded")["action"] == "emitted churn_retrain → churn_training"


def build(config):
    """The template's DAG, written to the metadata database as the dag-processor would (dag.test() needs it)."""
    if str(REPO / "dags") not in sys.path:
        sys.path.insert(0, str(REPO / "dags"))
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    from loopline_templates.drift_check import build_dag

    dag = build_dag(config)
    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    with create_session() as session:
        update_dag_parsing_results_in_db("dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None,
                                         set(), session)
    return dag


def asset_events(name: str) -> list:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.name == name)
        return [(e.source_dag_id, e.source_task_id, e.source_run_id, e.extra) for e in session.scalars(query)]


def states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_the_dag_emits_churn_retrain_once_with_the_evidence(airflow_db, world, champion):
    dag = build(drift_config(instance="dagtest"))  # its own instance: its own runs and history rows
    first = dag.test(logical_date=at(DRIFTED_END + timedelta(days=10)), run_conf={"window_end": str(DRIFTED_END)})
    assert first.state == "success" and states(first) == {"check_drift": "success", "judge_drift": "success",
                                                          "emit_retrain": "success"}
    events = [e for e in asset_events("churn_retrain") if e[0] == "dagtest_drift_check"]
    assert [(task, run) for _, task, run, _ in events] == [("emit_retrain", first.run_id)]
    extra = events[0][3]
    assert extra["drift_share"] >= 0.3 and "monthly_charges" in extra["drifted_columns"]
    assert extra["run_id"] == first.run_id and extra["mlflow_run_id"] and extra["report_uri"].endswith(".html")
    from pipelines.audit.records import events as audit_events

    [trigger] = [e for e in audit_events(datetime.now(UTC) - timedelta(hours=1), kinds=("drift_trigger",))
                 if e.source.get("run_id") == first.run_id]
    assert (trigger.subject, trigger.decision) == ("asset churn_retrain", "emitted")
    assert trigger.evidence["drift_share"] == extra["drift_share"] and trigger.reason == "; ".join(extra["reasons"])

    # Two hours later the same drift is still there: the daily cap skips the emit task, visibly.
    second = dag.test(logical_date=at(DRIFTED_END + timedelta(days=10), 5), run_conf={"window_end": str(DRIFTED_END)})
    assert second.state == "success" and states(second)["emit_retrain"] == "skipped"
    assert len([e for e in asset_events("churn_retrain") if e[0] == "dagtest_drift_check"]) == 1
    row = history(world).check("dagtest", second.run_id)
    assert row["action"].startswith("not emitted: cap: churn_retrain was emitted 1 time(s)")
