"""Who promotes a registered adapter (the llm_eval gate or the perplexity rule), what the gate is handed, the
lineage an adapter records, the step log, and what the assistant serves while no adapter is champion."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pipelines.core.assets import AssetRef, adapter_candidate, rag_index
from pipelines.lora.config import EvaluationSpec, LoraTuneConfig
from pipelines.lora.evaluation import CandidateMove, candidate_move

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "dags" / "configs" / "assistant_lora_tune.yaml"
MINIMAL = {"template": "lora_tune", "instance": "helpdesk"}


def test_the_assistant_instance_hands_its_adapters_to_the_gate_and_the_default_is_perplexity():
    assistant = LoraTuneConfig.model_validate(yaml.safe_load(CONFIG.read_text()))
    assert (assistant.evaluation.promotion, assistant.evaluation.candidate_alias) == ("gate", "challenger")
    assert assistant.candidate_asset_ref == AssetRef("assistant_adapter_candidate",
                                                     "loopline://adapter-candidate/assistant_adapter")
    plain = LoraTuneConfig.model_validate(MINIMAL)
    assert plain.evaluation.promotion == "perplexity" and plain.candidate_asset_ref is None


def test_the_candidate_asset_is_keyed_by_the_model_name_both_sides_know():
    assert adapter_candidate("x_adapter") == AssetRef("x_adapter_candidate", "loopline://adapter-candidate/x_adapter")
    assert adapter_candidate("x_adapter").uri != rag_index("x").uri


@pytest.mark.parametrize(("evaluation", "message"), [
    ({"promotion": "llm"}, "Input should be 'gate' or 'perplexity'"),
    ({"candidate_alias": "champion"}, "evaluation.candidate_alias cannot be 'champion'"),
    ({"candidate_alias": "bad alias"}, "String should match pattern"),
])
def test_a_bad_promotion_setting_is_refused(evaluation, message):
    with pytest.raises(ValidationError, match=message):
        EvaluationSpec.model_validate(evaluation)


@pytest.mark.parametrize(("version", "champion", "challenger", "force", "expected"), [
    ("1", None, None, False, CandidateMove("challenger", True, "version 1 takes @challenger: the llm_eval gate judges "
                                           "its answers against the base model alone (no adapter is champion yet)")),
    ("3", "1", "2", False, CandidateMove("challenger", True, "version 3 takes @challenger, replacing v2 there: the "
                                         "llm_eval gate judges its answers against champion v1")),
    ("2", "1", "2", False, CandidateMove(None, False, "version 2 is @challenger already (same inputs as before); "
                                         "the gate was told when it got the alias")),
    ("1", "1", "2", False, CandidateMove(None, False, "version 1 is already the champion (same inputs as before)")),
    ("1", "1", None, True, CandidateMove(None, False, "version 1 is already the champion (same inputs as before)")),
    ("2", None, "2", True, CandidateMove("champion", False, "forced by the run's force_promote: version 2 takes "
                                         "@champion without the llm_eval gate (which would judge it against the base "
                                         "model alone (no adapter is champion yet))")),
])
def test_what_a_registered_version_gets_under_the_gate(version, champion, challenger, force, expected):
    assert candidate_move(version, champion, challenger, "challenger", force=force) == expected


def test_the_step_line_says_where_the_run_is_and_when_it_ends():
    from pipelines.lora.tuning import StepRecord, progress_line

    line = progress_line(StepRecord(step=4, epoch=1, loss=2.34567, learning_rate=1e-3, tokens=400, elapsed_s=20.0),
                         total=16, tokens_so_far=1600)
    assert line == ("LoRA step 4/16 (epoch 1): loss 2.3457, lr 1.00e-03, 80 tokens/s, 5.00 s/step, ETA 60 s")


def test_the_step_log_reports_every_step_of_a_short_run(caplog):
    """A default run has 16 steps: each is a line (step n/N, loss, tokens/s, ETA) in the task log."""
    import torch

    from pipelines.lora.tuning import Example, train

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.out = torch.nn.Linear(4, 10)

        def forward(self, input_ids, attention_mask, labels):
            logits = self.out(self.emb(input_ids))
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), labels.reshape(-1), ignore_index=-100)
            return type("Out", (), {"loss": loss})()

    tuning = LoraTuneConfig.model_validate({**MINIMAL, "tuning": {"max_steps": 4, "batch_size": 1}}).tuning
    examples = [Example([1, 2, 3], [-100, 2, 3])] * 4
    with caplog.at_level("INFO", logger="pipelines.lora.tuning"):
        records = train(Tiny(), examples, tuning, 0, "cpu")
    lines = [r.getMessage() for r in caplog.records if "LoRA step" in r.getMessage()]
    assert len(records) == 4 and [line.split(" (")[0] for line in lines] == [f"LoRA step {n}/4" for n in range(1, 5)]
    assert all("tokens/s" in line and "ETA" in line for line in lines)
    assert "on cpu (" in caplog.records[0].getMessage(), "the device and its threads are in the log"


def test_cuda_is_used_when_torch_sees_it(monkeypatch):
    import torch

    from pipelines.lora.tuning import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == "cuda" and pick_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == "cpu"


def test_lineage_records_the_live_index_version_or_none(tmp_path):
    from pipelines.core.settings import LooplineSettings
    from pipelines.lora.lineage import INDEX_VERSION_TAG, lineage_tags, live_index_version
    from pipelines.rag import versions
    from pipelines.templates import load_named

    settings = LooplineSettings(home=tmp_path)
    docs = rag_index("docs")
    assert live_index_version(None, settings) == (None, None)
    assert live_index_version(AssetRef("x_index", "loopline://rag/nowhere"), settings) == (None, None)
    assert live_index_version(docs, settings) == ("docs_rag_index", None), "no version went live yet"
    catalog = versions.VersionCatalog(versions.catalog_path(load_named("docs_rag_index", "rag_index"), settings))
    catalog.mark_live("v3", None, reason="test")
    assert live_index_version(docs, settings) == ("docs_rag_index", "v3")
    assert lineage_tags("c" * 64, "docs_rag_index", "v3")[INDEX_VERSION_TAG] == "v3"
    assert lineage_tags("c" * 64, None, None) == {"loopline.lineage.corpus_digest": "c" * 64,
                                                  "loopline.lineage.index": "none",
                                                  "loopline.lineage.index_version": "none"}


# --- what the assistant serves: the base model until an adapter is champion ---------------------------------------

def _generator(**adapter):
    from pipelines.assistant.config import GeneratorSpec

    return GeneratorSpec.model_validate({"backend": "llama_cpp", "adapter": {"model_name": "docs_lora", **adapter}})


def test_llama_cpp_with_an_adapter_needs_when_missing_base():
    assert _generator(when_missing="base").adapter.when_missing == "base"
    with pytest.raises(ValidationError, match="needs backend: transformers .* or when_missing: base"):
        _generator()


def test_the_base_model_answers_until_the_adapter_is_in_the_registry(monkeypatch):
    from pipelines.assistant import model

    def missing(name, alias, settings=None):
        raise model.AdapterMissing(f"generator.adapter: {name}@{alias} is not in the MLflow registry")

    monkeypatch.setattr(model, "adapter_folder", missing)
    served = model.resolve_generator(_generator(when_missing="base"))
    assert (served.backend, served.adapter_path, served.adapter_version) == ("llama_cpp", None, None)
    assert served.note.startswith("docs_lora@champion is not in the registry yet: the base model alone (llama_cpp)")
    strict = _generator(when_missing="base").model_copy(update={"backend": "transformers"})
    strict = strict.model_copy(update={"adapter": strict.adapter.model_copy(update={"when_missing": "fail"})})
    with pytest.raises(model.AdapterMissing, match="docs_lora@champion is not in the MLflow registry"):
        model.resolve_generator(strict)

    monkeypatch.setattr(model, "adapter_folder", lambda name, alias, settings=None: (Path("/a/v2/adapter"), "2"))
    served = model.resolve_generator(_generator(when_missing="base"))
    assert (served.backend, served.adapter_path, served.adapter_version) == ("transformers", "/a/v2/adapter",
                                                                             "docs_lora/2")
    plain = model.resolve_generator(_generator(when_missing="base").model_copy(update={"adapter": None}))
    assert (plain.backend, plain.adapter_path) == ("llama_cpp", None)


def test_the_llm_eval_dag_also_runs_on_the_adapter_candidate_of_its_assistant(tmp_path):
    """When the assistant has generator.adapter (and the gate judges adapters), its lora_tune Asset is scheduled."""
    import sys

    from pipelines.assistant.config import AssistantConfig
    from pipelines.core.assets import prompt_candidate
    from pipelines.llm_eval.config import LlmEvalConfig

    sys.path.insert(0, str(REPO / "dags"))
    from loopline_templates.llm_eval import _schedule

    assistant = yaml.safe_load((REPO / "dags" / "configs" / "docs_assistant.yaml").read_text())
    assistant["generator"]["adapter"] = {"model_name": "assistant_adapter", "when_missing": "base"}
    path = tmp_path / "docs_assistant.yaml"
    path.write_text(yaml.safe_dump(AssistantConfig.model_validate(assistant).model_dump(mode="json")))
    raw = yaml.safe_load((REPO / "dags" / "configs" / "docs_llm_eval.yaml").read_text())

    def scheduled(**changes) -> list[str]:
        config = LlmEvalConfig.model_validate({**raw, **changes})
        timetable = _schedule(config, rag_index("docs"), prompt_candidate("docs"))
        (either,) = timetable.asset_condition.objects
        return [a.name for a in either.objects]

    assert scheduled(assistant=str(path)) == ["docs_index", "docs_prompt_candidate", "assistant_adapter_candidate"]
    assert scheduled(assistant=str(path), gate={**raw["gate"], "candidates": ["prompt"]}) == [
        "docs_index", "docs_prompt_candidate"]
