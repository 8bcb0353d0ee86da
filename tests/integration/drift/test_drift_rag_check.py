"""The retrieval drift check on a small index built here: no live index, a quiet day, then a rewritten
corpus and off-topic queries that fire and emit the reindex Asset's evidence."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time, timedelta

import pytest

from pipelines.core.home import DataHome
from pipelines.core.settings import get_settings
from support.toy_corpus import CORPUS, QUESTIONS

pytestmark = pytest.mark.integration

REWRITTEN = {
    "kites.md": "# Tax returns\n\nFile the annual return before the end of April; keep receipts for seven years.",
    "tea.md": "# Databases\n\nAn index on the join column turns a nested-loop join into an index lookup.",
    "bikes.md": "# Volcanoes\n\nBasaltic lava flows fast and far; andesitic magma traps gas and erupts violently.",
}
DAY = date(2026, 11, 20)


def at(day: date) -> datetime:
    return datetime.combine(day, time(4), tzinfo=UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ragdrift")
    home = root / "home"
    before = os.environ.get("LOOPLINE_HOME")
    os.environ["LOOPLINE_HOME"] = str(home)
    get_settings.cache_clear()
    corpus = root / "corpus"
    corpus.mkdir()
    for name, text in CORPUS.items():
        (corpus / name).write_text(text)
    questions = root / "questions.yaml"
    questions.write_text("questions:\n" + "".join(f"  - question: {q}\n    source: {s}\n" for q, s in QUESTIONS))
    rag_yaml = root / "ragdrift_rag_index.yaml"
    rag_yaml.write_text(f"template: rag_index\ninstance: ragdrift\ncorpus: {{path: {corpus}}}\n"
                        "chunker: {size_chars: 200, overlap_chars: 40}\n"
                        f"evaluation: {{questions: {questions}, k: 2, modes: [vector]}}\n")
    yield get_settings(), rag_yaml, corpus
    os.environ["LOOPLINE_HOME"] = before or ""
    get_settings.cache_clear()


def drift_config(rag_yaml, **rag):
    from pipelines.drift.config import DriftCheckConfig

    return DriftCheckConfig.model_validate({"template": "drift_check", "kind": "rag", "instance": "ragdrift",
                                            "window_days": 3, "rag": {"rag_config": str(rag_yaml), "min_queries": 5,
                                                                      **rag}})


def test_the_rag_loop(world):
    from pipelines.drift import checks, steps
    from pipelines.drift.rag import log_queries
    from pipelines.drift.targets import target_asset, target_config
    from pipelines.rag.steps import run_once

    settings, rag_yaml, corpus = world
    config = drift_config(rag_yaml)
    target = target_asset(config)
    assert (target.name, target.uri, target.dag_id) == ("ragdrift_reindex", "loopline://reindex/ragdrift",
                                                        "ragdrift_rag_index")

    with pytest.raises(checks.NothingToCheck, match="index ragdrift has no live version yet"):
        steps.check_drift(config, "before_index", at(DAY), settings=settings)

    run_once(target_config(str(rag_yaml), "rag_index"), "build", settings)
    log_queries("ragdrift", DAY - timedelta(days=1), [q for q, _ in QUESTIONS] * 2, settings)
    quiet = steps.check_drift(config, "quiet", at(DAY), settings=settings)
    verdict = steps.judge_drift(config, quiet, settings=settings)
    assert not verdict["drifted"], verdict["reasons"]
    assert quiet["hit_rate"] == quiet["baseline_hit_rate"] == {"vector": 1.0}
    assert quiet["corpus_change_share"] == 0.0 and quiet["corpus_drift"] == pytest.approx(0.0, abs=1e-6)
    assert quiet["queries"] == 8 and quiet["query_drift"] < 0.15
    assert DataHome(settings).drift_report("ragdrift", DAY - timedelta(days=1)).exists()

    for name, text in REWRITTEN.items():
        (corpus / name).write_text(text)
    log_queries("ragdrift", DAY, ["how do I file a tax return", "what is a nested loop join",
                                  "why do volcanoes erupt", "cheap flights to Lisbon", "best pizza dough"], settings)
    drifted = steps.check_drift(config, "drifted", at(DAY + timedelta(days=1)), settings=settings)
    verdict = steps.judge_drift(config, drifted, settings=settings)
    assert verdict["drifted"]
    assert {"corpus_change", "corpus_drift"} <= set(verdict["signals"])
    assert drifted["corpus_change_share"] > 0.5
    extra = steps.emit_trigger(config, target, drifted, verdict, "drifted", at(DAY + timedelta(days=1)), 1,
                               settings=settings)
    assert extra["action"] == "reindex" and extra["corpus_change_share"] == drifted["corpus_change_share"]
    assert extra["reference"]["live_version"] == "ragdrift_v1"
