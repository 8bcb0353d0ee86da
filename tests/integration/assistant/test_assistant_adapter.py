"""A LoRA adapter from the MLflow registry on top of SmolLM2: registered as lora_tune registers one, loaded by
alias, downloaded once, reported in the answer; an adapter that is not in the registry is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from support.assistant_world import assistant_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def registered_adapter(assistant_world, tmp_path_factory):
    """An untrained LoRA (its B matrices are zero: same outputs as the base) on the converted model, logged and
    registered with the lora domain's own functions, with the champion alias."""
    import mlflow
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pipelines.core import tracking
    from pipelines.lora.experiment import log_adapter

    settings = assistant_world.settings
    base = assistant_world.generator["path"]
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(folder)
    tracking.client(settings)
    with mlflow.start_run(experiment_id=tracking.experiment_id("asktoy_adapter_test", settings)):
        uri = log_adapter(folder, base, {"eval_perplexity": 1.0})
    version = mlflow.register_model(uri, "asktoy_adapter").version
    tracking.promote("asktoy_adapter", version, "test adapter", settings)
    return "asktoy_adapter", str(version)


def test_the_champion_adapter_is_loaded_and_reported(assistant_world, registered_adapter):
    from pipelines.assistant import steps
    from pipelines.assistant.answer import answer

    name, version = registered_adapter
    config = assistant_config(assistant_world.rag_yaml, generator={"adapter": {"model_name": name}})
    prepared = steps.prepare_generator(config, assistant_world.settings)
    assert prepared["adapter_version"] == f"{name}/{version}"
    folder = assistant_world.settings.data_home / "models" / "adapters" / name / f"v{version}"
    assert (folder / "loopline_model.json").exists()
    result = answer("What is the capital of France?", config, assistant_world.settings, now=DAY)
    assert result.adapter_version == f"{name}/{version}" and result.refused


def test_an_adapter_missing_from_the_registry_is_refused(assistant_world):
    from pipelines.assistant.answer import answer
    from pipelines.assistant.model import GeneratorUnavailable

    config = assistant_config(assistant_world.rag_yaml, generator={"adapter": {"model_name": "no_such_adapter"}})
    with pytest.raises(GeneratorUnavailable, match="generator.adapter: no_such_adapter@champion is not in the MLflow"):
        answer("How much wind does a kite need?", config, assistant_world.settings, now=DAY)


def test_an_adapter_of_another_base_model_is_refused(assistant_world, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipelines.assistant import model

    tiny = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, vocab_size=512))
    get_peft_model(tiny, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")).save_pretrained(
        tmp_path / "tiny_adapter")
    with pytest.raises(model.GeneratorUnavailable) as caught:
        model.load(assistant_world.generator["path"], str(tmp_path / "tiny_adapter"))
    message = str(caught.value)
    assert "does not fit the generator" in message and "size mismatch" in message
    assert "an adapter only loads onto the base model it was tuned on" in message
