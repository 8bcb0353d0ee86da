"""The gate's moves on both registries, against a real MLflow store: a prompt (the prompt registry) and an adapter
(the model registry) found under @challenger, promoted with its tags (compare-and-set), not judged twice, rolled
back to the version it replaced, and a retry of the rollback moving nothing. No model answers here: the
answering side is tests/integration/llm_eval/test_release_gate_answers.py."""

from __future__ import annotations

import pytest

from pipelines.core import tracking
from pipelines.llm_eval.candidates import (
    Candidate,
    NothingToRollBack,
    alias_version,
    find_candidate,
    last_promotion,
    record_decision,
    restored_by,
    roll_back,
    version_tags,
)
from pipelines.llm_eval.config import GateSpec

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "system", "content": "Answer from the context."},
            {"role": "user", "content": "{{ context }} {{ question }}"}]


@pytest.fixture()
def assistant():
    from pipelines.assistant.config import AssistantConfig

    return AssistantConfig.model_validate({
        "template": "assistant", "instance": "gatereg", "index": "docs_rag_index",
        "prompt": {"name": "gatereg_answer"},
        "generator": {"backend": "transformers", "adapter": {"model_name": "gatereg_adapter"}}})


def _adapter_versions(client, name: str, count: int) -> list[int]:
    client.create_registered_model(name)
    return [int(client.create_model_version(name, source=f"file:///tmp/{name}/{n}").version) for n in range(count)]


def test_an_adapter_under_challenger_is_judged_promoted_and_rolled_back(assistant, loopline_home):
    client = tracking.client()
    first, second = _adapter_versions(client, "gatereg_adapter", 2)
    client.set_registered_model_alias("gatereg_adapter", "champion", str(first))
    client.set_registered_model_alias("gatereg_adapter", "challenger", str(second))
    gate = GateSpec(candidates=("adapter",))

    candidate, note = find_candidate(assistant, gate, "d" * 64)
    assert candidate == Candidate("adapter", "gatereg_adapter", "challenger", second, first), note
    answering = candidate.answering_config(assistant)
    assert answering.generator.adapter.alias == "challenger" and answering.prompt == assistant.prompt

    client.set_registered_model_alias("gatereg_adapter", "champion", str(second))  # a person moved it meanwhile
    with pytest.raises(tracking.ChampionMoved, match="moved from v1 to v2"):
        record_decision(candidate, passed=True, reason="passed", golden_digest="d" * 64, eval_run="r")
    assert version_tags(client, "adapter", "gatereg_adapter", second) == {}, "nothing tagged when the alias moved"
    client.set_registered_model_alias("gatereg_adapter", "champion", str(first))

    assert record_decision(candidate, passed=True, reason="passed: all checks held", golden_digest="d" * 64,
                           eval_run="r1")
    assert alias_version(client, "adapter", "gatereg_adapter", "champion") == second
    tags = version_tags(client, "adapter", "gatereg_adapter", second)
    assert (tags["loopline.gate.decision"], tags["loopline.gate.replaced"]) == ("passed", str(first))
    assert find_candidate(assistant, gate, "d" * 64)[0] is None  # @challenger is the champion now

    assert last_promotion(assistant, ("prompt", "adapter")) == ("adapter", "gatereg_adapter")
    done = roll_back("adapter", "gatereg_adapter", "refusal share 0.7 above 0.5", "run-1")
    assert (done.from_version, done.to_version, done.already) == (second, first, False)
    assert alias_version(client, "adapter", "gatereg_adapter", "champion") == first
    assert restored_by(assistant, ("adapter",), "run-1").to_version == first  # what a retry finds
    assert version_tags(client, "adapter", "gatereg_adapter", second)["loopline.gate.decision"] == "rolled_back"
    assert "rolled back" in find_candidate(assistant, gate, "e" * 64)[1], "a rolled-back version is not judged again"
    with pytest.raises(NothingToRollBack, match="replaced no earlier version"):
        roll_back("adapter", "gatereg_adapter", "again", "run-2")

    # The promotion and the rollback are audit records, with the version's own tags as provenance.
    from datetime import UTC, datetime, timedelta

    from pipelines.audit.records import events

    found = [e for e in events(datetime.now(UTC) - timedelta(hours=1)) if e.subject == "adapter gatereg_adapter"]
    assert [(e.kind, e.decision, e.version, e.previous) for e in found] == [
        ("promotion", "promoted", str(second), str(first)), ("rollback", "rolled_back", str(first), str(second))]
    assert found[0].evidence == {"eval_run": "r1", "golden_digest": "d" * 64}
    assert found[1].reason == "refusal share 0.7 above 0.5"
    assert found[0].provenance["version_tags"]["loopline.gate.decision"] == "passed"


def test_a_blocked_prompt_is_tagged_and_not_judged_again_on_the_same_golden_set(assistant, loopline_home):
    import mlflow

    client = tracking.client()
    first = int(mlflow.genai.register_prompt(name="gatereg_answer", template=MESSAGES).version)
    second = int(mlflow.genai.register_prompt(name="gatereg_answer", template=MESSAGES + [
        {"role": "user", "content": "Be brief."}]).version)
    mlflow.genai.set_prompt_alias("gatereg_answer", alias="champion", version=first)
    mlflow.genai.set_prompt_alias("gatereg_answer", alias="challenger", version=second)
    gate = GateSpec(candidates=("prompt",))

    candidate, _ = find_candidate(assistant, gate, "a" * 64)
    assert (candidate.kind, candidate.version, candidate.champion_version) == ("prompt", second, first)
    assert candidate.answering_config(assistant).prompt.alias == "challenger"
    assert not record_decision(candidate, passed=False, reason="blocked: fact_recall fell", golden_digest="a" * 64,
                               eval_run="r2")
    assert alias_version(client, "prompt", "gatereg_answer", "champion") == first
    assert version_tags(client, "prompt", "gatereg_answer", second)["loopline.gate.decision"] == "blocked"
    assert find_candidate(assistant, gate, "a" * 64)[0] is None  # judged already on this golden set
    assert find_candidate(assistant, gate, "b" * 64)[0] is not None  # a new golden set judges it again
    assert last_promotion(assistant, ("prompt",)) is None  # nothing promoted: nothing to roll back
