"""What ``make demo`` prints about the docs index: two runs of ``docs_rag_index``, the second on an unchanged
corpus. Both arguments are the ``return_value`` XCom of the ``record_index`` task of each run.
"""

from __future__ import annotations

from typing import Any

MODE_WORDS = {"full": "full build", "incremental": "incremental update",
              "unchanged": "re-index, corpus unchanged"}


def _metrics(summary: dict[str, Any]) -> str:
    metrics, k = summary.get("metrics") or {}, summary.get("k", "k")
    if not metrics:
        return "no evaluation"
    hits = " / ".join(f"{mode} {m['hit_rate']:.3f}" for mode, m in metrics.items())
    mrr = " / ".join(f"{mode} {m['mrr']:.3f}" for mode, m in metrics.items())
    return f"hit@{k} {hits}; MRR@{k} {mrr}"


def summarize_run(label: str, summary: dict[str, Any]) -> list[str]:
    """Lines for one run: what it did, its counts (embedded, skipped, deleted), the live version's metrics."""
    mode = summary.get("mode", "?")
    live, action = summary["live_version"], summary.get("action")
    published = (f"alias switched to {live}" if action == "switched"
                 else f"{live} updated in place" if action == "updated_in_place"
                 else f"nothing published, {live} stays live")
    lines = [
        f"  {label}: {MODE_WORDS.get(mode, mode)}; {published}",
        f"    {summary['documents']} documents, {summary['chunks']} chunks: embedded {summary['embedded']}, "
        f"skipped {summary['skipped_unchanged']} (unchanged), deleted {summary['deleted']}",
        f"    {_metrics(summary)}",
    ]
    if summary.get("skipped_files_total"):
        shown = "; ".join(f"{f['file']} {f['reason']}" for f in summary["skipped_files"][:3])
        lines.append(f"    bad input skipped ({summary['skipped_files_total']} files): {shown}")
    return lines


def summarize_runs(first: dict[str, Any], second: dict[str, Any]) -> str:
    """The demo's block about the docs index: both runs' counts and metrics, one line of model and chunker."""
    chunker = first.get("chunker") or {}
    lines = [f"{first['instance']}_rag_index ({first['backend']}): model {first['model_id']}, chunks of "
             f"{chunker.get('size_chars')} chars with {chunker.get('overlap_chars')} overlap, corpus digest "
             f"{first['corpus_digest']}"]
    lines += summarize_run("run 1", first)
    lines += summarize_run("run 2", second)
    return "\n".join(lines)


def unexpected(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """What would make the demo fail: the second run, on an unchanged corpus, must embed and delete nothing.

    Returns:
        One line per problem; empty when both runs did what they should.
    """
    problems = []
    if second.get("mode") != "unchanged" or second.get("embedded") or second.get("deleted"):
        problems.append(f"re-indexing the unchanged docs embedded {second.get('embedded')} and deleted "
                        f"{second.get('deleted')} chunks (mode {second.get('mode')}); expected nothing")
    if not first.get("live_version"):
        problems.append("the first run left no live version of the docs index")
    return problems
