"""What ``make demo`` prints about LoRA tuning: one run of ``assistant_lora_tune``.

The argument is the ``return_value`` XCom of the run's ``register_adapter`` task, which carries the whole
summary (base and tuned perplexity, registration, champion, lineage).
"""

from __future__ import annotations

from typing import Any


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MiB"


def summarize_run(summary: dict[str, Any]) -> str:
    """The demo's block about LoRA tuning: base and tuned perplexity, what was registered, the champion."""
    registered = (f"registered {summary['model_name']} version {summary['version']}" if summary.get("registered")
                  else "nothing registered")
    champion = (f"champion: {summary['model_name']} v{summary['champion']}" if summary.get("champion")
                else "no champion yet")
    lines = [
        f"--- {summary['dag_id']}: docs → instruction pairs → PEFT LoRA → MLflow → champion alias ---",
        f"  base model {summary['architecture']} at {summary['base_model']} "
        f"(digest {summary['base_model_digest'][:12]}…)",
        f"  dataset: {summary['train_pairs']} train / {summary['eval_pairs']} eval pairs "
        f"(digest {summary['dataset_digest'][:12]}…); {summary['steps']} LoRA steps, "
        f"{summary['trainable_fraction']:.2%} of the parameters trainable"
        + (" (reused: same inputs as before)" if summary.get("reused") else ""),
        f"  eval perplexity: base {summary['base_perplexity']:.3f} → tuned {summary['tuned_perplexity']:.3f} "
        f"({-summary['improvement']:+.1%}); merge check max |Δlogit| {summary['merge_max_abs_diff']:.1e}",
        f"  adapter {_size(summary['adapter_bytes'])} vs base weights {_size(summary['base_weights_bytes'])}; "
        f"{registered}",
        f"  {_outcome(summary)}: {summary['reason']}",
        f"  {champion}",
    ]
    return "\n".join(lines)


def _outcome(summary: dict[str, Any]) -> str:
    if summary.get("promoted"):
        return "PROMOTED"
    if summary.get("alias") == "challenger":
        return "HANDED TO THE GATE (@challenger; docs_llm_eval decides @champion)"
    return "not promoted"


def unexpected(summary: dict[str, Any]) -> list[str]:
    """What would make the demo fail: on the default tiny model the adapter must beat the base and be registered.

    Returns:
        One line per problem; empty when the run did what it should.
    """
    problems = []
    if not summary["tuned_perplexity"] < summary["base_perplexity"]:
        problems.append(f"the adapter did not lower eval perplexity ({summary['base_perplexity']} → "
                        f"{summary['tuned_perplexity']})")
    if not summary.get("registered"):
        problems.append(f"no adapter was registered: {summary.get('registration_reason')}")
    if not summary.get("champion") and summary.get("alias") != "challenger":
        problems.append(f"{summary['model_name']} has no champion (nor @challenger for the gate) after the run")
    return problems
