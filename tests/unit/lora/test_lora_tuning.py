"""LoRA on a micro Llama built in the test: the config, only adapter parameters trainable, seeded training,
the merge check, the base-model checks (missing folder, mismatched tokenizer) and the decision rules."""

from __future__ import annotations

import json
import shutil

import pytest

from pipelines.lora import base_model, evaluation, tuning
from pipelines.lora.base_model import BaseModelError
from pipelines.lora.config import LoraSpec, TinyModelSpec, TuningSpec
from pipelines.lora.dataset import Pair

pytestmark = pytest.mark.unit

TEXTS = ["# Kites\n\nA kite needs steady wind of 10 to 30 km/h; launch it with your back to the wind. " * 3,
         "# Tea\n\nGreen tea brews at 80 degrees for two minutes; black tea wants boiling water. " * 3]
MICRO = TinyModelSpec(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=400,
                      context_length=64, pretrain_steps=2, pretrain_batch_size=2, pretrain_sequence_length=32)
PAIRS = [Pair(f"p{i}", "kites.md", "Kites", f"What about kites {i}?", f"From kites.md, Kites:\n\nwind {i} km/h",
              "train") for i in range(6)]
SMALL_LORA = LoraSpec(rank=4, alpha=8, dropout=0.0)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    path = tmp_path_factory.mktemp("micro") / "model"
    base_model.build_tiny_model(path, MICRO, TEXTS)
    return path


def lora_model(path, spec=SMALL_LORA):
    return tuning.attach_lora(base_model.load_model(path), spec, seed=3)


def test_lora_config_maps_the_spec():
    config = tuning.lora_config(LoraSpec(rank=4, alpha=8, dropout=0.1, target_modules=["q_proj", "o_proj"]))
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.1)
    assert set(config.target_modules) == {"q_proj", "o_proj"}
    assert config.task_type == "CAUSAL_LM" and config.bias == "none"


def test_the_tiny_model_loads_like_a_checkpoint_and_is_kept_when_its_spec_is_unchanged(micro):
    info = base_model.check_base_model(micro)
    assert info["architecture"] == "LlamaForCausalLM" and info["tokenizer_size"] == info["vocab_size"]
    assert base_model.tiny_model_state(micro, MICRO) == "current"
    assert base_model.tiny_model_state(micro, MICRO.model_copy(update={"pretrain_steps": 3})) == "stale"
    assert base_model.model_digest(micro) == base_model.model_digest(micro)


def test_only_the_adapter_parameters_are_trainable(micro):
    model = lora_model(micro)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {"q_proj", "v_proj"}
    count, total = tuning.parameter_counts(model)
    # r * (in + out) per adapted layer: 2 layers x (q, v) x 4 x (32 + 32)
    assert count == 2 * 2 * 4 * (32 + 32) and count / total < 0.05


def test_target_modules_that_match_nothing_name_the_real_layers(micro):
    with pytest.raises(ValueError, match=r"LoRA target modules \['c_attn'\] match nothing in this model .*"
                                         r"'q_proj'"):
        lora_model(micro, LoraSpec(target_modules=["c_attn"]))


def test_encoding_masks_the_prompt_and_ends_with_eos(micro):
    tokenizer = base_model.load_tokenizer(micro)
    example = tuning.encode(PAIRS[0], tokenizer, 500)
    answered = [t for t in example.labels if t != tuning.IGNORE]
    assert example.input_ids[0] == tokenizer.bos_token_id and answered[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(answered[:-1]) == PAIRS[0].answer
    assert len(tuning.encode(PAIRS[0], tokenizer, 12).input_ids) == 12


def test_training_is_seeded_moves_only_the_adapter_and_merges_exactly(micro, tmp_path):
    tokenizer = base_model.load_tokenizer(micro)
    examples = [tuning.encode(p, tokenizer, 500) for p in PAIRS]
    spec = TuningSpec(epochs=2, learning_rate=1e-2, max_steps=5, batch_size=2, seed=7)
    runs = []
    for _ in range(2):
        model = lora_model(micro)
        frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        records = tuning.train(model, examples, spec, tokenizer.pad_token_id, "cpu")
        runs.append([round(r.loss, 6) for r in records])
        assert all((p == frozen[n]).all() for n, p in model.named_parameters() if n in frozen)
    assert runs[0] == runs[1] and len(runs[0]) == 5
    model.save_pretrained(tmp_path / "adapter")
    merged = evaluation.merged_model(micro, tmp_path / "adapter", "cpu")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert 0 < evaluation.merge_difference(model, merged, examples, tokenizer.pad_token_id, "cpu") < 1e-4
    merged.model.layers[0].self_attn.v_proj.weight.data += 0.1  # a broken merge is caught
    assert evaluation.merge_difference(model, merged, examples, tokenizer.pad_token_id, "cpu") > 1e-3
    loss, tokens = evaluation.eval_loss(model, examples, 4, tokenizer.pad_token_id, "cpu")
    assert tokens == sum(sum(t != tuning.IGNORE for t in e.labels) for e in examples)
    assert evaluation.perplexity(loss) > 1


def test_an_adapter_folder_is_reused_only_once_its_record_is_written(micro, tmp_path):
    adapter_dir = tmp_path / "adapters" / "key"
    assert tuning.recorded_run(adapter_dir) is None
    size = tuning.save_adapter(lora_model(micro), adapter_dir)
    assert size == (adapter_dir / tuning.ADAPTER_WEIGHTS).stat().st_size > 0
    assert tuning.recorded_run(adapter_dir) is None, "weights without a record: a run that stopped half-way"
    tuning.record_run(adapter_dir, {"run_id": "r1", "adapter_bytes": size})
    assert tuning.recorded_run(adapter_dir) == {"run_id": "r1", "adapter_bytes": size}
    tuning.save_adapter(lora_model(micro), adapter_dir)  # a folder is replaced whole
    assert tuning.recorded_run(adapter_dir) is None
    assert [p.name for p in (tmp_path / "adapters").iterdir()] == ["key"]


def test_gradient_checkpointing_gives_the_same_training_and_is_on_only_when_asked(micro):
    tokenizer = base_model.load_tokenizer(micro)
    examples = [tuning.encode(p, tokenizer, 500) for p in PAIRS]
    dropping = LoraSpec(rank=4, alpha=8, dropout=0.1)  # the recomputed forward must draw the same dropout masks
    runs = {}
    for checkpointing in (False, True):
        model = lora_model(micro, dropping)
        spec = TuningSpec(epochs=2, learning_rate=1e-2, max_steps=3, batch_size=2, seed=7,
                          gradient_checkpointing=checkpointing)
        losses = [r.loss for r in tuning.train(model, examples, spec, tokenizer.pad_token_id, "cpu")]
        layers = model.get_base_model().model.layers
        assert all(layer.gradient_checkpointing is checkpointing for layer in layers)
        adapter = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        runs[checkpointing] = losses, adapter
    (plain, plain_adapter), (checked, checked_adapter) = runs[False], runs[True]
    assert len(plain) == 3 and checked == pytest.approx(plain, rel=1e-5, abs=1e-6)
    assert plain_adapter.keys() == checked_adapter.keys()
    for name, value in plain_adapter.items():  # the same gradients reached the adapters, step after step
        assert (value - checked_adapter[name]).abs().max() < 1e-5, name


def test_one_step_with_checkpointing_has_the_loss_and_gradients_of_one_without(micro):
    import torch

    tokenizer = base_model.load_tokenizer(micro)
    examples = [tuning.encode(p, tokenizer, 500) for p in PAIRS[:4]]
    ids, mask, labels = next(tuning.batches(examples, 4, tokenizer.pad_token_id))
    results = []
    for checkpointing in (False, True):
        model = lora_model(micro)
        if checkpointing:
            tuning.enable_checkpointing(model)
        model.train()
        torch.manual_seed(0)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        reached = [g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n]
        assert reached and all(reached), "gradients reach every lora_B through the frozen, checkpointed layers"
        results.append((float(loss.detach()), grads))
    (loss, grads), (checked_loss, checked_grads) = results
    assert checked_loss == pytest.approx(loss, rel=1e-6)
    assert all(torch.allclose(grads[n], checked_grads[n], rtol=1e-4, atol=1e-7) for n in grads)


def test_the_tuning_key_ignores_where_it_runs():
    key = tuning.tuning_key(LoraSpec(), TuningSpec(), "base", "data", 256)
    assert key == tuning.tuning_key(LoraSpec(), TuningSpec(device="cpu", cpu_threads=1), "base", "data", 256)
    assert key == tuning.tuning_key(LoraSpec(), TuningSpec(gradient_checkpointing=True), "base", "data", 256), (
        "checkpointing changes memory and time, not what is learned: the same adapter is reused")
    assert TuningSpec().gradient_checkpointing is False
    assert key != tuning.tuning_key(LoraSpec(rank=4), TuningSpec(), "base", "data", 256)
    assert key != tuning.tuning_key(LoraSpec(), TuningSpec(), "base", "other data", 256)


def test_a_missing_base_model_folder_is_named(tmp_path):
    with pytest.raises(BaseModelError, match=rf"base model folder {tmp_path / 'nope'} does not exist: point "
                                             r"base_model .* nothing was tuned or registered"):
        base_model.check_base_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaseModelError, match="has no config.json"):
        base_model.check_base_model(tmp_path / "empty")


def test_a_tokenizer_larger_than_the_embedding_is_refused(micro, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(micro, bad)
    tokenizer = base_model.load_tokenizer(bad)
    tokenizer.add_tokens([f"extra{i}" for i in range(500)])
    tokenizer.save_pretrained(bad)
    with pytest.raises(BaseModelError, match=r"tokenizer and model in .* do not match: the tokenizer has \d+ tokens "
                                             r"but the model's embedding has \d+ rows"):
        base_model.check_base_model(bad)


def test_a_tokenizer_with_another_eos_is_refused(micro, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(micro, bad)
    config = json.loads((bad / "config.json").read_text())
    config["eos_token_id"] = 7
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(BaseModelError, match=r"the model's eos_token_id is 7 but the tokenizer's is 2"):
        base_model.check_base_model(bad)


def test_registration_needs_the_margin():
    assert evaluation.registration_decision(100.0, 90.0, 0.05).promote
    no = evaluation.registration_decision(100.0, 97.0, 0.05)
    assert not no.promote and no.reason == ("eval perplexity 97.000 against the base model's 100.000 (+3.0%) does not "
                                        "improve by the margin 5.0%; nothing registered")


def test_the_champion_moves_only_on_improvement():
    assert evaluation.champion_decision(50.0, None, 0.0).promote
    better = evaluation.champion_decision(50.0, {"version": "1", "perplexity": 55.0}, 0.0)
    assert better.promote and "against champion v1's 55.000" in better.reason
    worse = evaluation.champion_decision(56.0, {"version": "1", "perplexity": 55.0}, 0.0)
    assert not worse.promote and worse.reason.endswith("does not beat it by more than 0.0%")
    unscored = {"version": "1", "perplexity": None, "why_not_scored": "another base"}
    other = evaluation.champion_decision(40.0, unscored, 0.0)
    assert not other.promote and "cannot be compared on this eval split (another base)" in other.reason
    forced = evaluation.champion_decision(56.0, {"version": "1", "perplexity": 55.0}, 0.0, force=True)
    assert forced.promote and forced.reason.startswith("forced by the run's force_promote; the rule said:")
