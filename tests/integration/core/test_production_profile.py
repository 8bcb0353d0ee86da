"""The production profile for real: Postgres, Redis, two Celery workers, an MLflow server.

This machine's PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) carry the stack; the test
starts MLflow's server, Airflow's api-server, scheduler, dag-processor, triggerer and two Celery
workers (pipelines.core.production.production_stack), runs churn_features for several days, churn_training
(train → register → promote → score), then every other pipeline as production starts it (the docs
index on its schedule, the LoRA tuning on the index's Asset, both drift checks on theirs), all through
the scheduler and the workers; checks what landed in Postgres, Redis and MLflow, that a user whose role
may read only ``churn_features`` sees none of the other pipelines' models, drift checks or indexes on
the Loopline page, and stops everything. Its databases (prefix
``loopline_ci``), its Redis databases (12, 13) and its Postgres role are removed afterwards.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.core.airflow_runtime import wait_for_dags
from pipelines.core.settings import LooplineSettings
from pipelines.demo import simulator
from support import services
from support.page_summary import dag_ids_in

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.production]

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ROLE = "loopline_ci"  # also the prefix of the test's databases
REDIS_DB = 12  # Celery's broker; Feast's online store takes 13
FEATURE_DAYS = 5
CUSTOMERS = 2000
TODAY = datetime.now(UTC).date()


def _services_up() -> str | None:
    try:
        import psycopg
        import redis

        psycopg.connect(POSTGRES_ADMIN, connect_timeout=3).close()
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A production stack with a password-bearing Postgres role, and its finished runs."""
    down = _services_up()
    if down:
        pytest.fail(f"the production profile needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 "
                    f"(.ci/run starts them): {down}")
    import psycopg
    import redis

    from pipelines.core.production import drop_databases, production_stack
    from pipelines.demo.run import trigger_day

    role = ROLE
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        password = services.fresh_login_role(admin, role)
    settings = LooplineSettings(
        home=tmp_path_factory.mktemp("production") / "home", profile="production",
        postgres_url=f"postgresql://{role}:{password}@127.0.0.1:5432", database_prefix=role,
        redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}", mlflow_port=5071, airflow_port=8283,
    )
    for db in (REDIS_DB, REDIS_DB + 1):
        redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
    drop_databases(settings)

    landing = settings.path("landing", "churn")
    feature_days = [TODAY - timedelta(days=n) for n in range(FEATURE_DAYS, 0, -1)]
    simulator.land_days(landing, TODAY - timedelta(days=30), 30, n_customers=CUSTOMERS)
    try:
        with production_stack(settings, log=lambda message: None) as running:
            client = running.client
            wait_for_dags(client, ["churn_features", "churn_training"])
            assert client.import_errors() == []
            feature_runs = [trigger_day(client, ds) for ds in feature_days]
            client.unpause("churn_features")
            states = [client.wait_for_run("churn_features", run_id, timeout_s=900) for run_id in feature_runs]
            client.unpause("churn_training")
            # Unpausing makes the scheduler create the latest weekly run, whose window may need a feature day
            # older than the FEATURE_DAYS built here (on a Thursday it needs last Friday's): it would wait for
            # it and, with max_active_runs=1, hold this test's own run in the queue. It is set failed.
            client.set_scheduled_runs_aside("churn_training")
            training_run = f"production_test__{TODAY.isoformat()}"
            client.trigger("churn_training", logical_date=datetime.now(UTC).isoformat(), run_id=training_run,
                           conf={"window_end": TODAY.isoformat(), "window_days": FEATURE_DAYS + 1})
            training_state = client.wait_for_run("churn_training", training_run, timeout_s=900)
            scored = client.xcom("churn_training", training_run, "score_batch") if training_state == "success" else None
            other_runs = run_the_other_pipelines(client)
            task_instances = [ti for run_id in feature_runs for ti in client.task_instances("churn_features", run_id)]
            task_instances += client.task_instances("churn_training", training_run)
            for dag_id, run_id in other_runs:
                task_instances += client.task_instances(dag_id, run_id)
            yield {"settings": settings, "password": password, "feature_days": feature_days, "states": states,
                   "training_state": training_state, "task_instances": task_instances, "scored": scored,
                   "other_runs": {dag_id: client.dag_run(dag_id, run_id)["state"] for dag_id, run_id in other_runs},
                   "workers": running.worker_names, "client": client, "running": running}
    finally:
        drop_databases(settings)
        for db in (REDIS_DB, REDIS_DB + 1):
            redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f"drop role if exists {role}")


def _runs_of(client, dag_id: str, run_type: str, timeout_s: float = 300) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns?run_type={run_type}&limit=20")["dag_runs"]
        if runs:
            return [run["dag_run_id"] for run in runs]
        time.sleep(2)
    raise TimeoutError(f"no {run_type} run of {dag_id} within {timeout_s:.0f} s")


def run_the_other_pipelines(client) -> list[tuple[str, str]]:
    """Every other pipeline, started the way it is in production: by its schedule or by an Asset.

    Unpausing a DAG makes the scheduler create its latest interval's run (catchup is off): the docs index
    builds, its ``docs_index`` Asset starts the LoRA tuning, and both drift checks run on their cron runs
    (the docs check after the index exists).
    """
    client.unpause("assistant_lora_tune")
    for dag_id in ("docs_rag_index", "churn_drift_check"):
        client.unpause(dag_id)
    runs = [(dag_id, _runs_of(client, dag_id, "scheduled")[0]) for dag_id in ("docs_rag_index", "churn_drift_check")]
    for dag_id, run_id in runs:
        client.wait_for_run(dag_id, run_id, timeout_s=900)
    runs.append(("assistant_lora_tune", _runs_of(client, "assistant_lora_tune", "asset_triggered")[0]))
    client.unpause("docs_drift_check")
    runs.append(("docs_drift_check", _runs_of(client, "docs_drift_check", "scheduled")[0]))
    for dag_id, run_id in runs[2:]:
        client.wait_for_run(dag_id, run_id, timeout_s=900)
    return runs


def test_every_pipeline_succeeds_through_celery_workers(stack):
    assert stack["states"] == ["success"] * FEATURE_DAYS
    assert stack["training_state"] == "success"
    assert stack["other_runs"] == {"docs_rag_index": "success", "churn_drift_check": "success",
                                   "assistant_lora_tune": "success", "docs_drift_check": "success"}
    assert {ti["state"] for ti in stack["task_instances"]} <= {"success", "skipped"}


def test_tasks_are_spread_over_both_workers(stack):
    ran_on = {ti["hostname"] for ti in stack["task_instances"] if ti["state"] == "success"}
    assert ran_on == set(stack["workers"]), ran_on


def test_mart_is_in_postgres_and_matches_the_simulator(stack):
    import psycopg

    settings: LooplineSettings = stack["settings"]
    last = stack["feature_days"][-1]
    expected = simulator.expected_customer_daily_features(settings.path("landing", "churn"), last)
    with psycopg.connect(settings.database_url("warehouse")) as connection:
        days = connection.execute(
            "select ds, count(*) from churn.customer_daily_features group by ds order by ds").fetchall()
        sessions = connection.execute(
            "select customer_id, sessions_30d from churn.customer_daily_features where ds = %s order by customer_id",
            (last,)).fetchall()
    assert [row[0] for row in days] == stack["feature_days"]
    assert sessions == list(zip(expected["customer_id"].tolist(), expected["sessions_30d"].tolist()))


def test_online_features_are_served_from_redis_with_the_registry_in_postgres(stack):
    import psycopg
    import redis

    from pipelines.features.feast_store import read_online

    settings: LooplineSettings = stack["settings"]
    with psycopg.connect(settings.database_url("feast")) as connection:
        views = connection.execute("select feature_view_name from feature_views where project_id = 'churn'").fetchall()
        services = connection.execute(
            "select feature_service_name from feature_services where project_id = 'churn'").fetchall()
    assert sorted(row[0] for row in views) == ["customer_daily_activity", "customer_daily_profile"]
    assert [row[0] for row in services] == ["churn_model_v1"]
    assert redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB + 1).dbsize() > 0
    last = stack["feature_days"][-1]
    expected = simulator.expected_customer_daily_features(settings.path("landing", "churn"), last).head(50)
    online = read_online("churn", "churn_model_v1", "customer_id", expected["customer_id"].tolist(), settings=settings)
    online = online.sort_values("customer_id").reset_index(drop=True)
    assert online["sessions_30d"].tolist() == expected["sessions_30d"].tolist()
    assert online["spend_30d"].round(6).tolist() == expected["spend_30d"].round(6).tolist()


def test_model_is_registered_on_the_mlflow_server_and_scores(stack):
    from mlflow import MlflowClient

    from pipelines.core.settings import using_mlflow_client_environment

    settings: LooplineSettings = stack["settings"]
    client = MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)
    with using_mlflow_client_environment(settings):  # the server's basic auth: Loopline's credentials
        _check_registered_models(client, stack)


def _check_registered_models(client, stack) -> None:
    import pandas as pd

    champion = client.get_model_version_by_alias("churn", "champion")
    run = client.get_run(champion.run_id)
    assert run.data.metrics["holdout_roc_auc"] > 0.6
    assert {a.path for a in client.list_artifacts(champion.run_id, "evaluation")} >= {"evaluation/roc_curve.png"}
    # The LoRA run's, same server: lora_tune hands a registered adapter to the answer gate as @challenger
    adapter = client.get_model_version_by_alias("assistant_adapter", "challenger")
    assert adapter.run_id and client.get_run(adapter.run_id).data.metrics
    scored = stack["scored"]
    assert scored["model_version"] == str(champion.version)
    predictions = pd.read_parquet(scored["path"])
    assert len(predictions) == scored["rows"] > 0 and predictions["churn_probability"].between(0, 1).all()


def test_no_password_in_any_task_log(stack):
    settings: LooplineSettings = stack["settings"]
    logs = [path for path in (settings.airflow_home / "logs").rglob("*") if path.is_file()]
    assert len(logs) >= len(stack["task_instances"]) // 2  # the task logs are really there
    leaking = [str(path) for path in logs if stack["password"] in path.read_text(errors="replace")]
    assert leaking == []


def test_api_requires_authentication(stack):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{stack['client'].base_url}/api/v2/dags", timeout=10)
    assert refused.value.code == 401
    # MLflow's REST API too (basic auth): without credentials, nothing is read.
    mlflow_url = f"{stack['settings'].mlflow_uri}/api/2.0/mlflow/registered-models/search"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(mlflow_url, timeout=10)
    assert refused.value.code == 401


def test_a_user_who_may_read_one_dag_sees_none_of_the_other_pipelines_data(stack):
    """FAB per-DAG permissions on the page with real data: models, drift verdicts, index versions exist (the
    admin sees them), and a role that may read only churn_features sees none of them."""
    from pipelines.core.airflow_runtime import AirflowClient
    from pipelines.core.production import add_user, ensure_role

    settings, admin = stack["running"].settings, stack["client"]
    password = "reader-" + secrets.token_hex(8)
    ensure_role("features_only", ["churn_features"], settings)
    add_user("features_reader", "features_only", password, settings)
    whole = admin.get("/loopline/api/summary")
    cases = whole["use_cases"]
    assert [m for case in cases for m in case["models"]] and [d for case in cases for d in case["drift"]]
    assert [i for case in cases for i in case["indexes"]]
    assert {"churn_training", "docs_rag_index", "churn_drift_check"} <= dag_ids_in(whole)
    reader = AirflowClient(admin.base_url, password, username="features_reader")
    assert reader.dag_ids() == ["churn_features"]
    seen = reader.get("/loopline/api/summary")
    assert dag_ids_in(seen) == {"churn_features"}
    assert [(case["models"], case["drift"], case["indexes"]) for case in seen["use_cases"]] == [([], [], [])]
