"""The HTML report of one evaluation run: the headline metrics, the metrics per category, and every case with
its question, answer, sources, retrieved documents and the checks it failed, with why. Standard library only;
every value shown is escaped (answers and questions are text from a model and from people)."""

from __future__ import annotations

from html import escape
from typing import Any

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 7px;vertical-align:top;text-align:left}th{background:#f3f3f3}
tr.fail td.id{border-left:5px solid #c62828}tr.pass td.id{border-left:5px solid #2e7d32}
.why{color:#b71c1c}.muted{color:#777}.num{text-align:right;font-variant-numeric:tabular-nums}"""


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
    reference = (f'<br><span class="muted">reference: {escape(case["reference"])}</span>'
                 if case.get("reference") else "")
    return (f'<tr class="{"fail" if case["failed"] else "pass"}"><td class="id">{escape(case["id"])}<br>'
            f'<span class="muted">{escape(case["category"])} · {escape(case["kind"])}</span></td>'
            f"<td>{escape(case['question'])}</td><td>{answer}{reference}</td><td>{sources}</td><td>{retrieved}</td>"
            f"<td>{'<br>'.join(checks)}</td><td class=\"muted\">{escape(case['trace_id'])}</td></tr>")


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
<h2>By category</h2><table><tr><th>category</th><th>cases</th>{''.join(f'<th>{escape(n)}</th>' for n in names)}</tr>
{category_rows}</table>
<h2>Cases</h2><p class="muted">Failed cases first. Retrieved: the documents of the retrieved chunks, best first, the
expected ones in bold. Checks: each scorer's value; a failed check in red, with why.</p>
<table><tr><th>case</th><th>question</th><th>answer</th><th>sources cited</th><th>retrieved</th><th>checks</th>
<th>trace</th></tr>
{rows}</table></body></html>
"""
