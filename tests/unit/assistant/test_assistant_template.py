"""The assistant DAG: graph shape, schedule on the docs index Asset, house rules; and the CLI's error path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.templates import TEMPLATES, load_named

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def docs_dag():
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=str(REPO / "dags"), bundle_path=REPO / "dags")
    assert bag.import_errors == {}
    return bag.dags["docs_assistant"]


def test_the_template_is_listed():
    assert TEMPLATES["assistant"].builder_module == "loopline_templates.assistant"
    assert load_named("docs_assistant").template == "assistant"


def test_the_graph_prepares_and_seeds_then_checks_and_announces_a_new_prompt(docs_dag):
    assert set(docs_dag.task_dict) == {"prepare_generator", "seed_prompt", "check_answers",
                                       "announce_prompt_candidate"}
    assert docs_dag.task_dict["check_answers"].upstream_task_ids == {"prepare_generator", "seed_prompt"}
    announce = docs_dag.task_dict["announce_prompt_candidate"]
    assert announce.upstream_task_ids == {"seed_prompt"}
    assert [(a.name, a.uri) for a in announce.outlets] == [("docs_prompt_candidate",
                                                            "loopline://prompt-candidate/docs")]
    assert docs_dag.max_active_runs == 1 and docs_dag.catchup is False
    assert "template:assistant" in docs_dag.tags and "loopline" in docs_dag.tags
    assert "docs/assistant.md" in docs_dag.doc_md and "docs_index" in docs_dag.doc_md


def test_it_runs_when_the_docs_index_changes(docs_dag):
    rag = load_named("docs_rag_index")
    assets = [(a.name, a.uri) for a in docs_dag.timetable.asset_condition.objects]
    assert assets == [(rag.index_asset.name, rag.index_asset.uri)] == [("docs_index", "loopline://rag/docs")]


def test_a_cron_adds_a_time_schedule():
    sys.path.insert(0, str(REPO / "dags"))
    from airflow.sdk import AssetOrTimeSchedule

    from loopline_templates.assistant import build_dag

    config = load_named("docs_assistant").model_copy(update={"schedule": "@daily"})
    assert isinstance(build_dag(config).timetable, AssetOrTimeSchedule)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.assistant", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


@pytest.mark.parametrize(("args", "message"), [
    (("ask", ""), "error: the question is empty: ask something about the documentation"),
    (("ask", "x" * 10_000), "error: the question is 10,000 characters long; the limit is 2,000"),
    (("ask", "why?", "--config", "no_such_assistant"), "error: no assistant config 'no_such_assistant'"),
    (("ask", "why?", "--config", "docs_rag_index"), "template: this file is a 'rag_index' config"),
])
def test_the_cli_prints_one_line_and_exits_2_on_bad_input(args, message):
    done = run_cli(*args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr


def test_the_cli_explains_itself():
    done = run_cli("--help")
    assert done.returncode == 0
    assert all(command in done.stdout for command in ("ask", "feedback", "seed-prompt"))
