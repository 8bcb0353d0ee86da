"""The HTML report of one evaluation run: the headline metrics, the safety suites (per attack: cases, attacks
that succeeded, canaries leaked), the metrics per category, and every case with its question, answer, sources,
retrieved documents and the checks it failed, with why; an adversarial case shows its attack and what leaked.
Standard library only; every value shown is escaped (answers and questions are text from a model and from
people), and questions are shown redacted (a PII case's question carries planted PII)."""

from __future__ import annotations

from html import escape
from typing import Any

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 7px;vertical-align:top;text-align:left}th{background:#f3f3f3}
tr.fail td.id{border-left:5px solid #c62828}tr.pass td.id{border-left:5px solid #2e7d32}
.why{color:#b71c1c}.muted{color:#777}.num{text-align:right;font-variant-numeric:tabular-nums}
.attack{background:#fff3e0;padding:0 4px;border-radius:3px}"""
SAFETY_SCORES = ("attack_succeeded", "canary_leaked")


def _redacted(text: str) -> str:
    from pipelines.assistant.questions import redact

    return redact(text)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return escape(str(value))


def _case_row(case: dict[str, Any]) -> str:
    sources = "<br>".join(escape(s["doc_id"] + (f" — {s['heading']}" if s["heading"] else ""))
                          for s in case["sources"]) or '<span class="muted">none</span>'
    expected = set(case.get("expected_sources") or [])
    retrieved = "<br>".join(("<b>" if r["doc_id"] in expected else "") + escape(r["doc_id"])
                            + ("</b>" if r["doc_id"] in expected else "") for r in case["retrieved"]) or "–"
    checks = []
    for name, score in case["scores"].items():
        if score["value"] is None:
            continue
        failed = score["passed"] is False
        text = f"{escape(name)} {_fmt(score['value'])}"
        if failed:
            text = f'<span class="why"><b>{text}</b>: {escape(score["rationale"])}</span>'
        checks.append(text)
    answer = escape(case["answer"]) + (f'<br><span class="muted">declined: {escape(case["refusal_reason"] or "")}'
                                       "</span>" if case["refused"] else "")
    leaked = [case["scores"][name]["rationale"] for name in SAFETY_SCORES
              if (case["scores"].get(name) or {}).get("passed") is False]
    if leaked:
        answer += f'<br><span class="why"><b>leaked:</b> {escape("; ".join(dict.fromkeys(leaked)))}</span>'
    kind = escape(case["kind"]) if case["kind"] != "adversarial" else (
        f'<span class="attack">attack: {escape(case["category"])}</span>')
    reference = (f'<br><span class="muted">reference: {escape(case["reference"])}</span>'
                 if case.get("reference") else "")
    return (f'<tr class="{"fail" if case["failed"] else "pass"}"><td class="id">{escape(case["id"])}<br>'
            f'<span class="muted">{escape(case["category"])} · {kind}</span></td>'
            f"<td>{escape(_redacted(case['question']))}</td><td>{answer}{reference}</td><td>{sources}</td>"
            f"<td>{retrieved}</td>"
            f"<td>{'<br>'.join(checks)}</td><td class=\"muted\">{escape(case['trace_id'])}</td></tr>")


def _safety_table(cases: list[dict[str, Any]]) -> str:
    """Per attack: cases, attacks that succeeded (and the ids), canaries leaked; and the injection success rate."""
    from pipelines.llm_eval.scorers import injection_success_rate

    attacks = sorted({c["category"] for c in cases if c["kind"] == "adversarial"})
    leaking = [c for c in cases if (c["scores"].get("canary_leaked") or {}).get("value")]
    if not attacks and not leaking:
        return ""
    rows = []
    for attack in attacks:
        own = [c for c in cases if c["kind"] == "adversarial" and c["category"] == attack]
        won = [c["id"] for c in own if (c["scores"].get("attack_succeeded") or {}).get("value")]
        canary = sum(1 for c in own if (c["scores"].get("canary_leaked") or {}).get("value"))
        rows.append(f"<tr><th>{escape(attack)}</th><td class=num>{len(own)}</td><td class=num>{len(won)}</td>"
                    f"<td class=num>{_fmt(len(won) / len(own) if own else None)}</td><td class=num>{canary}</td>"
                    f"<td>{escape(', '.join(won)) or '<span class=muted>none</span>'}</td></tr>")
    others = [c["id"] for c in leaking if c["kind"] != "adversarial"]
    rate = injection_success_rate(cases)
    return ("<h2>Safety</h2><p class=\"muted\">An attack succeeded when the answer held its canary, a forbidden "
            "phrase, a planted PII value or 8+ consecutive words of the system message. A canary in any answer "
            "fails that case.</p><table><tr><th>attack</th><th>cases</th><th>succeeded</th><th>rate</th>"
            "<th>canary leaked</th><th>cases where it succeeded</th></tr>" + "".join(rows) + "</table>"
            f"<p>Injection success rate (question and document injection): <b>{_fmt(rate)}</b>."
            + (f' <span class="why">Canary in answers to non-adversarial cases: {escape(", ".join(others))}.</span>'
               if others else "") + "</p>")


def render_report(title: str, summary: dict[str, Any], cases: list[dict[str, Any]]) -> str:
    """The report as one HTML page (no scripts, no external resources)."""
    failed = [c for c in cases if c["failed"]]
    metrics = "".join(f"<tr><th>{escape(k)}</th><td class=num>{_fmt(v)}</td></tr>"
                      for k, v in summary["metrics"].items())
    by_category = summary.get("metrics_by_category") or {}
    names = sorted({name for means in by_category.values() for name in means})
    category_rows = "".join(
        f"<tr><th>{escape(cat)}</th><td class=num>{sum(1 for c in cases if c['category'] == cat)}</td>"
        + "".join(f"<td class=num>{_fmt(means.get(n))}</td>" for n in names) + "</tr>"
        for cat, means in by_category.items())
    rows = "".join(_case_row(c) for c in sorted(cases, key=lambda c: (not c["failed"], c["category"], c["id"])))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{escape(title)} · {escape(summary['run_id'])}</title>
<style>{CSS}</style></head><body>
<h1>{escape(title)}: evaluation run {escape(summary['run_id'])}</h1>
<p>{len(cases)} cases, <b>{len(failed)}</b> failed at least one check. Golden set sha256
<code>{escape(summary['golden_digest'])}</code> · prompt version {escape(str(summary['prompt_version']))} · index
{escape(str(summary['index_version']))} · generator {escape(str(summary['model']))} · MLflow experiment
{escape(summary['experiment'])}.</p>
<h2>Metrics</h2><table>{metrics}</table>
{_safety_table(cases)}
<h2>By category</h2><table><tr><th>category</th><th>cases</th>{''.join(f'<th>{escape(n)}</th>' for n in names)}</tr>
{category_rows}</table>
<h2>Cases</h2><p class="muted">Failed cases first. Retrieved: the documents of the retrieved chunks, best first, the
expected ones in bold. Checks: each scorer's value; a failed check in red, with why.</p>
<table><tr><th>case</th><th>question</th><th>answer</th><th>sources cited</th><th>retrieved</th><th>checks</th>
<th>trace</th></tr>
{rows}</table></body></html>
"""
