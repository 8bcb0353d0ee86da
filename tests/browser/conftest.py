"""A real Airflow (``airflow standalone``) on a data home of its own, and Debian's headless Chromium driven by
Playwright. Never a browser that a tool downloads: ``/usr/bin/chromium`` or the test is skipped.

Screenshots go to ``test-artifacts/screenshots/`` at the repository root (kept by CI as artifacts).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.core.airflow_runtime import standalone, wait_for_dags
from pipelines.core.settings import REPO_ROOT, LooplineSettings
from support import churn_world  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
PORT = 8282
WINDOW_DAYS = 8  # the training window the form asks for; churn_world prepares its features
DAGS = ["assistant_lora_tune", "churn_drift_check", "churn_features", "churn_training", "docs_drift_check",
        "docs_rag_index"]


class Airflow:
    """The running Airflow: its REST client, settings and UI address."""

    def __init__(self, client, settings: LooplineSettings):
        self.client, self.settings = client, settings
        self.url = client.base_url

    def set_scheduled_runs_aside(self, dag_id: str, wait_s: float = 20) -> list[str]:
        """Unpausing a DAG makes the scheduler start its latest cron run; with ``max_active_runs=1`` it would
        hold a manual run back. Wait for it a little and mark it failed."""
        deadline = time.monotonic() + wait_s
        stopped: list[str] = []
        while time.monotonic() < deadline:
            for run in self.client.get(f"/api/v2/dags/{dag_id}/dagRuns?run_type=scheduled")["dag_runs"]:
                if run["state"] in ("queued", "running") and run["dag_run_id"] not in stopped:
                    self.client.patch(f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}", {"state": "failed"})
                    stopped.append(run["dag_run_id"])
            if stopped:
                return stopped
            time.sleep(2)
        return stopped


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); no other browser is used")
    pytest.importorskip("playwright.sync_api")
    return str(CHROMIUM)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> Airflow:
    home = tmp_path_factory.mktemp("browser_home")
    settings = LooplineSettings(home=home, airflow_port=PORT)
    churn_world.prepare(settings, datetime.now(UTC).date(), WINDOW_DAYS)
    with standalone(settings, log=lambda message: None) as client:
        wait_for_dags(client, DAGS)
        yield Airflow(client, settings)


@pytest.fixture(scope="module")
def browser(chromium_path, tmp_path_factory):
    """A fresh Chromium profile for the module; each test opens its own page (or context) in it."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")), executable_path=chromium_path, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1400, "height": 900}, locale="en-US", timezone_id="UTC")
        context.set_default_timeout(30_000)
        yield context
        context.close()


@pytest.fixture(scope="module")
def page(browser):
    page = browser.new_page()
    yield page
    page.close()


@pytest.fixture(scope="session")
def shoot():
    """``shoot(page_or_locator, name)`` saves ``test-artifacts/screenshots/<name>.png`` and returns its path."""

    def save(target, name: str, *, full_page: bool = False) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        target.screenshot(path=str(path), **({"full_page": True} if full_page else {}))
        return path

    return save
