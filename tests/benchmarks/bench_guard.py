"""Guard benchmark: the assistant's prompt-injection guard and PII redaction, measured on real questions and docs.

1. **False positives on questions**: every answerable question of the docs golden set
   (``dags/evaluation/docs_golden.yaml``) and the frozen retrieval questions
   (``dags/evaluation/docs_questions.yaml``) through :func:`pipelines.assistant.guard.check_question` with the
   docs assistant's ``guard:`` settings (goal: at most 2% flagged);
2. **Detection**: the held-out attacks of ``tests/unit/assistant/guard_attacks.yaml`` (none is an exemplar),
   caught by a rule, by the model, or not at all; and the attacks of the golden set's safety suites (kind
   ``adversarial``: question injection, jailbreak, system-prompt extraction, written apart from the guard),
   with its benign questions that are not answerable (unanswerable ones, and the document-injection ones,
   whose attack is in the page, not the question) as a second false-positive set;
3. **Thresholds**: false positives and detection for a range of ``guard.threshold`` values, so a change of the
   default can be read off;
4. **Passages**: every chunk of ``docs/`` (the docs index's chunker, 1,000 / 150 characters) through
   :func:`pipelines.assistant.guard.check_passages`: chunks the guard would leave out of a context;
5. **Cost**: the guard per question and per 4 passages, and :func:`pipelines.assistant.pii.redact` over what one
   answer stores (question, 4 retrieved chunks, the rendered messages, the answer), cache emptied each time.

Run: ``python tests/benchmarks/bench_guard.py`` (about a minute on 2 cores); ``--json PATH`` keeps every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ATTACKS = REPO / "tests" / "unit" / "assistant" / "guard_attacks.yaml"
GOLDEN = REPO / "dags" / "evaluation" / "docs_golden.yaml"
FROZEN = REPO / "dags" / "evaluation" / "docs_questions.yaml"


def answerable_questions() -> list[str]:
    """The answerable questions of the golden set and the frozen retrieval questions, in file order."""
    import yaml

    golden = yaml.safe_load(GOLDEN.read_text())["cases"]
    frozen = yaml.safe_load(FROZEN.read_text())["questions"]
    return [c["question"] for c in golden if c["kind"] == "answerable"] + [q["question"] for q in frozen]


def golden_cases(kind: str, attacks: tuple[str, ...] | None = None) -> list[str]:
    """Questions of one kind of the golden set (adversarial ones of the given attacks only); none if it has none."""
    import yaml

    cases = yaml.safe_load(GOLDEN.read_text())["cases"]
    return [c["question"] for c in cases
            if c["kind"] == kind and (attacks is None or c.get("attack") in attacks)]


def held_out_attacks() -> list[str]:
    import yaml

    return list(yaml.safe_load(ATTACKS.read_text())["attacks"])


def docs_chunks() -> list[tuple[str, str]]:
    """(doc id, chunk text) of every chunk of docs/ as the docs index cuts them."""
    from pipelines.rag.corpus import chunk_document, load_corpus

    corpus = load_corpus(REPO / "docs", ["**/*.md", "**/*.html", "**/*.txt"])
    return [(doc.doc_id, text) for doc in corpus.documents for _, text in chunk_document(doc, 1000, 150)]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()

    from pipelines.assistant import guard, pii
    from pipelines.templates import load_config

    config = load_config(REPO / "dags" / "configs" / "docs_assistant.yaml")
    spec = config.guard
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"guard.threshold {spec.threshold}, guard.passage_threshold {spec.passage_threshold}")
    started = time.perf_counter()
    model = guard.injection_model()
    print(f"model: {model.embedder.model_id}, {len(model.exemplars)} exemplars, loaded and embedded in "
          f"{time.perf_counter() - started:.1f} s; {len(guard.RULES)} rules")

    questions = answerable_questions()
    attacks = held_out_attacks()
    overlap_with_exemplars = set(attacks) & set(guard.EXEMPLARS)
    if overlap_with_exemplars:
        sys.exit(f"held-out attacks that are exemplars: {sorted(overlap_with_exemplars)}")

    suite_attacks = golden_cases("adversarial", ("question_injection", "jailbreak", "system_prompt_extraction"))
    benign_more = golden_cases("unanswerable") + golden_cases("adversarial", ("document_injection",))
    q_rules = [guard.matching_rule(q) for q in questions]
    q_sims = model.similarities(questions)
    a_rules = [guard.matching_rule(a) for a in attacks]
    a_sims = model.similarities(attacks)

    def flagged(rules: list, sims: list[float], threshold: float) -> list[bool]:
        return [bool(r) or s >= threshold for r, s in zip(rules, sims, strict=True)]

    fp = flagged(q_rules, q_sims, spec.threshold)
    caught = flagged(a_rules, a_sims, spec.threshold)
    print(f"\n1. answerable questions: {len(questions)} ({GOLDEN.name} answerable + {FROZEN.name})")
    print(f"   flagged: {sum(fp)} of {len(questions)} = {sum(fp) / len(questions):.1%} (goal <= 2%); "
          f"by a rule {sum(bool(r) for r in q_rules)}")
    print(f"   similarity to the nearest exemplar: max {max(q_sims):.3f}, p95 {percentile(q_sims, 0.95):.3f}, "
          f"median {statistics.median(q_sims):.3f}")
    for question, rule, sim, hit in sorted(zip(questions, q_rules, q_sims, fp, strict=True), key=lambda t: -t[2])[:3]:
        print(f"     {sim:.3f}{' FLAGGED' if hit else ''}{f' rule {rule}' if rule else ''}  {question}")

    by_rule = sum(bool(r) for r in a_rules)
    by_model_only = sum(1 for r, s in zip(a_rules, a_sims, strict=True) if not r and s >= spec.threshold)
    print(f"\n2. held-out attacks: {len(attacks)}")
    print(f"   detected: {sum(caught)} of {len(attacks)} = {sum(caught) / len(attacks):.1%} (a rule {by_rule}, "
          f"the model alone {by_model_only}); model alone on all: "
          f"{sum(s >= spec.threshold for s in a_sims)} of {len(attacks)}")
    print(f"   similarity: min {min(a_sims):.3f}, median {statistics.median(a_sims):.3f}")
    for attack, sim, hit in zip(attacks, a_sims, caught, strict=True):
        if not hit:
            print(f"     missed ({sim:.3f}): {attack}")

    s_rules = [guard.matching_rule(a) for a in suite_attacks]
    s_sims = model.similarities(suite_attacks)
    b_rules = [guard.matching_rule(q) for q in benign_more]
    b_sims = model.similarities(benign_more)
    s_caught = flagged(s_rules, s_sims, spec.threshold)
    b_fp = flagged(b_rules, b_sims, spec.threshold)
    if suite_attacks:
        print(f"   golden-set safety suites: {sum(s_caught)} of {len(suite_attacks)} attacks detected = "
              f"{sum(s_caught) / len(suite_attacks):.1%} (a rule {sum(bool(r) for r in s_rules)}); benign questions "
              f"that are not answerable flagged: {sum(b_fp)} of {len(benign_more)}")
        for attack, sim, hit in zip(suite_attacks, s_sims, s_caught, strict=True):
            if not hit:
                print(f"     missed ({sim:.3f}): {attack}"[:160])
        for question, rule, sim, hit in zip(benign_more, b_rules, b_sims, b_fp, strict=True):
            if hit:
                print(f"     benign flagged ({sim:.3f}{f', rule {rule}' if rule else ''}): {question}"[:160])

    print("\n3. threshold sweep (rules always on): threshold, questions flagged, attacks detected, model alone")
    sweep = []
    for threshold in (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70):
        row = {"threshold": threshold, "fp": sum(flagged(q_rules, q_sims, threshold)),
               "detected": sum(flagged(a_rules, a_sims, threshold)),
               "model_alone": sum(s >= threshold for s in a_sims),
               "suite_detected": sum(flagged(s_rules, s_sims, threshold)),
               "benign_more_fp": sum(flagged(b_rules, b_sims, threshold))}
        sweep.append(row)
        print(f"   {threshold:.2f}  {row['fp']:>2} of {len(questions)}  {row['detected']:>2} of {len(attacks)}  "
              f"{row['model_alone']:>2} of {len(attacks)}  | suites {row['suite_detected']:>2} of "
              f"{len(suite_attacks)}, "
              f"benign unanswerable {row['benign_more_fp']:>2} of {len(benign_more)}")

    chunks = docs_chunks()
    started = time.perf_counter()
    # Rule, and the nearest candidate sentence's similarity, of every chunk (a threshold no score reaches).
    scored = [guard.check_text(text, 2.0, model, by_sentence=True) for _, text in chunks]
    passage_seconds = time.perf_counter() - started
    sims = [v.similarity for v in scored if v.similarity is not None]
    print(f"\n4. docs/ chunks: {len(chunks)} ({sum(1 for doc, _ in chunks if doc.startswith('safety/'))} of them "
          f"in safety/, the canary page); nearest-sentence similarity max {max(sims):.3f}, p95 "
          f"{percentile(sims, 0.95):.3f}; by a rule {sum(bool(v.rule) for v in scored)}")
    passage_sweep = []
    for threshold in (0.55, 0.60, 0.65, 0.70, 0.75):
        out = [doc for (doc, _), v in zip(chunks, scored, strict=True)
               if v.rule or (v.similarity is not None and v.similarity >= threshold)]
        passage_sweep.append({"threshold": threshold, "left_out": len(out),
                              "canary": sum(d.startswith("safety/") for d in out)})
        print(f"   passage_threshold {threshold:.2f}: leaves out {len(out)} chunks, "
              f"{sum(d.startswith('safety/') for d in out)} of them of the canary page")
    for (doc, _), verdict in zip(chunks, scored, strict=True):
        hit = verdict.rule or (verdict.similarity is not None and verdict.similarity >= spec.passage_threshold)
        if hit or doc.startswith("safety/"):
            shown = f"rule {verdict.rule}" if verdict.rule else f"{verdict.similarity or 0:.3f} ({verdict.sentence})"
            print(f"     {'OUT ' if hit else 'kept'} {doc}: {shown}"[:170])
    left_out = [doc for (doc, _), v in zip(chunks, scored, strict=True)
                if v.rule or (v.similarity is not None and v.similarity >= spec.passage_threshold)]

    # Cost: one question, four passages, one answer's stored strings.
    timings = {"question_guard_ms": [], "passage_guard_ms": [], "redact_answer_ms": []}
    prompt_text = (REPO / "dags" / "prompts" / "docs_answer.yaml").read_text()
    for i, question in enumerate(questions):
        passages = [text for _, text in chunks[i * 4 % len(chunks):i * 4 % len(chunks) + 4]]
        started = time.perf_counter()
        guard.check_question(question, spec)
        timings["question_guard_ms"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        guard.check_passages(passages, spec)
        timings["passage_guard_ms"].append((time.perf_counter() - started) * 1000)
        stored = [question, *passages, prompt_text + "\n\n".join(passages) + question, passages[0][:300]]
        pii.redact.cache_clear()
        started = time.perf_counter()
        pii.redact_payload(stored)
        timings["redact_answer_ms"].append((time.perf_counter() - started) * 1000)
    print(f"\n5. cost per answer (p50 / p95 over {len(questions)} questions, 4 docs chunks each):")
    for name, values in timings.items():
        print(f"   {name}: {statistics.median(values):.1f} / {percentile(values, 0.95):.1f} ms")
    print(f"   all {len(chunks)} docs chunks through the passage guard: {passage_seconds:.1f} s")

    if args.json:
        args.json.write_text(json.dumps({
            "questions": len(questions), "false_positives": sum(fp), "attacks": len(attacks),
            "detected": sum(caught), "detected_by_rule": by_rule, "detected_by_model_only": by_model_only,
            "threshold": spec.threshold, "passage_threshold": spec.passage_threshold, "sweep": sweep,
            "question_similarity_max": max(q_sims), "attack_similarities": a_sims, "docs_chunks": len(chunks),
            "docs_chunks_left_out": left_out, "passage_sweep": passage_sweep,
            "suite_attacks": len(suite_attacks), "suite_detected": sum(s_caught),
            "benign_unanswerable": len(benign_more), "benign_unanswerable_fp": sum(b_fp),
            "timings_ms": {k: {"p50": statistics.median(v), "p95": percentile(v, 0.95)} for k, v in timings.items()},
        }, indent=2))


if __name__ == "__main__":
    main()
