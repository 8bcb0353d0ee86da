"""The Loopline page's data and HTML without a web server: drift verdicts, index versions, trigger reasons,
and that no secret of the environment reaches the page."""

from __future__ import annotations

import sys
from datetime import date

import pytest

from pipelines import cockpit
from pipelines.core.home import DataHome
from pipelines.core.settings import REPO_ROOT, LooplineSettings
from pipelines.drift.history import DriftHistory, history_path

pytestmark = pytest.mark.unit

sys.path.insert(0, str(REPO_ROOT / "plugins"))
from loopline_ui.page import render  # noqa: E402

PASSWORD = "Sup3r-Secret_pw"


def test_redact_uri_drops_passwords_and_queries():
    assert cockpit.redact_uri(f"postgresql+psycopg2://loop:{PASSWORD}@db:5432/airflow?sslmode=require") == \
        "postgresql+psycopg2://loop:***@db:5432/airflow"
    assert cockpit.redact_uri("sqlite:////data/mlflow/mlflow.db") == "sqlite:////data/mlflow/mlflow.db"
    assert cockpit.redact_uri("https://token123@mlflow.example/x") == "https://***@mlflow.example/x"
    assert cockpit.redact_uri(None) is None


def test_secrets_come_from_urls_and_secret_named_variables(tmp_path):
    settings = LooplineSettings(home=tmp_path, mlflow_tracking_uri=f"http://ml:{PASSWORD}@mlflow:5000",
                                feast_redis_connection="redis:6379,password=RedisPw99")
    environ = {"LOOPLINE_WEAVIATE_API_KEY": "wv-key-1234", "SOME_DB": "postgresql://u:DbPass77@h/x",
               "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "FLAG_TOKEN": "1"}
    found = cockpit.secrets_of(settings, environ)
    assert {PASSWORD, "RedisPw99", "wv-key-1234", "DbPass77"} <= found
    assert "False" not in found and "1" not in found  # not secrets, and too short to scrub safely
    scrubbed = cockpit.scrub({"a": [f"error talking to http://ml:{PASSWORD}@mlflow:5000"], "b": 3}, found)
    assert scrubbed == {"a": ["error talking to http://ml:***@mlflow:5000"], "b": 3}


def test_trigger_reason_reads_the_drift_evidence():
    extra = {"signals": ["data_drift"], "reasons": ["data drift: 5 of 10 feature columns drifted (share 0.50 >= 0.30)"],
             "drift_share": 0.5, "drifted_columns": ["sessions_7d", "spend_30d"]}
    assert cockpit.trigger_reason(extra) == ("data drift: 5 of 10 feature columns drifted (share 0.50 >= 0.30); "
                                             "drifted: sessions_7d, spend_30d")
    assert cockpit.trigger_reason({"drift_share": 0.41}) == "drift share 0.41"
    assert cockpit.trigger_reason({}) == "an Asset event without details"
    assert cockpit.trigger_reason({"who": "ops"}) == '{"who": "ops"}'
    assert cockpit.trigger_reason({"version": "docs_v2", "mode": "full", "model_id": "all-MiniLM-L6-v2@12a6"}) == \
        "index version docs_v2 went live after a full build with all-MiniLM-L6-v2@12a6"


def test_drift_verdicts_newest_first_with_report_links(tmp_path):
    settings = LooplineSettings(home=tmp_path)
    assert cockpit.drift_verdicts("churn", settings) == []
    assert not history_path(settings).exists()  # reading creates nothing
    history = DriftHistory(history_path(settings))
    report = DataHome(settings).drift_report("churn", date(2026, 11, 20))
    for n, day in enumerate(["2026-11-19", "2026-11-20"]):
        history.record_check(instance="churn", kind="tabular", dag_run_id=f"r{n}", run_after=f"{day}T03:00:00+00:00",
                             check_day=day, status="checked", drift_share=0.1 + n * 0.4, drifted_columns=["a"] * n,
                             report_uri=report.as_uri() if n else "file:///elsewhere/x.html",
                             verdict="DRIFT: data drift" if n else "no drift past the policy",
                             reference={"model": "churn"})
    history.record_check(instance="docs", kind="rag", dag_run_id="d1", run_after="2026-11-20T04:00:00+00:00",
                         status="checked")
    rows = cockpit.drift_verdicts("churn", settings)
    assert [r["dag_run_id"] for r in rows] == ["r1", "r0"]
    assert rows[0]["report"] == "churn/drift/2026-11-20.html"
    assert rows[1]["report"] is None  # outside the data home's reports/: not linked
    assert "reference" not in rows[0]


def test_index_versions_from_the_catalog(tmp_path):
    from pipelines.rag.versions import VersionCatalog, catalog_path
    from pipelines.templates import load_config

    settings = LooplineSettings(home=tmp_path)
    config = load_config(REPO_ROOT / "dags" / "configs" / "docs_rag_index.yaml")
    assert cockpit.index_versions(config, settings) == []
    catalog = VersionCatalog(catalog_path(config, settings))
    for n in (1, 2, 10):
        catalog.put(f"docs_v{n}", status="rejected" if n == 10 else "building", model_id="minilm",
                    chunker={"size_chars": 1000, "overlap_chars": 150, "digest": "abc"},
                    evaluation={"k": 5, "metrics": {"vector": {"hit_rate": 0.8 + n / 100, "mrr": 0.6}}},
                    gate="hit@5 dropped" if n == 10 else "passed")
    catalog.mark_live("docs_v1", None, "first build")
    catalog.mark_live("docs_v2", "docs_v1", "run r2: full rebuild passed the gate")
    rows = cockpit.index_versions(config, settings)
    assert [(r["version"], r["status"], r["live"]) for r in rows] == \
        [("docs_v10", "rejected", False), ("docs_v2", "live", True), ("docs_v1", "previous", False)]
    assert rows[1]["metrics"]["vector"]["hit_rate"] == pytest.approx(0.82) and rows[1]["k"] == 5
    assert rows[1]["chunker"] == {"size_chars": 1000, "overlap_chars": 150}
    assert rows[1]["went_live_because"] == "run r2: full rebuild passed the gate"


def test_use_cases_group_the_configs_by_instance():
    cases, errors = cockpit.use_cases()
    assert errors == []
    by_name = {c.name: sorted(c.dag_ids) for c in cases}
    assert [c.name for c in cases] == ["docs", "churn", "assistant"]  # the most pipelines first
    assert by_name["churn"] == ["churn_drift_check", "churn_features", "churn_training"]
    assert by_name["docs"] == ["docs_assistant", "docs_assistant_fallback", "docs_drift_check", "docs_llm_eval",
                               "docs_rag_index"]
    assert by_name["assistant"] == ["assistant_lora_tune"]


def test_a_bad_config_is_reported_not_fatal(tmp_path):
    (tmp_path / "broken.yaml").write_text("template: training\ninstance: x\n")
    cases, errors = cockpit.use_cases(tmp_path)
    assert cases == [] and len(errors) == 1 and errors[0].startswith("broken.yaml:")


def _summary() -> dict:
    version = {"version": "3", "run_id": "abc", "created": "2026-11-29 06:00 UTC", "champion": True,
               "promotion": "promoted", "reason": "roc_auc 0.7400 beats champion v2's 0.7300 by +0.0100",
               "family": "gradient_boosting", "metrics": {"holdout_roc_auc": 0.74, "holdout_pr_auc": 0.5},
               "params": {"family": "gradient_boosting", "max_iter": "60"}}
    run = {"dag_id": "churn_training", "run_id": "asset_triggered__2026-11-29T03:00:05", "state": "success",
           "queued_at": None, "start_date": "2026-11-29 03:00:07 UTC", "end_date": None,
           "events": [{"asset": "churn_retrain", "uri": "loopline://retrain/churn",
                       "source_dag_id": "churn_drift_check",
                       "source_run_id": "scheduled__2026-11-29T03:00:00+00:00", "source_task_id": "emit_retrain",
                       "timestamp": "2026-11-29 03:00:05 UTC",
                       "extra": {"report_uri": "file:///h/reports/churn/drift/2026-11-28.html"},
                       "reason": "data drift: 5 of 10 feature columns drifted <script>"}]}
    return {"data_home": "/h", "mlflow": "sqlite:////h/mlflow/mlflow.db", "errors": [], "use_cases": [{
        "name": "churn", "dags": [{"dag_id": "churn_training", "template": "training", "description": ""}],
        "models": [{"name": "churn", "template": "training", "dag_id": "churn_training", "champion": version,
                    "versions": [version, {**version, "version": "2", "champion": False, "promotion": "rejected"}]}],
        "drift": [{"dag_id": "churn_drift_check", "kind": "tabular", "checks": [{
            "dag_run_id": "r1", "check_day": "2026-11-28", "status": "checked", "drift_share": 0.5,
            "drifted_columns": ["sessions_7d"], "verdict": "DRIFT: data drift", "action": "emitted churn_retrain",
            "report": "churn/drift/2026-11-28.html"}]}],
        "indexes": [], "runs": [run], "errors": []}]}


def test_the_page_shows_champion_verdicts_and_reasons_escaped():
    html = render(_summary(), base="/loopline", user="admin")
    assert 'data-champion-version="3"' in html and "max_iter=60" in html
    assert '<tr data-version="2">' in html and ">rejected<" in html
    assert 'href="/loopline/reports/churn/drift/2026-11-28.html"' in html
    assert 'href="/dags/churn_training/runs/asset_triggered__2026-11-29T03%3A00%3A05"' in html
    assert "drifted &lt;script&gt;" in html and "drifted <script>" not in html
    assert html.count("<script>") == 1  # the Ask tab's own inline script, nothing injected
    assert "No run was started" not in html


def test_the_page_draws_its_charts_on_the_server_with_the_values_and_the_threshold():
    summary = _summary()
    case = summary["use_cases"][0]
    case["drift"][0]["threshold"] = 0.3
    case["drift"][0]["checks"].insert(0, {**case["drift"][0]["checks"][0], "dag_run_id": "r2",
                                          "check_day": "2026-11-29", "drift_share": 0.1})
    case["indexes"] = [{"dag_id": "docs_rag_index", "backend": "lancedb", "lineage": None, "versions": [
        {"version": "docs_v2", "status": "live", "live": True, "model_id": "m", "chunker": {}, "k": 4,
         "metrics": {"vector": {"hit_rate": 0.9, "mrr": 0.8}}},
        {"version": "docs_v1", "status": "retired", "live": False, "model_id": "m", "chunker": {}, "k": 4,
         "metrics": {"vector": {"hit_rate": 0.7, "mrr": 0.6}}}]}]
    case["assistants"] = [{"dag_id": "docs_assistant", "experiment": "e", "max_tokens_per_day": 50_000, "days": [
        {"day": "2026-11-29", "answers": 4, "refused": 1, "checks": 0, "tokens_in": 900, "tokens_out": 100,
         "tokens": 1000, "latency_p50_ms": 4000.0, "latency_p95_ms": 9000.0, "budget_share": 0.02,
         "thumbs_up": 3, "thumbs_down": 1},
        {"day": "2026-11-28", "answers": 0, "refused": 0, "checks": 0, "tokens_in": 0, "tokens_out": 0,
         "tokens": 0, "latency_p50_ms": None, "latency_p95_ms": None, "budget_share": 0.0,
         "thumbs_up": 0, "thumbs_down": 0}]}]
    html = render(summary, base="/loopline", user="admin")

    def chart(chart_id: str) -> str:
        start = html.index(f'data-chart="{chart_id}"')
        return html[start:html.index("</svg>", start)]

    model = chart("model-churn")  # oldest version first; the champion's point filled
    assert model.index('data-x="v2"') < model.index('data-x="v3"') and 'data-value="0.74"' in model
    drift = chart("drift-churn_drift_check")
    assert 'class="threshold" data-value="0.3"' in drift
    assert drift.index('data-x="2026-11-28" data-value="0.5"') < drift.index('data-x="2026-11-29" data-value="0.1"')
    index = chart("index-docs_rag_index")
    assert 'data-x="docs_v1" data-value="0.7"' in index and 'data-x="docs_v2" data-value="0.9"' in index
    assert 'data-series="p95" data-x="11-29" data-value="9000.0"' in chart("latency-docs_assistant")
    assert 'class="threshold" data-value="50000"' in chart("tokens-docs_assistant")
    feedback = chart("feedback-docs_assistant")
    assert 'data-x="11-29" data-value="0.75"' in feedback and 'data-x="11-28"' not in feedback  # no thumbs: no point
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched from elsewhere


def test_gather_never_shows_a_secret(tmp_path):
    """A password in the MLflow URI (unreachable server: its error message names the URI) and in the
    environment: the page data carries neither."""
    settings = LooplineSettings(home=tmp_path, mlflow_tracking_uri=f"postgresql://mlflow:{PASSWORD}@127.0.0.1:9/mlflow",
                                feast_registry_url=f"postgresql+psycopg://feast:{PASSWORD}x@db/feast")
    environ = {"LOOPLINE_WEAVIATE_API_KEY": "wv-key-1234"}
    summary = cockpit.gather(settings, environ=environ, allowed_dag_ids={"churn_training"})
    text = repr(summary) + render(summary)
    assert PASSWORD not in text and "wv-key-1234" not in text
    assert summary["mlflow"] == "postgresql://mlflow:***@127.0.0.1:9/mlflow"
    churn = next(c for c in summary["use_cases"] if c["name"] == "churn")
    assert any(e.startswith("model churn:") for e in churn["errors"])  # the failure is said, the secret is not


def test_the_plugin_loads_alone_and_imports_nothing_heavy():
    """Every Airflow process loads the plugins folder: only loopline_plugin.py is a plugin file (.airflowignore
    keeps the package's modules from being imported as top-level modules), and it imports no web framework,
    MLflow or pandas until the page is asked for."""
    import subprocess

    code = (
        "import sys; sys.path.insert(0, 'plugins');"
        "from airflow._shared.plugins_manager import _load_plugins_from_plugin_directory as load;"
        "plugins, errors = load('plugins');"
        "print([p.name for p in plugins], errors,"
        " sorted(m for m in ('mlflow', 'pandas', 'fastapi', 'pipelines.cockpit', 'app', 'page') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "['loopline'] {} []"
