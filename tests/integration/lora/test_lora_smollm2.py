"""The default base, SmolLM2-135M-Instruct, tuned by the lora_tune steps: a short run on the real docs.

The instance's YAML with fewer, shorter steps (the default run's 16 steps of 128 tokens take minutes; the
pipeline's logic is tested on the tiny model in ``test_lora_pipeline.py``): the packaged model is converted
once per data home and used as it is, examples go through the chat template with the loss on the answer
only, the adapter lowers eval perplexity, is registered as the gate's @challenger, answers through its MLflow
pyfunc, and loads onto the assistant's generator.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.core import tracking
from pipelines.lora import steps
from pipelines.lora.config import LoraTuneConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "dags" / "configs" / "assistant_lora_tune.yaml"
NAME = "smollm2_adapter_test"
SHORT = {"dataset": {"max_tokens": 64}, "tuning": {"max_steps": 4, "batch_size": 2}}


@pytest.fixture(scope="module")
def short_run(loopline_home):
    raw = yaml.safe_load(CONFIG.read_text())
    for key, value in SHORT.items():
        raw[key] = {**raw[key], **value}
    config = LoraTuneConfig.model_validate({**raw, "instance": "smollm2test", "model_name": NAME})
    assert config.base_model == "smollm2" and config.tiny_model is None, "the instance's default base"
    base = steps.prepare_base_model(config)
    data = steps.build_dataset(config, base)
    tuned = steps.tune_adapter(config, base, data)
    evaluation = steps.evaluate_adapter(config, base, data, tuned)
    return config, base, data, tuned, steps.register_adapter(config, base, data, tuned, evaluation)


def test_the_packaged_model_is_the_base(short_run, loopline_home):
    _, base, data, _, _ = short_run
    assert Path(base["path"]).parent == loopline_home / "models"
    assert Path(base["path"]).name.startswith("smollm2-135m-instruct-")
    assert (base["architecture"], base["vocab_size"], base["built"]) == ("LlamaForCausalLM", 49152, False)
    assert data["max_tokens"] == 64 and data["examples_cut"] > 0


def test_examples_use_the_chat_template_and_learn_only_the_answer(short_run):
    from pipelines.lora.base_model import load_tokenizer
    from pipelines.lora.dataset import read_pairs
    from pipelines.lora.tuning import IGNORE, encode

    _, base, data, _, _ = short_run
    tokenizer = load_tokenizer(Path(base["path"]))
    pair = read_pairs(data["train_path"])[0]
    example = encode(pair, tokenizer, 512)
    prompt = tokenizer.decode(example.input_ids[:example.labels.count(IGNORE)])
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    assert f"<|im_start|>user\n{pair.instruction}<|im_end|>" in prompt
    learned = [t for t in example.labels if t != IGNORE]
    assert tokenizer.decode(learned) == pair.answer + "<|im_end|>"


def test_the_adapter_lowers_perplexity_and_is_registered(short_run):
    _, _, _, tuned, summary = short_run
    assert tuned["steps"] == 4
    assert summary["tuned_perplexity"] < summary["base_perplexity"] * 0.95, summary
    assert (summary["registered"], summary["alias"], summary["challenger_set"]) == (True, "challenger", True)
    assert summary["promoted"] is False, "the instance's llm_eval gate decides @champion"
    assert summary["adapter_bytes"] <= 0.02 * summary["base_weights_bytes"]
    assert 0 < summary["merge_max_abs_diff"] < 1e-3


def test_the_registered_adapter_answers_as_the_assistants_generator_does(short_run):
    """The pyfunc served from the registry and the assistant's generator with the adapter: one prompt format."""
    import mlflow
    import pandas as pd

    from pipelines.assistant import model

    _, base, _, tuned, _ = short_run
    question = 'What does the section "Training, registration and promotion > Bad input" of training.md say?'
    tracking.configure_mlflow()
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger", model_config={"max_new_tokens": 12})
    answers = served.predict(pd.DataFrame({"instruction": [question]}))
    generator = model.load(base["path"], tuned["adapter_path"])
    reply = model.generate(generator, [{"role": "user", "content": question}], max_new_tokens=12)
    assert generator.adapter == tuned["adapter_path"] and reply.tokens_out == 12
    assert answers == [reply.text]
