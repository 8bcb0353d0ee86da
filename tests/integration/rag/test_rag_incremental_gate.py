"""Incremental updates pass the same evaluation gate as full builds, before readers see them."""

from __future__ import annotations

import pytest
import yaml

from pipelines.rag import plans
from pipelines.rag import steps as rag_steps
from pipelines.rag.config import RagIndexConfig
from pipelines.rag.evaluation import GateBlocked
from pipelines.rag.stores import open_store
from support.toy_corpus import CORPUS, QUESTIONS

pytestmark = pytest.mark.integration


def test_an_update_that_loses_answers_is_blocked_and_the_live_version_keeps_them(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in CORPUS.items():
        (corpus / name).write_text(text)
    questions = tmp_path / "questions.yaml"
    questions.write_text(yaml.safe_dump({"questions": [{"question": q, "source": s} for q, s in QUESTIONS]}))
    config = RagIndexConfig.model_validate({
        "template": "rag_index", "instance": "raggate", "corpus": {"path": str(corpus)},
        "chunker": {"size_chars": 200, "overlap_chars": 40},
        "evaluation": {"questions": str(questions), "k": 2, "min_hit_rate": 0.5},
    })
    rag_steps.run_once(config, "first")
    with open_store("lancedb", "raggate") as store:
        before = store.chunk_ids("raggate_v1")
    (corpus / "tea.md").unlink()  # two of the four questions lose their answer
    (corpus / "owls.txt").unlink()
    (corpus / "gulls.md").write_text("# Gulls\n\nGulls eat fish and crabs.")
    plan = rag_steps.plan_index(config, "losing")
    assert plan["mode"] == "incremental"
    rag_steps.embed_chunks(config, plan)
    with pytest.raises(GateBlocked, match=r"the update of raggate_v1 of index raggate \(plan \w+: 1 new, 0 changed, "
                                          r"2 deleted documents\) is blocked by the evaluation gate: vector hit@2 "
                                          r".*raggate_v1 stays live as it was"):
        rag_steps.evaluate_index(config, plan, "losing")
    with pytest.raises(GateBlocked, match="has not passed the evaluation gate"):
        rag_steps.publish_index(config, plan, "losing")
    with open_store("lancedb", "raggate") as store:
        assert store.live_version() == "raggate_v1" and store.chunk_ids("raggate_v1") == before
        assert not [n for n in store.db.list_tables().tables if "_preview_" in n], "the preview was dropped"
    assert plans.read_gate(plans.paths(config).staged(plan["plan_id"]))["promote"] is False

    (corpus / "owls.txt").write_text(CORPUS["owls.txt"])  # put the answers back: a harmless update passes
    (corpus / "tea.md").write_text(CORPUS["tea.md"])
    summary = rag_steps.run_once(config, "harmless")
    assert (summary["mode"], summary["action"], summary["gate"]) == ("incremental", "updated_in_place",
                                                                   "no regression beyond the bounds")
    with open_store("lancedb", "raggate") as store:
        assert "gulls.md" in set(store.chunk_ids("raggate_v1").values())
