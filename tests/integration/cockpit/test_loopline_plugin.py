"""The Loopline plugin inside Airflow's own API app (no server process): registered through the plugin manager,
mounted at /loopline, behind Airflow's login, and showing MLflow's champion, the drift history with its
reports and the asset-triggered runs from Airflow's metadata database, with no secret on the page, and only
what the DAGs a user may read show.

The page reads a data home of its own (a real MLflow store with a registered model, a drift history, a report)
and the session's Airflow database, where Loopline's DAGs, an asset-triggered run and the event it consumed are
written. Users other than ``admin`` get tokens signed by the auth manager itself (``loopline_app.token_for``);
DAGs are hidden from them by Airflow's own team ownership of a DAG bundle (``loopline_app.dags_of_team``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from html import escape

import pytest
from integration.cockpit.loopline_app import airflow_client, bearer, dags_of_team, register_loopline_dags, token_for

from pipelines.core.home import DataHome

pytestmark = pytest.mark.integration

DB_PASSWORD = "Db-Pa55word-xyz"
MLFLOW_PASSWORD = "Mlfl0w-S3cret-abc"
RUN_ID = "asset_triggered__loopline_plugin_test"


@pytest.fixture(scope="module")
def home(tmp_path_factory, airflow_db):
    """A data home with a champion in MLflow, two drift checks (one with a report) and nothing else."""
    from mlflow.tracking import MlflowClient

    from pipelines.core import tracking
    from pipelines.core.settings import LooplineSettings
    from pipelines.drift.history import DriftHistory, history_path

    path = tmp_path_factory.mktemp("cockpit_home")
    settings = LooplineSettings(home=path)
    client: MlflowClient = tracking.client(settings)
    experiment = tracking.experiment_id("churn_training", settings)
    for n, (auc, iters) in enumerate([(0.71, 100), (0.74, 60)], start=1):
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "holdout_roc_auc", auc)
        client.log_param(run.info.run_id, "family", "gradient_boosting")
        client.log_param(run.info.run_id, "max_iter", iters)
        client.set_terminated(run.info.run_id)
        if n == 1:
            client.create_registered_model("churn")
        version = client.create_model_version("churn", f"runs:/{run.info.run_id}/model", run.info.run_id,
                                              tags={"family": "gradient_boosting"})
        tracking.promote("churn", version.version, f"test promotion {n}", settings)

    report = DataHome(settings).drift_report("churn", date(2026, 11, 28))
    report.parent.mkdir(parents=True)
    report.write_text("<html><body>Evidently report of 2026-11-28</body></html>")
    history = DriftHistory(history_path(settings))
    history.record_check(instance="churn", kind="tabular", dag_run_id="scheduled__2026-11-29T03:00:00+00:00",
                         run_after="2026-11-29T03:00:00+00:00", check_day="2026-11-28", status="checked",
                         drift_share=0.5, drifted_columns=["sessions_7d", "spend_30d"], report_uri=report.as_uri(),
                         verdict=f"DRIFT: data drift (store postgresql://loop:{DB_PASSWORD}@db:5432/x)",
                         action="emitted churn_retrain → churn_training")
    return settings


@pytest.fixture(scope="module")
def asset_run(airflow_db):
    """An asset-triggered run of churn_training and the churn_retrain event it consumed, in Airflow's ORM.

    Loopline's DAGs are written to the database first, as the dag-processor would: the page shows only what
    the DAGs the auth manager lets the user read show, and it knows only DAGs that are there.
    """
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType
    from sqlalchemy import delete

    extra = {"action": "retrain", "signals": ["data_drift"], "drift_share": 0.5,
             "reasons": ["data drift: 2 of 10 feature columns drifted (share 0.50 >= 0.30)"],
             "drifted_columns": ["sessions_7d", "spend_30d"],
             "report_uri": "file:///anywhere/reports/churn/drift/2026-11-28.html"}
    register_loopline_dags()
    now = datetime.now(UTC)
    with create_session() as session:
        asset = AssetModel(name="churn_retrain_plugin_test", uri="loopline://retrain/plugin-test")
        session.add(asset)
        session.flush()
        event = AssetEvent(asset_id=asset.id, extra=extra, source_dag_id="churn_drift_check",
                           source_run_id="scheduled__2026-11-29T03:00:00+00:00", source_task_id="emit_retrain")
        run = DagRun(dag_id="churn_training", run_id=RUN_ID, run_type=DagRunType.ASSET_TRIGGERED,
                     run_after=now, start_date=now, state=DagRunState.SUCCESS)
        run.consumed_asset_events.append(event)
        session.add_all([event, run])
    yield extra
    with create_session() as session:
        session.execute(delete(DagRun).where(DagRun.run_id == RUN_ID))
        session.execute(delete(AssetEvent).where(AssetEvent.source_task_id == "emit_retrain",
                                                 AssetEvent.source_run_id == "scheduled__2026-11-29T03:00:00+00:00"))
        session.execute(delete(AssetModel).where(AssetModel.name == "churn_retrain_plugin_test"))


@pytest.fixture(scope="module")
def api(home, asset_run):
    """Airflow's API app with its plugins, serving the test data home, with secrets in the environment."""
    with airflow_client(home.data_home, {
        "LOOPLINE_FEAST_REGISTRY_URL": f"postgresql+psycopg://feast:{DB_PASSWORD}@db:5432/feast",
        "MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD,
    }) as client:
        yield client


def test_the_plugin_is_registered_with_its_app_and_nav_entry(api):
    plugins = {p["name"]: p for p in api.get("/api/v2/plugins").json()["plugins"]}
    loopline = plugins["loopline"]
    assert [a["url_prefix"] for a in loopline["fastapi_apps"]] == ["/loopline"]
    (view,) = loopline["external_views"]
    assert (view["name"], view["href"], view["url_route"], view["destination"]) == \
        ("Loopline", "/loopline/", "loopline", "nav")
    assert api.get("/api/v2/plugins/importErrors").json()["import_errors"] == []


@pytest.mark.parametrize("path", ["/loopline/", "/loopline/api/summary",
                                  "/loopline/reports/churn/drift/2026-11-28.html"])
def test_without_login_nothing_is_shown(api, path):
    anonymous = {"Authorization": ""}
    answer = api.get(path, headers={**anonymous, "Accept": "application/json"})
    assert answer.status_code == 401 and answer.json() == {"detail": "Not authenticated"}
    forged = api.get(path, headers={"Authorization": "Bearer not.a.jwt", "Accept": "application/json"})
    assert forged.status_code == 401 and forged.json() == {"detail": "Invalid JWT token"}
    assert forged.headers["www-authenticate"] == "Bearer"
    browser = api.get(path, headers={**anonymous, "Accept": "text/html,application/xhtml+xml"})
    assert browser.status_code == 302
    assert browser.headers["location"].startswith("/auth/login?next=")
    assert "Evidently" not in browser.text and "champion" not in browser.text.lower()


def test_the_login_cookie_of_the_ui_opens_the_page(api):
    token = api.headers["Authorization"].removeprefix("Bearer ")
    answer = api.get("/loopline/", headers={"Authorization": ""}, cookies={"_token": token})
    assert answer.status_code == 200 and "<h1>Loopline</h1>" in answer.text


def test_the_page_shows_champion_drift_and_triggered_runs(api, asset_run):
    html = api.get("/loopline/").text
    assert 'data-champion-version="2"' in html and "max_iter=60" in html and "test promotion 2" in html
    assert '<tr data-version="1">' in html
    assert "sessions_7d, spend_30d" in html and 'href="/loopline/reports/churn/drift/2026-11-28.html"' in html
    assert f'data-run="{RUN_ID}"' in html and escape(asset_run["reasons"][0]) in html
    assert "churn_retrain_plugin_test" in html and "churn_drift_check" in html

    summary = api.get("/loopline/api/summary").json()
    churn = next(c for c in summary["use_cases"] if c["name"] == "churn")
    assert churn["models"][0]["champion"]["version"] == "2"
    assert churn["models"][0]["champion"]["metrics"] == {"holdout_roc_auc": 0.74}
    (run,) = [r for r in churn["runs"] if r["run_id"] == RUN_ID]
    assert run["events"][0]["source_dag_id"] == "churn_drift_check" and run["events"][0]["extra"] == asset_run


def test_reports_are_served_from_the_data_home_only(api, home):
    (home.data_home / "outside.html").write_text("not a report")
    answer = api.get("/loopline/reports/churn/drift/2026-11-28.html")
    assert answer.status_code == 200 and "Evidently report of 2026-11-28" in answer.text
    # Evidently's scripts run, in an opaque origin: no login cookie, no access to Airflow's API or this page.
    assert answer.headers["content-security-policy"] == "sandbox allow-scripts"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-type"].startswith("text/html")
    # Encoded, so that the client does not normalise the dots away before the route sees them.
    for bad in ["%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd", "..%2F..%2Fmlflow%2Fmlflow.db", "churn/drift/2026-11-27.html",
                "%2E%2E%2Foutside.html", "%2E%2E/outside.html"]:
        answer = api.get(f"/loopline/reports/{bad}")
        assert answer.status_code == 404 and "under the data home's reports/" in answer.json()["detail"]


def test_no_secret_reaches_the_page(api):
    html = api.get("/loopline/").text
    data = api.get("/loopline/api/summary").text
    for secret in (DB_PASSWORD, MLFLOW_PASSWORD):
        assert secret not in html and secret not in data
    assert "postgresql://loop:***@db:5432/x" in html  # the verdict that carried a URL is shown, scrubbed


# --- the Ask tab's routes ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def answer_trace(home):
    """A trace in the docs assistant's experiment and its query-log row of today, as an answer leaves them (the
    test data home has no docs index, prompt or model: no real answer is generated here)."""
    import mlflow
    from mlflow.entities.trace_location import MlflowExperimentLocation

    from pipelines.assistant import query_log
    from pipelines.core import tracking

    experiment = tracking.experiment_id("docs_assistant", home)
    with mlflow.start_span(name="answer", trace_destination=MlflowExperimentLocation(experiment)) as root:
        root.set_inputs({"question": "How do I roll the index back?"})
        root.set_outputs({"answer": "Run the rollback command.", "refused": False})
    query_log.write_row("docs", datetime.now(UTC).date(), root.trace_id, {
        "query": "How do I roll the index back?", "answer": "Run the rollback command.", "assistant": "docs_assistant",
        "origin": "user", "trace_id": root.trace_id, "refused": False, "tokens_in": 700, "tokens_out": 20,
        "latency_ms": 5500.0}, home)
    return root.trace_id


@pytest.mark.parametrize("path, body", [("/loopline/api/ask", {"question": "How do I roll the index back?"}),
                                        ("/loopline/api/feedback", {"trace_id": "tr-x", "up": True})])
def test_asking_and_feedback_need_a_login(api, path, body):
    for accept in ("application/json", "text/html"):  # a POST is never redirected to the login page
        answer = api.post(path, json=body, headers={"Authorization": "", "Accept": accept})
        assert answer.status_code == 401 and answer.json() == {"detail": "Not authenticated"}
    forged = api.post(path, json=body, headers={"Authorization": "Bearer not.a.jwt"})
    assert forged.status_code == 401


def test_a_bad_question_is_refused_with_its_message(api, home):
    folder = home.data_home / "query_log"
    before = sorted(folder.rglob("*.jsonl")) if folder.exists() else []
    empty = api.post("/loopline/api/ask", json={"question": "   "})
    assert empty.status_code == 400
    assert empty.json() == {"detail": "the question is empty: ask something about the documentation"}
    long = api.post("/loopline/api/ask", json={"question": "why " * 600})
    assert long.status_code == 400 and long.json()["detail"].startswith("the question is 2,399 characters long; "
                                                                         "the limit is 2,000")
    assert api.post("/loopline/api/ask", json={}).status_code == 422
    # JSON only: what a form of another site could send is not read.
    assert api.post("/loopline/api/ask", data={"question": "hi"}).status_code == 422
    assert (sorted(folder.rglob("*.jsonl")) if folder.exists() else []) == before  # nothing was logged


def test_an_assistant_that_is_not_ready_says_what_to_do(api):
    answer = api.post("/loopline/api/ask", json={"question": "How do I roll the index back?"})
    assert answer.status_code == 503
    detail = answer.json()["detail"]
    assert detail.startswith("prompt docs_assistant_answer@champion is not in the MLflow prompt registry")
    assert "seed-prompt" in detail


def test_a_spent_daily_budget_refuses_with_429(api, home):
    from pipelines.assistant import query_log

    today = datetime.now(UTC).date()
    row = query_log.write_row("docs", today, "budget-test", {"assistant": "docs_assistant", "query": "x",
                                                             "tokens_in": 200_000, "tokens_out": 0}, home)
    try:
        answer = api.post("/loopline/api/ask", json={"question": "How do I roll the index back?"})
    finally:
        row.unlink()
    assert answer.status_code == 429
    assert answer.json()["detail"].startswith(f"assistant docs_assistant used 200,000 tokens on {today.isoformat()} "
                                              "(UTC), its daily budget is 200,000")


def test_feedback_is_recorded_on_the_trace_as_the_logged_in_user(api, answer_trace):
    import mlflow

    answer = api.post("/loopline/api/feedback",
                      json={"trace_id": answer_trace, "up": True, "comment": "right page; mail me at ann@example.com"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["trace_id"] == answer_trace and answer.json()["source_id"] == "admin"
    (thumbs,) = [a for a in mlflow.get_trace(answer_trace, flush=True).info.assessments if a.name == "user_thumbs"]
    assert thumbs.value is True and thumbs.source.source_id == "admin" and thumbs.source.source_type == "HUMAN"
    assert thumbs.rationale == "right page; mail me at [EMAIL]"


def test_feedback_on_an_unknown_trace_or_with_a_bad_thumb_is_refused(api):
    unknown = api.post("/loopline/api/feedback", json={"trace_id": "tr-0000", "up": False})
    assert unknown.status_code == 400 and unknown.json()["detail"].startswith("no trace 'tr-0000' in the MLflow store")
    assert api.post("/loopline/api/feedback", json={"trace_id": "tr-0000", "up": "maybe"}).status_code == 422
    assert api.post("/loopline/api/feedback", json={"up": True}).status_code == 422


def test_the_page_counts_todays_answers_and_thumbs(api, answer_trace):
    api.post("/loopline/api/feedback", json={"trace_id": answer_trace, "up": False})  # the newest thumb counts
    api.post("/loopline/api/feedback", json={"trace_id": answer_trace, "up": True})
    docs = next(c for c in api.get("/loopline/api/summary").json()["use_cases"] if c["name"] == "docs")
    assert docs["errors"] == []
    (assistant,) = docs["assistants"]
    today = assistant["days"][0]
    assert today["day"] == datetime.now(UTC).date().isoformat()
    assert (today["answers"], today["tokens_in"], today["tokens_out"], today["latency_p50_ms"]) == (1, 700, 20, 5500.0)
    assert (today["thumbs_up"], today["thumbs_down"]) == (1, 0)
    assert all(day["answers"] == 0 for day in assistant["days"][1:])
    html = api.get("/loopline/").text
    assert 'data-assistant="docs_assistant"' in html and f'<tr data-day="{today["day"]}">' in html
    assert 'id="ask-form"' in html


# --- what a user who may read only some DAGs sees ---------------------------------------------------------------

# The team that owns the hidden DAGs: the whole docs use case, and churn's drift check.
HIDDEN = ["churn_drift_check", "docs_assistant", "docs_assistant_fallback", "docs_drift_check", "docs_llm_eval",
          "docs_rag_index"]


@pytest.fixture()
def viewer(api):
    """A viewer outside the team that owns HIDDEN; the DAGs go back to their bundle afterwards."""
    with dags_of_team("loopline-platform", HIDDEN):
        yield bearer(token_for("vic", "viewer"))


def test_a_viewer_sees_only_what_the_dags_they_may_read_show(api, viewer, asset_run):
    summary = api.get("/loopline/api/summary", headers=viewer).json()
    by_name = {c["name"]: c for c in summary["use_cases"]}
    assert sorted(by_name) == ["assistant", "churn"]  # docs: not one readable DAG, so not there at all
    churn = by_name["churn"]
    assert sorted(d["dag_id"] for d in churn["dags"]) == ["churn_features", "churn_training"]
    assert churn["drift"] == []  # the drift check's verdicts, verdict text and report link are gone
    assert [m["dag_id"] for m in churn["models"]] == ["churn_training"]
    (run,) = [r for r in churn["runs"] if r["run_id"] == RUN_ID]  # a run of a DAG they may read: there
    assert run["events"][0]["extra"] == asset_run
    assert summary["ask"] == {"dag_id": "docs_assistant", "allowed": False}

    html = api.get("/loopline/", headers=viewer).text
    # No drift, index or assistant section (each belongs to a hidden DAG), and no link to a hidden DAG's report.
    for hidden in ("Drift verdicts", "Index versions", "Assistant answers per day", "LLM evaluations",
                   'href="/loopline/reports/', "postgresql://loop:"):
        assert hidden not in html, hidden
    assert 'id="ask-refused"' in html and 'id="ask-form"' not in html
    assert 'data-use-case="docs"' not in html and 'data-use-case="churn"' in html

    # The admin, in no team, still sees everything.
    everything = api.get("/loopline/api/summary").json()
    assert {"churn", "docs", "assistant"} <= {c["name"] for c in everything["use_cases"]}
    assert everything["ask"]["allowed"] is True


def test_a_viewer_may_not_ask_give_feedback_or_open_a_hidden_dags_report(api, viewer, answer_trace):
    import mlflow

    asked = api.post("/loopline/api/ask", json={"question": "How do I roll the index back?"}, headers=viewer)
    assert asked.status_code == 403
    assert asked.json()["detail"] == ("user vic may not read the DAG docs_assistant, so may not ask its assistant or "
                                      "give feedback on its answers: ask an Airflow admin for read access to "
                                      "docs_assistant")
    before = [a.assessment_id for a in mlflow.get_trace(answer_trace, flush=True).info.assessments]
    thumbs = api.post("/loopline/api/feedback", json={"trace_id": answer_trace, "up": False}, headers=viewer)
    assert thumbs.status_code == 403
    assert [a.assessment_id for a in mlflow.get_trace(answer_trace, flush=True).info.assessments] == before

    report = api.get("/loopline/reports/churn/drift/2026-11-28.html", headers=viewer)
    assert report.status_code == 403 and "Evidently" not in report.text
    assert report.json()["detail"].startswith("user vic may not read churn_drift_check, which writes this report")
    # Whether a report of a hidden DAG exists is not told either.
    assert api.get("/loopline/reports/churn/drift/1999-01-01.html", headers=viewer).status_code == 403


def test_a_report_folder_no_pipeline_writes_is_not_served(api, home):
    stray = DataHome(home).reports / "scratch" / "drift" / "notes.html"
    stray.parent.mkdir(parents=True)
    stray.write_text("<html>nobody's report</html>")
    answer = api.get("/loopline/reports/scratch/drift/notes.html")
    assert answer.status_code == 404 and "under the data home's reports/" in answer.json()["detail"]
