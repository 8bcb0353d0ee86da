"""The evaluation end to end on the toy world: four golden cases asked through the real assistant (SmolLM2 via
llama.cpp, a LanceDB toy index, the prompt from MLflow's registry), scored by mlflow.genai.evaluate with the code
scorers; an MLflow evaluation run with the expected metrics, per-case assessments on the traces, the HTML report."""

from __future__ import annotations

import hashlib
import json

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALWAYS = {"retrieval_hit/mean", "retrieval_reciprocal_rank/mean", "fact_recall/mean", "token_f1/mean",
          "rouge_l/mean", "over_refusal/mean", "refusal_correct/mean", "tokens/mean", "tokens/p95", "latency_ms/p95",
          "within_budget/mean"}
ANSWERED = {"groundedness/mean", "hallucinated/mean", "citation_precision/mean"}


@pytest.fixture(scope="module")
def evaluated(eval_world):
    from pipelines.llm_eval import steps

    evaluation = steps.evaluate_answers(eval_world.config, eval_world.settings, run_key="manual__test")
    report = steps.write_report(eval_world.config, evaluation, eval_world.settings)
    return evaluation, report


def test_the_evaluation_is_an_mlflow_evaluation_run_with_its_lineage(eval_world, evaluated):
    import mlflow

    evaluation, _ = evaluated
    run = mlflow.get_run(evaluation["run_id"])
    assert run.info.status == "FINISHED"
    assert mlflow.get_experiment(run.info.experiment_id).name == "evaltoy_assistant"  # next to the traces
    assert run.data.tags["mlflow.runType"] == "genai_evaluate"
    digest = hashlib.sha256(eval_world.golden.read_bytes()).hexdigest()
    params = run.data.params
    assert params["golden_digest"] == digest == run.data.tags["loopline.golden_digest"] == evaluation["golden_digest"]
    assert params["index_version"] == run.data.tags["loopline.index_version"] == "evaltoy_v1"
    assert params["prompt_version"] == run.data.tags["loopline.prompt_version"] == evaluation["prompt_version"]
    assert params["model"].startswith("SmolLM2-135M-Instruct:") and params["model"].endswith(":llama_cpp")
    assert params["cases"] == "4"

    metrics = run.data.metrics
    assert ALWAYS <= set(metrics)
    answered = [n for n in ("tea-temperature", "kite-wind", "owls-quiet") if n not in evaluation["failed_cases"]]
    if answered:  # a case with no failed check was answered: its groundedness was scored
        assert ANSWERED <= set(metrics)
    assert metrics["refusal_correct/mean"] == 1.0  # the gate declines the capital of France
    assert metrics["retrieval_hit/mean"] == 1.0  # the toy index finds each answering document
    assert {"category/off_corpus/refusal_correct", "category/outdoors/retrieval_hit"} <= set(metrics)
    assert evaluation["metrics"]["refusal_accuracy"] == 1.0 and evaluation["metrics"]["hit_at_k"] == 1.0


def test_every_case_has_its_assessments_on_its_trace(evaluated):
    import mlflow

    evaluation, _ = evaluated
    results = json.loads(open(evaluation["results_path"]).read())
    assert [c["id"] for c in results["cases"]] == ["tea-temperature", "kite-wind", "owls-quiet", "capital-of-france"]
    for case in results["cases"]:
        trace = mlflow.get_trace(case["trace_id"])
        feedback = {a.name: a for a in trace.info.assessments if a.feedback is not None}
        expectations = {a.name for a in trace.info.assessments if a.expectation is not None}
        assert trace.info.tags["loopline.eval_case"] == case["id"]
        assert {"case_id", "kind", "category"} <= expectations
        assert {"tokens", "latency_ms", "within_budget"} <= set(feedback)
        for name, score in case["scores"].items():
            if score["value"] is None:
                assert name not in feedback
            else:
                assert feedback[name].value == score["value"] and feedback[name].rationale == score["rationale"]
                assert feedback[name].metadata["mlflow.assessment.sourceRunId"] == evaluation["run_id"]
        if case["kind"] == "unanswerable":
            assert feedback["refusal_correct"].value is True and "retrieval_hit" not in feedback
        else:
            assert "retrieval_hit" in feedback and "refusal_correct" not in feedback


def test_the_report_lists_every_case_and_is_logged(eval_world, evaluated):
    from mlflow import MlflowClient

    evaluation, report = evaluated
    page = open(report["report"]).read()
    assert report["report"].startswith(str(eval_world.settings.data_home / "reports" / "evaltoy" / "llm_eval"))
    for case in ("tea-temperature", "kite-wind", "owls-quiet", "capital-of-france"):
        assert case in page
    assert evaluation["golden_digest"] in page
    artifacts = {a.path for a in MlflowClient().list_artifacts(evaluation["run_id"], "llm_eval")}
    assert artifacts == {f"llm_eval/{evaluation['run_id']}.json", f"llm_eval/{evaluation['run_id']}.html"}


def test_a_rerun_with_the_same_key_reuses_the_run(eval_world, evaluated):
    from pipelines.llm_eval import steps

    again = steps.evaluate_answers(eval_world.config, eval_world.settings, run_key="manual__test")
    assert again["run_id"] == evaluated[0]["run_id"]
