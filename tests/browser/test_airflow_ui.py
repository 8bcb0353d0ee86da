"""The ML engineer's path through the Airflow UI, in headless Chromium against a real Airflow:
log in, see the DAGs with their tags, open churn_training, have the form refuse a bad value, trigger a run
with a changed param, watch it succeed, and find the new model version on the Loopline page.

The tests run in order on one browser page (a later one starts where the earlier left off). About 2-3 minutes:
Airflow's start, the churn features built in code (``churn_world``), one training run.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.integration]

CHANGED_MAX_ITER = 60  # the config says 100


def test_login_shows_the_dag_list_with_tags(page, airflow, shoot, login):
    page.goto(f"{airflow.url}/")
    page.wait_for_url(re.compile(r".*/auth/login.*"))
    page.locator("input[name=username]").wait_for()
    shoot(page, "01-login")
    login(page, airflow)
    page.goto(f"{airflow.url}/dags")
    for dag_id in ("churn_features", "churn_training", "churn_drift_check", "docs_rag_index"):
        page.get_by_role("link", name=dag_id, exact=True).wait_for()
    card = page.locator("div").filter(has=page.get_by_role("link", name="churn_training", exact=True)).filter(
        has_text="template:training").last
    for tag in ("churn", "loopline", "template:training", "training"):
        assert card.get_by_text(tag, exact=True).count() >= 1, tag
    page.get_by_role("link", name="Loopline").first.wait_for()  # the plugin's entry in the navigation
    shoot(page, "02-dag-list")


def test_the_trigger_form_refuses_a_bad_value_with_its_message(page, airflow, shoot):
    page.goto(f"{airflow.url}/dags/churn_training")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    shoot(page, "03-trigger-form")

    iterations = dialog.locator("input[name=element_max_iter]")
    iterations.fill("")
    iterations.blur()
    dialog.get_by_text("This field is required").wait_for()
    assert dialog.get_by_role("button", name="Trigger").is_disabled()
    iterations.scroll_into_view_if_needed()
    shoot(page, "04-trigger-form-refused")

    iterations.fill("5")  # below the Param's minimum of 10: the number field holds it to its bounds
    iterations.blur()
    assert iterations.input_value() == "10"
    iterations.fill("100000")
    iterations.blur()
    assert iterations.input_value() == "2000"
    dialog.get_by_role("button", name="Close").click()
    dialog.wait_for(state="detached")


def test_the_rest_api_refuses_a_bad_conf_with_the_params_message(airflow):
    with pytest.raises(urllib.error.HTTPError) as refused:
        airflow.client.trigger("churn_training", logical_date="2026-11-01T00:00:00Z", conf={"max_iter": 5})
    assert refused.value.code == 400
    body = json.loads(refused.value.read())
    assert "Invalid input for param max_iter: 5 is less than the minimum of 10" in json.dumps(body)


@pytest.fixture(scope="module")
def triggered(page, airflow, shoot) -> str:
    """churn_training triggered through the form with max_iter changed; the run's id."""
    airflow.client.unpause("churn_training")
    airflow.client.set_scheduled_runs_aside("churn_training")
    before = {r["dag_run_id"] for r in airflow.client.get("/api/v2/dags/churn_training/dagRuns")["dag_runs"]}

    page.goto(f"{airflow.url}/dags/churn_training")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.locator("input[name=element_max_iter]").fill(str(CHANGED_MAX_ITER))
    dialog.locator("input[name=element_window_days]").fill(str(8))
    dialog.locator("input[name=element_window_days]").blur()
    dialog.locator("input[name=element_max_iter]").scroll_into_view_if_needed()
    shoot(page, "05-trigger-form-filled")
    dialog.get_by_role("button", name="Trigger").click()
    dialog.wait_for(state="detached")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = airflow.client.get("/api/v2/dags/churn_training/dagRuns?run_type=manual")["dag_runs"]
        new = [r for r in runs if r["dag_run_id"] not in before]
        if new:
            return new[0]["dag_run_id"]
        time.sleep(1)
    raise AssertionError("the form's Trigger created no run of churn_training")


def test_a_run_triggered_through_the_form_carries_the_changed_param_and_succeeds(page, airflow, triggered, shoot):
    run = airflow.client.dag_run("churn_training", triggered)
    assert run["conf"]["max_iter"] == CHANGED_MAX_ITER and run["conf"]["window_days"] == 8
    assert run["run_type"] == "manual"

    page.goto(f"{airflow.url}/dags/churn_training/runs/{triggered}")
    header = page.locator("div").filter(has=page.get_by_text(triggered, exact=True)).filter(
        has_text="Run Type").last
    header.wait_for()
    # Watch the run page as a person would: reload until its state badge says Success (or the run failed).
    deadline = time.monotonic() + 420
    while not header.get_by_text("Success", exact=True).count():
        state = airflow.client.dag_run("churn_training", triggered)["state"]
        assert state not in ("failed",), f"churn_training {triggered} failed"
        assert time.monotonic() < deadline, f"churn_training {triggered} still {state} after 7 minutes"
        time.sleep(5)
        page.reload()
        header.wait_for()
    assert airflow.client.dag_run("churn_training", triggered)["state"] == "success"
    shoot(page, "06-run-succeeded")
    trained = airflow.client.xcom("churn_training", triggered, "train_and_register")
    assert trained["reused"] is False


def test_the_loopline_page_shows_the_new_version(page, airflow, triggered, shoot):
    trained = airflow.client.xcom("churn_training", triggered, "train_and_register")
    decision = airflow.client.xcom("churn_training", triggered, "evaluate_and_promote")
    version = trained["version"]

    page.goto(f"{airflow.url}/dags")
    page.get_by_role("link", name="Loopline").first.click()
    page.wait_for_url(re.compile(r".*/plugin/loopline"))
    frame = page.frame_locator("iframe")
    row = frame.locator(f'table.versions[data-model="churn"] tr[data-version="{version}"]')
    row.wait_for()
    assert f"max_iter={CHANGED_MAX_ITER}" in row.inner_text()
    if decision["promoted"]:  # a fresh data home: the first version is the champion
        champion = frame.locator('[data-model="churn"][data-champion-version]')
        assert champion.get_attribute("data-champion-version") == version
        assert f"max_iter={CHANGED_MAX_ITER}" in champion.inner_text()
    shoot(page, "07-loopline-in-airflow")

    page.goto(f"{airflow.url}/loopline/")
    page.locator(f'tr[data-version="{version}"]').first.wait_for()
    shoot(page, "08-loopline-page", full_page=True)


def test_the_loopline_page_sends_a_stranger_to_the_login(browser, airflow):
    cookies = browser.cookies()
    browser.clear_cookies()  # no Airflow session any more: the page must not show
    page = browser.new_page()
    try:
        page.goto(f"{airflow.url}/loopline/")
        page.wait_for_url(re.compile(r".*/auth/login\?next=.*loopline.*"))
        page.locator("input[name=username]").wait_for()
        assert "data-champion-version" not in page.content()
    finally:
        page.close()
        browser.add_cookies(cookies)
