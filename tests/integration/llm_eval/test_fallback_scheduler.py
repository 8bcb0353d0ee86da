"""The fallback through a real scheduler: ``airflow standalone`` parses the repository's DAGs; an Asset event on
``docs_assistant_fallback`` (what docs_llm_eval's ``emit_fallback`` sends, here posted through the REST API) starts
the DAG of that name by itself, and its task moves ``docs_assistant_answer@champion`` back to the version the
gate-promoted champion replaced, tagged with the event's reasons.

Slow (about 2 minutes): a data home of its own with the prompt registry in it, Airflow's four components.
"""

from __future__ import annotations

import time

import pytest

from pipelines.core import tracking
from pipelines.core.airflow_runtime import standalone, wait_for_dags
from pipelines.core.settings import LooplineSettings, get_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMPT = "docs_assistant_answer"
REASON = "downvote share (9 of 20 rated) 0.45 above 0.3"


def _asset_triggered_run(client, dag_id: str, timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns?run_type=asset_triggered&limit=5")["dag_runs"]
        if runs and runs[0]["state"] in ("success", "failed"):
            return runs[0]
        time.sleep(2)
    raise TimeoutError(f"no asset-triggered run of {dag_id} finished within {timeout_s:.0f} s")


def test_the_fallback_asset_starts_the_rollback_and_the_champion_moves_back(tmp_path):
    import mlflow

    from pipelines.assistant import steps as assistant_steps
    from pipelines.llm_eval.candidates import Candidate, alias_version, record_decision, version_tags
    from pipelines.templates import load_named

    settings = LooplineSettings(home=tmp_path / "home", airflow_port=8295)
    try:
        client = tracking.client(settings)
        seeded = assistant_steps.seed_prompt(load_named("docs_assistant"), settings)
        first = seeded["version"]
        messages = client.get_prompt_version(PROMPT, first).template
        second = int(mlflow.genai.register_prompt(name=PROMPT, template=messages, commit_message="candidate").version)
        mlflow.genai.set_prompt_alias(PROMPT, alias="challenger", version=second)
        assert record_decision(Candidate("prompt", PROMPT, "challenger", second, first), passed=True,
                               reason="passed: all checks held", golden_digest="0" * 64, eval_run="r1",
                               settings=settings)
        assert alias_version(client, "prompt", PROMPT, "champion") == second

        with standalone(settings, log=lambda message: None) as airflow:
            wait_for_dags(airflow, ["docs_assistant_fallback"])
            assert [e["filename"] for e in airflow.import_errors() if "docs_" in e["filename"]] == []
            airflow.unpause("docs_assistant_fallback")
            (asset,) = [a for a in airflow.get("/api/v2/assets?name_pattern=docs_assistant_fallback")["assets"]
                        if a["name"] == "docs_assistant_fallback"]
            airflow.post("/api/v2/assets/events", {"asset_id": asset["id"], "extra": {
                "source": "docs_llm_eval", "signals": ["downvotes"], "crossed": [REASON], "reasons": [REASON],
                "traffic": {"day": "2026-12-02"}}})
            run = _asset_triggered_run(airflow, "docs_assistant_fallback")
            assert run["state"] == "success", run
            (task,) = airflow.task_instances("docs_assistant_fallback", run["dag_run_id"])
            assert (task["task_id"], task["state"]) == ("roll_back_champion", "success")

        assert alias_version(client, "prompt", PROMPT, "champion") == first
        demoted = version_tags(client, "prompt", PROMPT, second)
        assert demoted["loopline.gate.decision"] == "rolled_back"
        assert REASON in demoted["loopline.rollback.reason"]
        restored = version_tags(client, "prompt", PROMPT, first)
        assert restored["loopline.rollback.restored_by"] == run["dag_run_id"]
        assert restored["loopline.rollback.from"] == str(second)
    finally:
        tracking.configure_mlflow(get_settings())  # the session's store again, for the tests after this one
