"""What make demo prints about a lora_tune run, from the register_adapter XCom."""

from __future__ import annotations

import pytest

from pipelines.demo.lora import summarize_run, unexpected

pytestmark = pytest.mark.unit

SUMMARY = {
    "dag_id": "assistant_lora_tune", "model_name": "assistant_adapter", "base_model": "/h/models/tiny-llama",
    "architecture": "LlamaForCausalLM", "base_model_digest": "cec135c85f92" + "0" * 52,
    "dataset_digest": "bea644ac59f9" + "0" * 52, "train_pairs": 48, "eval_pairs": 11, "base_perplexity": 123.0141,
    "tuned_perplexity": 106.8092, "improvement": 0.13173, "merge_max_abs_diff": 8.6e-06,
    "trainable_fraction": 0.009027, "adapter_bytes": 67584, "base_weights_bytes": 7198256, "steps": 60,
    "run_id": "r", "reused": False, "registered": True, "version": "1", "promoted": True, "champion": "1",
    "reason": "first adapter: eval perplexity 106.809 passed the registration gate",
}


def test_the_summary_shows_base_and_tuned_perplexity_and_the_champion():
    text = summarize_run(SUMMARY)
    assert "eval perplexity: base 123.014 → tuned 106.809 (-13.2%)" in text
    assert "registered assistant_adapter version 1" in text and "PROMOTED: first adapter" in text
    assert "adapter 66 KiB vs base weights 6.9 MiB" in text and "0.90% of the parameters trainable" in text
    assert unexpected(SUMMARY) == []


def test_a_run_that_registered_nothing_is_flagged():
    summary = {**SUMMARY, "registered": False, "version": None, "promoted": False, "champion": None,
               "tuned_perplexity": 124.0, "registration_reason": "does not improve by the margin 5.0%",
               "reason": "does not improve by the margin 5.0%"}
    assert "nothing registered" in summarize_run(summary) and "no champion yet" in summarize_run(summary)
    assert len(unexpected(summary)) == 3


def test_an_adapter_handed_to_the_gate_is_what_the_run_should_do():
    summary = {**SUMMARY, "promoted": False, "champion": None, "alias": "challenger", "challenger_set": True,
               "reason": "version 1 takes @challenger: the llm_eval gate judges its answers against the base model"}
    assert "HANDED TO THE GATE (@challenger; docs_llm_eval decides @champion): version 1" in summarize_run(summary)
    assert "no champion yet" in summarize_run(summary) and unexpected(summary) == []
