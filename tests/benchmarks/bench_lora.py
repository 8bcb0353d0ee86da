"""LoRA benchmark (``make bench``): LoRA against full fine-tuning of the same model and batch, side by side.

For each model size, each mode runs in a fresh Python process of its own (the same script with ``--child``),
one after the other, so neither inherits the other's allocator state:

1. import torch, transformers and peft; build the Llama model from a fixed seed (random weights: memory and
   speed do not depend on what the weights are); read the process's peak RSS (``ru_maxrss``): the *baseline*.
2. ``lora``: PEFT LoRA with the template's defaults (r=8, alpha 16, dropout 0.05 on q_proj, v_proj), only the
   adapter trainable. ``full``: every parameter trainable. Both: AdamW, the same seeded batch of token ids,
   one untimed warm-up step (AdamW allocates its state there), then ``--steps`` timed steps.
3. peak RSS of the process at the end (``ru_maxrss``, the kernel's high-water mark: it counts every byte torch
   allocated, nothing is sampled); *training memory* is peak minus baseline (gradients, optimizer state,
   activations). On CUDA, ``torch.cuda.max_memory_allocated`` instead.
4. tokens/s = batch tokens x timed steps / their wall time; the trainable share; the adapter's file
   (``adapter_model.safetensors``) against the model's (``model.safetensors``), both written with
   ``save_pretrained``.

Run: ``python tests/benchmarks/bench_lora.py`` (about 3 minutes on 2 cores); ``--sizes tiny`` for a quick look.
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
}


def child(mode: str, size: dict, steps: int, threads: int) -> dict:
    import resource

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipelines.lora.config import LoraSpec
    from pipelines.lora.tuning import attach_lora, parameter_counts

    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=size["vocab_size"], hidden_size=size["hidden_size"], intermediate_size=size["intermediate_size"],
        num_hidden_layers=size["num_layers"], num_attention_heads=size["num_heads"],
        num_key_value_heads=size["num_heads"], max_position_embeddings=max(256, size["seq"]),
        tie_word_embeddings=False)).to(device)
    if mode == "lora":
        model = attach_lora(model, LoraSpec(), seed=0)
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        baseline_cuda = torch.cuda.memory_allocated()
    trainable, total = parameter_counts(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    batch = torch.randint(0, size["vocab_size"], (size["batch"], size["seq"]), generator=generator).to(device)

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
        "mode": mode, "device": device, "threads": threads, "trainable": trainable, "total": total,
        "baseline_mib": baseline_kib / 1024, "peak_mib": peak_kib / 1024,
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


def run_mode(mode: str, size_name: str, steps: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--size", size_name, "--steps", str(steps),
                          "--threads", str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, the same for both modes")
    parser.add_argument("--child", choices=["lora", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=list(SIZES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, SIZES[args.size], args.steps, args.threads)))
        return

    for name in args.sizes:
        size = SIZES[name]
        steps = args.steps if name == "tiny" else max(2, args.steps // 2)
        lora, full = run_mode("lora", name, steps, args.threads), run_mode("full", name, steps, args.threads)
        print(f"== {name}: Llama hidden {size['hidden_size']}, {size['num_layers']} layers, vocabulary "
              f"{size['vocab_size']}: {full['total']:,} parameters; batch {size['batch']} x {size['seq']} tokens, "
              f"{steps} timed steps, {lora['device']}, {args.threads} thread(s)")
        print(f"  {'':26}{'LoRA':>12}{'full':>12}{'ratio':>8}")
        rows = [("trainable parameters", lora["trainable"], full["trainable"], "{:,}"),
                ("baseline RSS (MiB)", lora["baseline_mib"], full["baseline_mib"], "{:.0f}"),
                ("peak RSS (MiB)", lora["peak_mib"], full["peak_mib"], "{:.0f}"),
                ("training memory (MiB)", lora["training_mib"], full["training_mib"], "{:.0f}"),
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
              f"training memory only: {lora['training_mib'] / max(full['training_mib'], 1e-9):.3f}")


if __name__ == "__main__":
    main()
