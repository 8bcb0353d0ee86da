"""The docs_llm_eval DAG: graph shape, daily and on the docs index Asset, the `cases` param; the report page; the
CLI's error path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.llm_eval.report import render_report
from pipelines.templates import TEMPLATES, load_named

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=str(REPO / "dags"), bundle_path=REPO / "dags")
    assert bag.import_errors == {}
    return bag.dags


@pytest.fixture(scope="module")
def eval_dag(dags):
    return dags["docs_llm_eval"]


def test_the_template_is_listed_and_the_docs_instance_loads():
    assert TEMPLATES["llm_eval"].builder_module == "loopline_templates.llm_eval"
    config = load_named("docs_llm_eval")
    assert (config.template, config.assistant, config.golden_set) == (
        "llm_eval", "docs_assistant", "dags/evaluation/docs_golden.yaml")


def test_the_graph_evaluates_the_champion_then_a_candidate_gates_it_and_checks_live_traffic(eval_dag):
    upstream = {task_id: task.upstream_task_ids for task_id, task in eval_dag.task_dict.items()}
    assert upstream == {
        "load_golden_set": set(), "evaluate_answers": {"load_golden_set"}, "write_report": {"evaluate_answers"},
        "gate_index": {"evaluate_answers"},
        "find_candidate": {"load_golden_set", "compare_release"},
        "evaluate_candidate": {"find_candidate", "evaluate_answers"},
        "gate_candidate": {"evaluate_answers", "evaluate_candidate", "find_candidate"},
        "write_candidate_report": {"evaluate_candidate"},
        "check_live_traffic": set(), "emit_fallback": {"check_live_traffic"},
        "compare_release": {"check_live_traffic"}}
    # the live release decides first, whatever the live check did; the offline gate runs after it, skipped or not
    assert eval_dag.task_dict["compare_release"].trigger_rule == "all_done"
    assert eval_dag.task_dict["find_candidate"].trigger_rule == "none_failed"
    (outlet,) = eval_dag.task_dict["emit_fallback"].outlets
    assert (outlet.name, outlet.uri) == ("docs_assistant_fallback", "loopline://assistant-fallback/docs")
    assert eval_dag.max_active_runs == 1 and eval_dag.max_active_tasks == 1 and eval_dag.catchup is False
    assert "template:llm_eval" in eval_dag.tags and "docs/llm-eval.md" in eval_dag.doc_md
    assert eval_dag.params["cases"] is None


def test_it_runs_daily_on_every_new_docs_index_and_on_every_new_prompt_candidate(eval_dag):
    from airflow.sdk import AssetOrTimeSchedule

    assert isinstance(eval_dag.timetable, AssetOrTimeSchedule)
    (either,) = eval_dag.timetable.asset_condition.objects  # one condition: any of the two
    assets = [(a.name, a.uri) for a in either.objects]
    assert assets == [("docs_index", "loopline://rag/docs"),
                      ("docs_prompt_candidate", "loopline://prompt-candidate/docs"),
                      ("assistant_adapter_candidate", "loopline://adapter-candidate/assistant_adapter")]
    assert "expression='0 0 * * *'" in repr(eval_dag.timetable.timetable)  # @daily, UTC


def test_the_report_lists_every_case_and_escapes_text():
    summary = {"run_id": "r1", "golden_digest": "ab" * 32, "prompt_version": "2", "index_version": "docs_v1",
               "model": "m", "experiment": "docs_assistant", "metrics": {"hit_at_k": 0.5, "latency_p95_ms": 4100.0},
               "metrics_by_category": {"drinks": {"fact_recall": 1.0}}}
    scores = {"fact_recall": {"value": 0.0, "passed": False, "rationale": "0 of 1 facts; missing: 80 degrees"},
              "tokens": {"value": 500, "passed": None, "rationale": "500 in + 0 out"},
              "groundedness": {"value": None, "passed": None, "rationale": ""}}
    cases = [{"id": f"case-{n}", "kind": "answerable", "category": "drinks", "question": "<b>hot?</b>",
              "reference": "80 degrees", "expected_sources": ["tea.md"], "answer": "<script>x</script>",
              "refused": False, "refusal_reason": None, "trace_id": f"tr-{n}",
              "sources": [{"doc_id": "tea.md", "heading": "Tea"}], "retrieved": [{"doc_id": "tea.md", "heading": ""}],
              "scores": scores, "failed": ["fact_recall"] if n else []} for n in range(3)]
    page = render_report("docs_llm_eval", summary, cases)
    assert all(f"case-{n}" in page for n in range(3))
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "missing: 80 degrees" in page and "<b>2</b> failed at least one check" in page


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.llm_eval", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_the_cli_checks_the_golden_set_and_refuses_bad_configs(tmp_path):
    done = run_cli("check", "docs")
    assert done.returncode == 0, done.stderr
    assert "docs_golden.yaml: 142 cases (40 answerable, 36 unanswerable, 66 adversarial)" in done.stdout
    done = run_cli("run", "no_such_eval")
    assert done.returncode == 2 and "error: no llm_eval config 'no_such_eval'" in done.stderr
    bad = tmp_path / "bad_llm_eval.yaml"
    bad.write_text(f"template: llm_eval\ninstance: bad\ngolden_set: {tmp_path / 'missing.yaml'}\n")
    done = run_cli("run", str(bad))
    assert done.returncode == 2 and "cannot read it" in done.stderr


def test_the_fallback_dag_runs_on_the_asset_the_evaluation_emits(dags):
    fallback = dags["docs_assistant_fallback"]
    assert list(fallback.task_dict) == ["roll_back_champion"]
    assets = [(a.name, a.uri) for a in fallback.timetable.asset_condition.objects]
    assert assets == [("docs_assistant_fallback", "loopline://assistant-fallback/docs")]
    assert fallback.params["reason"] is None and "docs/llm-eval.md" in fallback.doc_md


def test_a_fallback_config_naming_another_instance_is_refused(tmp_path):
    from pipelines.llm_eval.config import AssistantFallbackConfig
    from pipelines.llm_eval.steps import LlmEvalError, fallback_evaluation

    config = AssistantFallbackConfig.model_validate({"template": "assistant_fallback", "instance": "other",
                                                     "evaluation": "docs_llm_eval"})
    with pytest.raises(LlmEvalError, match="docs_llm_eval emits docs_assistant_fallback, not other_assistant_fallback"):
        fallback_evaluation(config)
