"""Faults at the Loopline page's door: forged and expired logins, a user without the page, report paths that try
to leave ``reports/``, and Asset events with hostile extras.

Everything is real: Airflow's API app with the plugin, in-process (``integration.cockpit.loopline_app``), the
configured SimpleAuthManager and its JWT key, files and symlinks on disk, and Asset events written into the
session's Airflow metadata database. Each test names the fault, where it is injected and the invariant checked.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from html import escape

import pytest
from integration.cockpit.loopline_app import airflow_client, bearer, register_loopline_dags, token_for

from pipelines.core.home import DataHome

pytestmark = pytest.mark.faults

SECRET = "TOP-SECRET-not-a-report"
REPORT_TEXT = "Evidently report of 2026-11-28"
HOSTILE_RUN = "asset_triggered__hostile_extras"
HOSTILE_ASSET = "loopline_hostile_extras"


@pytest.fixture(scope="module")
def home(tmp_path_factory, airflow_db):
    """A data home with one real report, secrets beside and outside it, and symlinks inside ``reports/`` that
    lead out of it (to a file, and to a folder)."""
    from pipelines.core.settings import LooplineSettings

    settings = LooplineSettings(home=tmp_path_factory.mktemp("page_security_home"))
    report = DataHome(settings).drift_report("churn", date(2026, 11, 28))
    report.parent.mkdir(parents=True)
    report.write_text(f"<html><body>{REPORT_TEXT}</body></html>")
    (settings.data_home / "secret.html").write_text(SECRET)  # in the data home, beside reports/
    outside = tmp_path_factory.mktemp("outside_the_home")
    (outside / "secret.html").write_text(SECRET)
    (report.parent / "leak.html").symlink_to(outside / "secret.html")
    (report.parent / "linked").symlink_to(outside, target_is_directory=True)
    return settings


@pytest.fixture(scope="module")
def api(home):
    register_loopline_dags()
    with airflow_client(home.data_home) as client:
        yield client


PAGES = ["/loopline/", "/loopline/api/summary", "/loopline/reports/churn/drift/2026-11-28.html"]


# --- logins -------------------------------------------------------------------------------------------------

def _forged(kind: str) -> str:
    """A token with the admin's claims that the real key did not sign."""
    import jwt
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.tokens import JWTGenerator

    claims = {"sub": "admin", "role": "admin", "teams": []}
    audience = get_auth_manager()._get_jwt_audience()
    if kind == "another key":
        return JWTGenerator(secret_key="an-attackers-key-" * 4, valid_for=3600, audience=audience).generate(claims)
    now = int(datetime.now(UTC).timestamp())  # "alg": "none": no signature at all
    return jwt.encode({**claims, "aud": audience, "iat": now, "nbf": now, "exp": now + 3600}, None, algorithm="none")


@pytest.mark.parametrize("kind", ["another key", "alg none"])
@pytest.mark.parametrize("path", PAGES)
def test_a_forged_token_is_no_login(api, kind, path):
    """Fault: a JWT with the admin's claims signed with another key, or unsigned; injected as the Bearer header
    and as the UI's ``_token`` cookie. Invariant: 401 for an API client, the login page for a browser, and no
    page data either way; the same claims signed with the real key open the page (the test can fail)."""
    token = _forged(kind)
    answer = api.get(path, headers={**bearer(token), "Accept": "application/json"})
    assert answer.status_code == 401 and answer.json() == {"detail": "Invalid JWT token"}
    browser = api.get(path, headers={"Authorization": "", "Accept": "text/html"}, cookies={"_token": token})
    assert browser.status_code == 302 and browser.headers["location"].startswith("/auth/login?next=")
    for shown in (answer.text, browser.text):
        assert REPORT_TEXT not in shown and "use_cases" not in shown and "<h1>Loopline</h1>" not in shown
    assert api.get(path, headers=bearer(token_for("admin", "admin"))).status_code == 200


@pytest.mark.parametrize("path", PAGES)
def test_an_expired_token_signed_with_the_real_key_is_no_login(api, path):
    """Fault: a token the auth manager itself signed, which expired an hour ago (beyond ``jwt_leeway``);
    injected as the Bearer header and as the cookie. Invariant: 401 ``Token Expired``, the login page for a
    browser, no page data."""
    expired = token_for("admin", "admin", expires_in_s=-3600)
    answer = api.get(path, headers={**bearer(expired), "Accept": "application/json"})
    assert answer.status_code == 401 and answer.json() == {"detail": "Token Expired"}
    browser = api.get(path, headers={"Authorization": "", "Accept": "text/html"}, cookies={"_token": expired})
    assert browser.status_code == 302 and REPORT_TEXT not in browser.text
    posted = api.post("/loopline/api/ask", json={"question": "How do I roll back?"}, headers=bearer(expired))
    assert posted.status_code == 401


def test_a_user_without_the_loopline_view_is_refused(api):
    """Fault: a valid token of a user the auth manager does not allow the custom view ``Loopline`` (with the
    SimpleAuthManager every role from ``viewer`` up may see it, so this is a user with no role); injected as
    the Bearer header. Invariant: 403 naming the user on every route, GET and POST, and no page data; a
    ``viewer`` is let in (the same token path can succeed)."""
    nobody = bearer(token_for("nobody", None))
    for path in PAGES:
        answer = api.get(path, headers={**nobody, "Accept": "text/html"})
        assert answer.status_code == 403, path  # logged in: no login page, a refusal
        assert answer.json() == {"detail": "user nobody may not see the Loopline page"}
    for path, body in (("/loopline/api/ask", {"question": "How do I roll back?"}),
                       ("/loopline/api/feedback", {"trace_id": "tr-1", "up": True})):
        assert api.post(path, json=body, headers=nobody).status_code == 403
    assert api.get("/loopline/api/summary", headers=bearer(token_for("vic", "viewer"))).status_code == 200


# --- report paths -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, why", [
    ("%2e%2e/secret.html", "percent-encoded .. (lower case) to the data home"),
    ("%2E%2E/%2E%2E/" + "%2E%2E/" * 8 + "etc/passwd", "percent-encoded .. to /etc/passwd"),
    ("churn/drift/..%2F..%2F..%2Fsecret.html", "encoded slashes between the dots"),
    ("churn/drift/%2e%2e/%2e%2e/%2e%2e/secret.html", ".. from inside a report folder"),
    ("%2Fetc%2Fpasswd", "an absolute path, encoded"),
    ("/etc/passwd", "an absolute path (a double slash)"),
    ("churn/drift/leak.html", "a symlink inside reports/ to a file outside it"),
    ("churn/drift/linked/secret.html", "a symlinked folder inside reports/ leading outside it"),
    ("churn/drift/2026-11-28.html%00.png", "a NUL byte"),
])
def test_a_report_path_that_leaves_reports_is_not_served(api, home, path, why):
    """Fault: a report path that leads out of the data home's ``reports/``; injected in the URL of
    ``/loopline/reports/``. Invariant: 404 naming the path, and nothing of the file outside in the answer."""
    if "leak" in path or "linked" in path:  # the symlinks are there and do lead to the secret
        link = DataHome(home).reports / "churn" / "drift" / path.rsplit("/", 2)[-2 if "linked" in path else -1]
        assert link.is_symlink() and not link.resolve().is_relative_to(DataHome(home).reports.resolve())
    answer = api.get(f"/loopline/reports/{path}")
    assert answer.status_code == 404, why
    assert "under the data home's reports/" in answer.json()["detail"] and SECRET not in answer.text


def test_dot_dot_reaches_the_route_decoded_and_is_resolved(api):
    """The control for the test above: an encoded ``..`` that stays inside ``reports/`` serves the report, so
    the refusals are the route's check and not the client or router dropping the dots."""
    answer = api.get("/loopline/reports/churn/drift/%2e%2e/drift/2026-11-28.html")
    assert answer.status_code == 200 and REPORT_TEXT in answer.text
    assert answer.headers["content-security-policy"] == "sandbox allow-scripts"
    assert answer.headers["x-content-type-options"] == "nosniff"


# --- hostile Asset-event extras -----------------------------------------------------------------------------

def _hostile_extras(home) -> dict[str, object]:
    reports = DataHome(home).reports
    return {
        "a list": [1, 2, "<script>alert('list')</script>"],
        "a string": "<img src=x onerror=alert('string')>",
        "wrong types": {"drift_share": "abc", "reasons": 42, "signals": {"a": 1}, "drifted_columns": "sessions_7d"},
        "1 MB": {"reasons": ["A" * 1_000_000]},
        "relative path": {"report_uri": "../../etc/passwd"},
        "absolute path": {"report_uri": "/etc/passwd"},
        "file URI out": {"report_uri": f"{reports.as_uri()}/../secret.html"},
        "other reports/": {"report_uri": "file:///srv/elsewhere/reports/churn/drift/2026-11-28.html"},
        "javascript": {"report_uri": "javascript:alert('uri')"},
        "quote break": {"report_uri": '"><script>alert("attr")</script>.html', "reasons": ["</td></tr><b>x"]},
        "NaN": {"drift_share": math.nan, "signals": ["data_drift"]},
        "nested": {"junk": _nested(200)},
        "too deep to parse": {},  # replaced by raw JSON text nested 100,000 deep, below
        "good": {"reasons": ["data drift: share 0.50"], "report_uri": DataHome(home).drift_report(
            "churn", date(2026, 11, 28)).as_uri()},
    }


def _nested(depth: int) -> object:
    value: object = "<b>bottom</b>"
    for n in range(depth):
        value = {f"k{n}": value, "list": [value]} if n < 5 else {f"k{n}": value}
    return value


@pytest.fixture(scope="module")
def hostile_run(api, home):
    """An asset-triggered run of ``churn_training`` that consumed one event per hostile extra, written into
    Airflow's metadata database through its ORM (the deepest one as raw JSON text, as the ORM would not)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType
    from sqlalchemy import delete, text

    extras = _hostile_extras(home)
    now = datetime.now(UTC)
    ids = {}
    with create_session() as session:
        asset = AssetModel(name=HOSTILE_ASSET, uri="loopline://test/hostile-extras")
        session.add(asset)
        session.flush()
        run = DagRun(dag_id="churn_training", run_id=HOSTILE_RUN, run_type=DagRunType.ASSET_TRIGGERED,
                     run_after=now, start_date=now, state=DagRunState.SUCCESS)
        for name, extra in extras.items():
            event = AssetEvent(asset_id=asset.id, extra=extra, source_dag_id="churn_drift_check",
                               source_run_id=f"hostile {name}", source_task_id="emit_retrain")
            run.consumed_asset_events.append(event)
            session.add(event)
        session.add(run)
        session.flush()
        ids = {e.source_run_id: e.id for e in run.consumed_asset_events}
        session.execute(text("UPDATE asset_event SET extra = :raw WHERE id = :id"),
                        {"raw": "[" * 100_000 + "]" * 100_000, "id": ids["hostile too deep to parse"]})
    yield extras
    with create_session() as session:
        session.execute(delete(DagRun).where(DagRun.run_id == HOSTILE_RUN))
        session.execute(delete(AssetEvent).where(AssetEvent.id.in_(list(ids.values()))))
        session.execute(delete(AssetModel).where(AssetModel.name == HOSTILE_ASSET))


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_hostile_extras_do_not_break_the_page(api, hostile_run):
    """Fault: Asset events whose extras are a list, a string, wrong types, 1 MB, paths out of ``reports/``,
    markup, NaN, nesting 200 deep, and JSON nested 100,000 deep; injected into Airflow's metadata database as
    events a run of ``churn_training`` consumed. Invariant: the page and its JSON answer 200; the JSON is strict
    JSON; every event is listed with a one-line reason; only the good event's report is linked; every other
    report path is shown as text; markup is escaped; the page stays small."""
    summary_answer = api.get("/loopline/api/summary")
    assert summary_answer.status_code == 200
    summary = _strict_json(summary_answer.text)
    churn = next(c for c in summary["use_cases"] if c["name"] == "churn")
    assert churn["errors"] == []
    (run,) = [r for r in churn["runs"] if r["run_id"] == HOSTILE_RUN]
    events = {e["source_run_id"].removeprefix("hostile "): e for e in run["events"]}
    assert sorted(events) == sorted(hostile_run)
    assert all(isinstance(e["reason"], str) and 0 < len(e["reason"]) <= 700 for e in events.values())
    assert {name for name, e in events.items() if e["report"]} == {"good"}
    assert events["good"]["report"] == "churn/drift/2026-11-28.html"
    assert events["wrong types"]["reason"] == '42; drift share "abc" (not a number); drifted: sessions_7d'
    assert events["a list"]["reason"].startswith("an Asset event whose extra is not a mapping: [1, 2, ")
    assert events["too deep to parse"]["reason"].startswith("an Asset event whose extra is not readable JSON")
    assert events["NaN"]["extra"]["drift_share"] == "nan"
    assert len(events["1 MB"]["extra"]["reasons"][0]) < 1100 and "1,000,000 characters, cut" in \
        events["1 MB"]["extra"]["reasons"][0]
    assert "nested deeper than" in json.dumps(events["nested"]["extra"])
    assert len(summary_answer.text) < 200_000

    page = api.get("/loopline/")
    assert page.status_code == 200
    html = page.text
    assert html.count("<script>") == 1  # the page's own script only
    for markup in ("<script>alert('list')</script>", "<img src=x onerror", '"><script>alert("attr")</script>',
                   "</td></tr><b>x", "<b>bottom</b>"):
        assert markup not in html, markup
    assert escape("<img src=x onerror=alert('string')>") in html
    assert escape('"><script>alert("attr")</script>.html') in html  # shown, as text
    assert 'href="javascript:' not in html and "report (not linked): <code>/etc/passwd</code>" in html
    assert "report (not linked): <code>../../etc/passwd</code>" in html
    links = [line for line in html.split('href="') if line.startswith("/loopline/reports/")]
    assert links and all(link.startswith("/loopline/reports/churn/drift/2026-11-28.html\"") for link in links)
    assert len(html) < 200_000
