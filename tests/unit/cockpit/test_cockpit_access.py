"""Who sees what on the Loopline page, and what an untrusted Asset-event extra can do to it, without a web
server: :func:`pipelines.cockpit.gather` filtered by the DAGs a user may read, report paths and their owners,
hostile extras bounded and explained, and the HTML that shows them escaped."""

from __future__ import annotations

import json
import math
import shutil
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

DAY = date(2026, 11, 28)


@pytest.fixture()
def settings(tmp_path):
    return LooplineSettings(home=tmp_path / "home")


@pytest.fixture()
def populated(settings):
    """A drift check per use case (churn with a report) and a catalogued docs index version."""
    from pipelines.rag.versions import VersionCatalog, catalog_path
    from pipelines.templates import load_named

    history = DriftHistory(history_path(settings))
    report = DataHome(settings).drift_report("churn", DAY)
    for instance, kind in (("churn", "tabular"), ("docs", "rag")):
        history.record_check(instance=instance, kind=kind, dag_run_id=f"{instance}-r1",
                             run_after="2026-11-29T03:00:00+00:00", check_day=str(DAY), status="checked",
                             drift_share=0.5, drifted_columns=["a"], report_uri=report.as_uri(),
                             verdict="DRIFT: data drift")
    catalog = VersionCatalog(catalog_path(load_named("docs_rag_index"), settings))
    catalog.put("docs_v1", status="building", model_id="minilm", evaluation={"k": 5, "metrics": {}}, gate="passed")
    return settings


def _by_name(summary: dict) -> dict:
    return {c["name"]: c for c in summary["use_cases"]}


def test_every_section_is_filtered_by_the_dags_a_user_may_read(populated):
    allowed = {"churn_training", "docs_rag_index"}
    cases = _by_name(cockpit.gather(populated, allowed_dag_ids=allowed, environ={}, today=DAY))
    assert sorted(cases) == ["churn", "docs"]  # assistant: its only DAG (assistant_lora_tune) is not readable
    churn, docs = cases["churn"], cases["docs"]
    assert [d["dag_id"] for d in churn["dags"]] == ["churn_training"]
    assert [m["dag_id"] for m in churn["models"]] == ["churn_training"]
    assert churn["drift"] == []  # churn_drift_check is not readable: its verdicts and report link are not there
    assert [d["dag_id"] for d in docs["dags"]] == ["docs_rag_index"]
    assert [i["dag_id"] for i in docs["indexes"]] == ["docs_rag_index"] and docs["indexes"][0]["versions"]
    assert docs["drift"] == [] and docs["assistants"] == []
    everything = set().union(*(set(d["dag_id"] for d in c["dags"]) for c in cases.values()))
    assert everything <= allowed


def test_a_user_who_may_read_the_drift_check_sees_its_verdicts_and_report(populated):
    cases = _by_name(cockpit.gather(populated, allowed_dag_ids={"churn_drift_check", "docs_assistant"}, environ={},
                                    today=DAY))
    assert sorted(cases) == ["churn", "docs"]
    (drift,) = cases["churn"]["drift"]
    assert drift["dag_id"] == "churn_drift_check" and drift["checks"][0]["report"] == "churn/drift/2026-11-28.html"
    assert cases["churn"]["models"] == []  # churn_training is not readable
    assert [a["dag_id"] for a in cases["docs"]["assistants"]] == ["docs_assistant"]
    assert cases["docs"]["indexes"] == [] and cases["docs"]["drift"] == []


def test_a_user_who_may_read_nothing_sees_no_use_case(populated):
    summary = cockpit.gather(populated, allowed_dag_ids=set(), environ={}, today=DAY)
    assert summary["use_cases"] == []
    assert "churn" not in render(summary) and "DRIFT" not in render(summary)


def test_config_errors_go_only_to_who_may_read_every_dag(tmp_path, settings):
    configs = tmp_path / "configs"
    configs.mkdir()
    for name in ("churn_training", "churn_drift_check"):
        shutil.copy(REPO_ROOT / "dags" / "configs" / f"{name}.yaml", configs)
    (configs / "broken.yaml").write_text("template: training\ninstance: secret_project\n")
    everyone = {"churn_training", "churn_drift_check"}
    full = cockpit.gather(settings, config_dir=configs, allowed_dag_ids=everyone, environ={}, today=DAY)
    assert len(full["errors"]) == 1 and full["errors"][0].startswith("broken.yaml:")
    part = cockpit.gather(settings, config_dir=configs, allowed_dag_ids={"churn_training"}, environ={}, today=DAY)
    assert part["errors"] == [] and "secret_project" not in json.dumps(part)


# --- report paths ---------------------------------------------------------------------------------------

def test_a_report_link_must_lie_inside_reports(settings, tmp_path):
    reports = DataHome(settings).reports
    report = DataHome(settings).drift_report("churn", DAY)
    report.parent.mkdir(parents=True)
    report.write_text("<html></html>")
    outside = tmp_path / "outside.html"
    outside.write_text("secret")
    (report.parent / "leak.html").symlink_to(outside)
    spaced = report.parent / "a report.html"
    assert cockpit.report_link(report.as_uri(), settings) == "churn/drift/2026-11-28.html"
    assert cockpit.report_link(str(report), settings) == "churn/drift/2026-11-28.html"
    assert cockpit.report_link(spaced.as_uri(), settings) == "churn/drift/a report.html"  # %20 decoded
    assert cockpit.report_link(f"file://localhost{report}", settings) == "churn/drift/2026-11-28.html"
    for bad in ("../../etc/passwd", "churn/drift/2026-11-28.html", "/etc/passwd", "file:///etc/passwd",
                f"{reports}/../outside.html", f"{reports.as_uri()}/%2e%2e/%2e%2e/outside.html",
                str(report.parent / "leak.html"), f"file://evil.example{report}", "http://x/reports/a.html",
                "javascript:alert(1)", f"{report}\x00.html", str(report.with_suffix(".json")), str(reports),
                "/" + "a" * 5000 + ".html", 42, ["/x"], {"path": str(report)}, None, ""):
        assert cockpit.report_link(bad, settings) is None, bad


def test_a_report_belongs_to_the_dags_that_write_its_folder():
    cases, _ = cockpit.use_cases()
    assert cockpit.report_owners("churn/drift/2026-11-28.html", cases) == {"churn_drift_check"}
    assert cockpit.report_owners("docs/drift/2026-11-28-corpus.html", cases) == {"docs_drift_check"}
    assert cockpit.report_owners("churn/validation/2026-11-28.html", cases) == {"churn_features"}
    for unknown in ("churn/other/x.html", "nobody/drift/x.html", "x.html", "churn/drift", ""):
        assert cockpit.report_owners(unknown, cases) == set(), unknown


# --- untrusted extras ---------------------------------------------------------------------------------------

def test_a_well_formed_extra_comes_through_unchanged():
    extra = {"action": "retrain", "signals": ["data_drift"], "drift_share": 0.5, "reasons": ["data drift: 2 of 10"],
             "drifted_columns": ["a", "b"], "report_uri": "file:///h/reports/churn/drift/x.html",
             "reference": {"model": "churn", "version": 3}}
    assert cockpit.bounded(extra) == extra


def test_a_hostile_extra_is_bounded():
    huge = cockpit.bounded({"reasons": ["A" * 1_000_000]})["reasons"][0]
    assert len(huge) < cockpit.MAX_EXTRA_TEXT + 50 and huge.endswith("(1,000,000 characters, cut)")
    many = cockpit.bounded(list(range(1000)))
    assert len(many) == cockpit.MAX_EXTRA_ITEMS + 1 and many[-1] == "… 950 more items not shown"
    keys = cockpit.bounded({f"k{n}": n for n in range(60)})
    assert len(keys) == cockpit.MAX_EXTRA_ITEMS + 1 and keys["…"] == "10 more keys not shown"
    deep: object = "bottom"
    for _ in range(50):
        deep = [deep]
    text = json.dumps(cockpit.bounded(deep))
    assert "bottom" not in text and "nested deeper than 4 levels" in text
    assert cockpit.bounded({"share": math.nan, "x": math.inf}) == {"share": "nan", "x": "inf"}


def test_an_unparseable_extra_is_reported_not_raised():
    assert cockpit.read_extra('{"a": 1}') == ({"a": 1}, None)
    assert cockpit.read_extra(None) == ({}, None)
    for raw in ("[" * 100_000 + "]" * 100_000, "1" * 5000, "not json"):
        value, why = cockpit.read_extra(raw)
        assert value == {} and why.startswith("extra is not readable JSON (")


@pytest.mark.parametrize("extra, reason", [
    ([1, "<b>"], 'an Asset event whose extra is not a mapping: [1, "<b>"]'),
    ("just text", 'an Asset event whose extra is not a mapping: "just text"'),
    (7, "an Asset event whose extra is not a mapping: 7"),
    (None, "an Asset event without details"),
    ({"drift_share": "abc"}, 'drift share "abc" (not a number)'),
    ({"drift_share": True}, "drift share true (not a number)"),
    ({"drift_share": "nan"}, 'drift share "nan" (not a number)'),
    ({"reasons": 42}, "42"),
    ({"reasons": "one reason"}, "one reason"),
    ({"signals": {"a": 1}}, 'signals: {"a": 1}'),
    ({"drifted_columns": "sessions_7d"}, "drifted: sessions_7d"),
    ({"reasons": [{"nested": ["junk"]}, None]}, '{"nested": ["junk"]}; null'),
    ({"version": ["v"], "mode": {"m": 1}}, "index version ['v'] went live after {'m': 1}"),
])
def test_a_trigger_reason_survives_any_extra(extra, reason):
    assert cockpit.trigger_reason(extra) == reason


def test_a_trigger_reason_is_one_bounded_line():
    reason = cockpit.trigger_reason({"reasons": ["x" * 900] * 50})
    assert len(reason) < cockpit.MAX_REASON_CHARS + 50 and reason.endswith("characters, cut)")


def test_json_ready_turns_non_finite_numbers_into_text():
    assert cockpit.json_ready({"a": [math.nan, 1.5, {"b": -math.inf}], "c": "x"}) == \
        {"a": ["nan", 1.5, {"b": "-inf"}], "c": "x"}


def test_the_page_escapes_hostile_events_and_links_only_checked_reports():
    events = [
        {"asset": "<b>asset</b>", "source_dag_id": "churn_drift_check", "source_run_id": "r<1>",
         "extra": {"report_uri": '"><script>alert(1)</script>'}, "reason": "<img src=x onerror=alert(2)>",
         "report": None},
        {"asset": "churn_retrain", "source_dag_id": None, "source_run_id": None, "extra": ["not", "a", "dict"],
         "reason": "an Asset event whose extra is not a mapping", "report": None},
        {"asset": "churn_retrain", "source_dag_id": None, "source_run_id": None,
         "extra": {"report_uri": "file:///h/reports/churn/drift/x.html"}, "reason": "ok",
         "report": "churn/drift/x.html"},
    ]
    run = {"dag_id": "churn_training", "run_id": "asset_triggered__x", "state": "success", "start_date": None,
           "events": events}
    summary = {"data_home": "/h", "mlflow": "sqlite:///x", "errors": [], "use_cases": [{
        "name": "churn", "dags": [], "models": [], "drift": [], "indexes": [], "assistants": [], "runs": [run],
        "errors": []}]}
    html = render(summary, base="/loopline")
    assert html.count("<script>") == 1 and "<img src=x" not in html and "<b>asset</b>" not in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html and "&lt;b&gt;asset&lt;/b&gt;" in html
    assert ('report (not linked): <code>&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;</code>' in html)
    assert html.count('href="/loopline/reports/') == 1 and 'href="/loopline/reports/churn/drift/x.html"' in html
