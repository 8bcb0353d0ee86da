"""A real Airflow (``airflow standalone``) on a data home of its own, and Debian's headless Chromium driven by
Playwright. Never a browser that a tool downloads: ``/usr/bin/chromium`` or the test is skipped (under
``CI=true`` it fails instead: CI must not pass without having run them).

One Airflow for the whole session. When a selected test asks for ``ask_world``, the docs assistant is made
ready on the same data home while the other tests run (a thread): a small ``docs`` index of two of the docs,
SmolLM2 converted, the prompt seeded.

Screenshots go to ``test-artifacts/screenshots/`` at the repository root (kept by CI as artifacts).
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.core.airflow_runtime import standalone, wait_for_dags
from pipelines.core.settings import REPO_ROOT, LooplineSettings, get_settings
from support import churn_world  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
PORT = 8282
WINDOW_DAYS = 8  # the training window the form asks for; churn_world prepares its features
# churn_training's YAML with promotion.approval: required, as a DAG and a model of its own (the approval tests):
# a short timeout, so that a request nobody answers is rejected within the test.
APPROVAL_DAG, APPROVAL_MODEL, APPROVAL_TIMEOUT_HOURS = "churnapproval_training", "churn_approval", 0.03
DAGS = ["assistant_lora_tune", "churn_drift_check", "churn_features", "churn_training", "docs_drift_check",
        "docs_rag_index", APPROVAL_DAG]
# The Ask test's index: the live version of the `docs` index, built from two documents instead of all of
# docs/ (the whole folder takes 40 to 80 s to embed here; these two about 10 s), with two questions of its own.
ASK_DOCS = ["rag.md", "operations.md"]
ASK_QUESTIONS = [("How do I roll the retrieval index back to the previous version?", "rag.md"),
                 ("What does make clean delete?", "operations.md")]
ASK_WORLD_TIMEOUT_S = 600


class Airflow:
    """The running Airflow: its REST client, settings and UI address."""

    def __init__(self, client, settings: LooplineSettings):
        self.client, self.settings = client, settings
        self.url = client.base_url
        self.ask_world: Future | None = None


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    missing = None
    if not CHROMIUM.exists():
        missing = "Debian's chromium is not installed (apt-get install chromium); no other browser is used"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (make install)"
    if missing:
        if _on_ci():
            pytest.fail(f"CI=true and the browser tests cannot run: {missing}", pytrace=False)
        pytest.skip(missing)
    return str(CHROMIUM)


def build_ask_world(settings: LooplineSettings, root: Path) -> dict:
    """The docs assistant ready to answer on ``settings``' data home: a live ``docs`` index of
    :data:`ASK_DOCS` (what ``dags/configs/docs_assistant.yaml`` reads), the generator prepared, the prompt seeded.

    Returns:
        Seconds per step (``index``, ``prepare_generator``, ``seed_prompt``) and the index's live version.
    """
    from pipelines.assistant import steps
    from pipelines.rag.steps import run_once
    from pipelines.rag.versions import load_rag_config
    from pipelines.templates import load_named

    root.mkdir(parents=True, exist_ok=True)
    questions = root / "ask_questions.yaml"
    questions.write_text("questions:\n" + "".join(f"  - question: {q}\n    source: {s}\n" for q, s in ASK_QUESTIONS))
    rag_yaml = root / "docs_rag_index.yaml"
    rag_yaml.write_text(f"template: rag_index\ninstance: docs\ncorpus: {{path: {REPO_ROOT / 'docs'}, include: "
                        f"[{', '.join(ASK_DOCS)}]}}\nchunker: {{size_chars: 1000, overlap_chars: 150}}\n"
                        f"evaluation: {{questions: {questions}, k: 2, modes: [vector]}}\n")
    config = load_named("docs_assistant", "assistant")
    seconds: dict = {}
    started = time.perf_counter()
    built = run_once(load_rag_config(rag_yaml), "ask_world", settings)
    seconds["index"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    steps.prepare_generator(config, settings)
    seconds["prepare_generator"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    steps.seed_prompt(config, settings)
    seconds["seed_prompt"] = round(time.perf_counter() - started, 1)
    return {"seconds": seconds, "live_version": built["published"]["live_version"]}


def dags_with_approval(folder: Path) -> Path:
    """The repository's dags/ (linked) plus :data:`APPROVAL_DAG`, whose YAML is churn_training's with
    ``promotion.approval: required`` and a model of its own; returns the folder."""
    import shutil

    import yaml

    repo = REPO_ROOT / "dags"
    folder.mkdir(parents=True)
    for entry in repo.iterdir():
        if entry.name not in ("configs", "__pycache__"):
            (folder / entry.name).symlink_to(entry)
    (folder / "configs").mkdir()
    for config in (repo / "configs").glob("*.yaml"):
        (folder / "configs" / config.name).symlink_to(config)
    config = yaml.safe_load((repo / "configs" / "churn_training.yaml").read_text())
    config.update(instance=APPROVAL_DAG.removesuffix("_training"), model_name=APPROVAL_MODEL,
                  tags=["churn", "training", "approval"])
    config["promotion"].update(approval="required", approval_timeout_hours=APPROVAL_TIMEOUT_HOURS)
    (folder / "configs" / f"{APPROVAL_DAG}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(repo / "churn_training.py", folder / f"{APPROVAL_DAG}.py")  # a copy: it reads configs/ beside it
    return folder


def _wants_ask_world(request) -> bool:
    return any("ask_world" in getattr(item, "fixturenames", ()) for item in request.session.items)


@pytest.fixture(scope="session")
def airflow(tmp_path_factory, request) -> Airflow:
    home = tmp_path_factory.mktemp("browser_home")
    settings = LooplineSettings(home=home, airflow_port=PORT)
    churn_world.prepare(settings, datetime.now(UTC).date(), WINDOW_DAYS)
    # The scheduler rejects an unanswered approval request within 5 s of its timeout (15 s by default).
    with standalone(settings, log=lambda message: None, dags_folder=dags_with_approval(home / "dags"),
                    extra_env={"AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5"}) as client, \
            ThreadPoolExecutor(1) as pool:
        wait_for_dags(client, DAGS)
        airflow = Airflow(client, settings)
        if _wants_ask_world(request):  # the api-server reads the data home on each question: build it meanwhile
            airflow.ask_world = pool.submit(build_ask_world, settings, home / "ask_world")
        try:
            yield airflow
        finally:
            if airflow.ask_world is not None:
                airflow.ask_world.cancel()  # if it has not started; leaving the pool waits for a running build
                from pipelines.core import tracking

                tracking.configure_mlflow(get_settings())  # the world pointed this process's MLflow elsewhere


@pytest.fixture(scope="session")
def ask_world(airflow) -> dict:
    """Waits for the docs assistant's world (see :func:`build_ask_world`) and returns its timings."""
    return airflow.ask_world.result(timeout=ASK_WORLD_TIMEOUT_S)


@pytest.fixture(scope="session")
def login():
    """``login(page, airflow, next_path)``: Airflow's login form as a person fills it in."""

    def fill(page, airflow, next_path: str = "/") -> None:
        page.goto(f"{airflow.url}{next_path}")
        page.wait_for_url(re.compile(r".*/auth/login.*"))
        page.locator("input[name=username]").fill("admin")
        page.locator("input[name=password]").fill(airflow.client.password)
        page.locator("button[type=submit]").click()
        page.wait_for_url(lambda url: "/auth/login" not in url)

    return fill


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
