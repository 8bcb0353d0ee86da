"""LoRA benchmark (``make bench``): LoRA against full fine-tuning of the same model and batch, side by side.

Sizes: ``tiny`` and ``medium`` are Llama models of random weights; ``smollm2`` is the real SmolLM2-135M-Instruct,
the template's default base (the packaged GGUF converted once under ``$LOOPLINE_HOME``, loaded in float32), with
the default run's batch (4 examples of 128 tokens). Whether the tuned adapter answers better is measured by
``tests/benchmarks/bench_lora_answers.py`` (answer metrics, base against base + adapter).

For each model size, each mode runs in a fresh Python process of its own (the same script with ``--child``),
one after the other, so neither inherits the other's allocator state:

1. import torch, transformers and peft; build the Llama model from a fixed seed (random weights: memory and
   speed do not depend on what the weights are), or load SmolLM2; read the process's peak RSS
   (``ru_maxrss``): the *baseline*.
2. ``lora``: PEFT LoRA with the template's defaults (r=8, alpha 16, dropout 0.05 on q_proj, v_proj), only the
   adapter trainable. ``full``: every parameter trainable. Both: AdamW, the same seeded batch of token ids,
   one untimed warm-up step (AdamW allocates its state there), then ``--steps`` timed steps.
3. peak RSS of the process at the end (``ru_maxrss``, the kernel's high-water mark: it counts every byte torch
   allocated, nothing is sampled); *training memory* is peak minus baseline (gradients, optimizer state,
   activations); *model + training* is peak minus the RSS before the model was built or loaded (what the
   weights and the training add to a process of torch and its libraries). On CUDA,
   ``torch.cuda.max_memory_allocated`` as well.
4. tokens/s = batch tokens x timed steps / their wall time; the trainable share; the adapter's file
   (``adapter_model.safetensors``) against the model's (``model.safetensors``), both written with
   ``save_pretrained``.

With ``--checkpointing`` each mode also runs a second time with gradient (activation) checkpointing, as the
template applies it with ``tuning.gradient_checkpointing`` (``pipelines.lora.tuning.enable_checkpointing``), and
the peak ratio is printed three ways: neither mode checkpointed, both (the like-for-like comparison), and LoRA
only against full fine-tuning without it.

Run: ``python tests/benchmarks/bench_lora.py`` (about 4 minutes on 2 cores, SmolLM2's full fine-tune most of
it); ``--sizes tiny`` for a quick look, ``--sizes smollm2`` for the real model alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {
    # The template's default tiny model (its spec in pipelines/lora/config.py), the default batch.
    "tiny": {"hidden_size": 128, "intermediate_size": 344, "num_layers": 4, "num_heads": 4, "vocab_size": 4096,
             "batch": 8, "seq": 256},
    # Large enough that weights, gradients and AdamW state outweigh torch's own footprint, still CPU-feasible.
    "medium": {"hidden_size": 768, "intermediate_size": 2048, "num_layers": 12, "num_heads": 12, "vocab_size": 16000,
               "batch": 2, "seq": 128},
    # The real default base model and the default run's batch (tuning.batch_size 4, dataset.max_tokens 128).
    "smollm2": {"pretrained": "smollm2", "batch": 4, "seq": 128},
}


def load_model(size: dict, device: str):
    """The model of a size: SmolLM2 from the data home (float32), or a seeded random Llama."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if size.get("pretrained"):
        from pipelines.assistant.model import prepare

        path = prepare(size["pretrained"]).path  # converted once per data home
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        return model.to(device)
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=size["vocab_size"], hidden_size=size["hidden_size"], intermediate_size=size["intermediate_size"],
        num_hidden_layers=size["num_layers"], num_attention_heads=size["num_heads"],
        num_key_value_heads=size["num_heads"], max_position_embeddings=max(256, size["seq"]),
        tie_word_embeddings=False)).to(device)


def child(mode: str, size: dict, steps: int, threads: int, checkpointing: bool = False) -> dict:
    import resource

    import torch

    from pipelines.lora.config import LoraSpec
    from pipelines.lora.tuning import attach_lora, enable_checkpointing, parameter_counts

    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    imports_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the process before any model
    model = load_model(size, device)
    vocab = model.config.vocab_size
    if mode == "lora":
        model = attach_lora(model, LoraSpec(), seed=0)
    if checkpointing:
        enable_checkpointing(model)
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        baseline_cuda = torch.cuda.memory_allocated()
    trainable, total = parameter_counts(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    batch = torch.randint(0, vocab, (size["batch"], size["seq"]), generator=generator).to(device)

    def step() -> None:
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: AdamW's state is allocated here
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "mode": mode, "checkpointing": checkpointing, "device": device, "threads": threads,
        "trainable": trainable, "total": total, "vocab": vocab,
        "layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size,
        "imports_mib": imports_kib / 1024, "baseline_mib": baseline_kib / 1024, "peak_mib": peak_kib / 1024,
        "model_mib": (peak_kib - imports_kib) / 1024,
        "training_mib": (peak_kib - baseline_kib) / 1024,
        "tokens_per_s": size["batch"] * size["seq"] * steps / seconds, "step_s": seconds / steps,
    }
    if device == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["cuda_training_mib"] = (torch.cuda.max_memory_allocated() - baseline_cuda) / 2**20
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        name = "adapter_model.safetensors" if mode == "lora" else "model.safetensors"
        result["file_bytes"] = (Path(folder) / name).stat().st_size
    return result


def run_mode(mode: str, size_name: str, steps: int, threads: int, checkpointing: bool = False) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--size", size_name, "--steps", str(steps),
                          "--threads", str(threads)] + (["--child-checkpointing"] if checkpointing else []),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, the same for both modes")
    parser.add_argument("--child", choices=["lora", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true",
                        help="also run both modes with gradient checkpointing and compare the peaks")
    parser.add_argument("--size", choices=list(SIZES), help=argparse.SUPPRESS)
    parser.add_argument("--child-checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, SIZES[args.size], args.steps, args.threads, args.child_checkpointing)))
        return

    for name in args.sizes:
        size = SIZES[name]
        steps = args.steps if name == "tiny" else max(2, args.steps // 2)
        lora, full = run_mode("lora", name, steps, args.threads), run_mode("full", name, steps, args.threads)
        what = "SmolLM2-135M-Instruct (float32)" if size.get("pretrained") else "Llama (random weights)"
        print(f"== {name}: {what}, hidden {full['hidden']}, {full['layers']} layers, vocabulary "
              f"{full['vocab']}: {full['total']:,} parameters; batch {size['batch']} x {size['seq']} tokens, "
              f"{steps} timed steps, {lora['device']}, {args.threads} thread(s)")
        print(f"  {'':26}{'LoRA':>12}{'full':>12}{'ratio':>8}")
        rows = [("trainable parameters", lora["trainable"], full["trainable"], "{:,}"),
                ("baseline RSS (MiB)", lora["baseline_mib"], full["baseline_mib"], "{:.0f}"),
                ("peak RSS (MiB)", lora["peak_mib"], full["peak_mib"], "{:.0f}"),
                ("training memory (MiB)", lora["training_mib"], full["training_mib"], "{:.0f}"),
                ("model + training (MiB)", lora["model_mib"], full["model_mib"], "{:.0f}"),
                ("tokens/s", lora["tokens_per_s"], full["tokens_per_s"], "{:.0f}")]
        if "cuda_peak_mib" in lora:
            rows.append(("CUDA peak (MiB)", lora["cuda_peak_mib"], full["cuda_peak_mib"], "{:.0f}"))
        for label, a, b, fmt in rows:
            print(f"  {label:26}{fmt.format(a):>12}{fmt.format(b):>12}{a / b:>8.3f}")
        peak_ratio = lora["peak_mib"] / full["peak_mib"]
        size_ratio = lora["file_bytes"] / full["file_bytes"]
        print(f"  trainable fraction {lora['trainable'] / lora['total']:.3%}; adapter file {lora['file_bytes']:,} B "
              f"vs model file {full['file_bytes']:,} B = {size_ratio:.2%} (goal <= 2%: "
              f"{'met' if size_ratio <= 0.02 else 'NOT met'})")
        print(f"  peak memory LoRA / full = {peak_ratio:.3f} "
              f"(goal <= 0.6: {'met' if peak_ratio <= 0.6 else 'NOT met'}); "
              f"training memory only: {lora['training_mib'] / max(full['training_mib'], 1e-9):.3f}; peak less "
              f"the process before the model (torch and the libraries, {lora['imports_mib']:.0f} MiB): "
              f"{lora['model_mib'] / max(full['model_mib'], 1e-9):.3f}")
        if args.checkpointing:
            report_checkpointing(lora, full, run_mode("lora", name, steps, args.threads, True),
                                 run_mode("full", name, steps, args.threads, True))


def report_checkpointing(lora: dict, full: dict, lora_gc: dict, full_gc: dict) -> None:
    """Both modes with and without gradient checkpointing: the peaks, the speed, and three peak ratios."""
    print("  with gradient checkpointing (non-reentrant, every decoder layer):")
    print(f"  {'':26}{'LoRA':>12}{'LoRA+GC':>12}{'full':>12}{'full+GC':>12}")
    rows = [("peak RSS (MiB)", "peak_mib", "{:.0f}"), ("training memory (MiB)", "training_mib", "{:.0f}"),
            ("model + training (MiB)", "model_mib", "{:.0f}"), ("tokens/s", "tokens_per_s", "{:.1f}")]
    if "cuda_peak_mib" in lora:
        rows.append(("CUDA peak (MiB)", "cuda_peak_mib", "{:.0f}"))
    for label, key, fmt in rows:
        print(f"  {label:26}" + "".join(f"{fmt.format(r[key]):>12}" for r in (lora, lora_gc, full, full_gc)))
    for label, a, b in (("neither checkpointed", lora, full), ("both checkpointed", lora_gc, full_gc),
                        ("LoRA checkpointed, full not", lora_gc, full)):
        ratio = a["peak_mib"] / b["peak_mib"]
        print(f"  peak memory LoRA / full, {label}: {ratio:.3f} (goal <= 0.6: {'met' if ratio <= 0.6 else 'NOT met'})"
              f"; model + training only: {a['model_mib'] / max(b['model_mib'], 1e-9):.3f}")
    print(f"  checkpointing's cost in tokens/s: LoRA x{lora_gc['tokens_per_s'] / lora['tokens_per_s']:.2f}, "
          f"full x{full_gc['tokens_per_s'] / full['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
