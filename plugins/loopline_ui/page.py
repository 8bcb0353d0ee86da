"""The Loopline page as HTML, from what :func:`pipelines.cockpit.gather` returns. No template engine: a
server-rendered page that the Airflow UI shows in a frame. Links to Airflow's own pages target the top window,
so they open in the UI rather than inside the frame.

Two tabs: *Overview* (the use cases) and *Ask* (a question to the docs assistant). The tabs are the CSS
``:target`` of their anchors; the only JavaScript is :data:`ASK_SCRIPT`, inline, which posts the question to
``api/ask`` and a thumb to ``api/feedback`` with ``fetch`` (same origin: Airflow's login cookie goes along) and
writes what comes back as text, never as HTML.

Every value goes through :func:`html.escape` (attribute values included), and a report is linked only through
the path :mod:`pipelines.cockpit` checked (``report``: below the data home's ``reports/``): a report path in an
Asset event's extra that is not there is shown as text.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from loopline_ui.charts import Series, flow_chart, line_chart

STYLE = """
:root { color-scheme: light dark; --fg: #1a202c; --muted: #5f6b7a; --line: #e2e8f0; --card: #ffffff;
        --bg: #f7fafc; --ok: #15803d; --bad: #b91c1c; --warn: #a16207; --accent: #0d9488; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e2e8f0; --muted: #a0aec0; --line: #2d3748; --card: #1a202c; --bg: #11151c; } }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg);
       margin: 0; padding: 16px 24px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta, .empty, .muted { color: var(--muted); } .meta { margin-bottom: 12px; }
section.usecase { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 4px 18px 14px;
                  margin-top: 18px; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
td.num { font-variant-numeric: tabular-nums; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
svg.chart { max-width: 100%; height: auto; }
.flow-wrap { overflow-x: auto; margin: 8px 0; }
svg.flow { display: block; max-width: none; }
.chip { display: inline-block; border: 1px solid var(--line); border-radius: 12px; padding: 1px 9px;
        margin: 0 4px 4px 0; font-size: 12px; }
.badge { display: inline-block; border-radius: 4px; padding: 0 6px; font-size: 12px; font-weight: 600; color: #fff; }
.good { background: var(--ok); } .bad { background: var(--bad); } .warn { background: var(--warn); }
.neutral { background: #64748b; }
.champion { border-left: 4px solid var(--accent); padding: 4px 12px; margin: 8px 0; }
.errors { color: var(--bad); } a { color: var(--accent); }
nav.tabs { display: flex; gap: 4px; border-bottom: 1px solid var(--line); margin: 8px 0 4px; }
nav.tabs a { padding: 6px 14px; border: 1px solid var(--line); border-bottom: none; border-radius: 6px 6px 0 0;
             text-decoration: none; color: var(--muted); background: var(--bg); }
nav.tabs a[aria-selected="true"] { color: var(--fg); background: var(--card); font-weight: 600; }
#ask { display: none; } #ask:target { display: block; } #ask:target ~ #overview { display: none; }
textarea, input[type=text] { font: inherit; color: var(--fg); background: var(--bg); border: 1px solid var(--line);
                             border-radius: 6px; padding: 6px 8px; width: 100%; box-sizing: border-box; }
button { font: inherit; border: 1px solid var(--accent); border-radius: 6px; padding: 4px 14px; cursor: pointer;
         background: var(--accent); color: #fff; margin: 6px 6px 0 0; }
button.thumb { background: var(--card); color: var(--fg); border-color: var(--line); }
button:disabled { opacity: .6; cursor: default; }
.answer { white-space: pre-wrap; border-left: 4px solid var(--accent); padding: 4px 12px; margin: 10px 0; }
ul.sources { margin: 4px 0 8px; padding-left: 20px; }
"""

ASK_ASSISTANT = "docs_assistant"

# Posts with fetch to this app (same origin, so Airflow's _token cookie goes along) and writes the reply as
# text. An error shows the server's message (``detail``), or the status when there is none.
ASK_SCRIPT = """
(() => {
  const base = document.body.dataset.base || "";
  const $ = (id) => document.getElementById(id);
  const showTab = () => {
    const ask = location.hash === "#ask";
    for (const tab of document.querySelectorAll("nav.tabs a")) {
      tab.setAttribute("aria-selected", String((tab.getAttribute("href") === "#ask") === ask));
    }
  };
  window.addEventListener("hashchange", showTab);
  showTab();
  if (!$("ask-form")) { return; }  // the user may not read the assistant's DAG: the tab says so, no form

  async function post(path, body) {
    const response = await fetch(base + path, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const detail = data && data.detail;
      const message = typeof detail === "string" ? detail : detail ? JSON.stringify(detail) : "";
      throw new Error(message || `${response.status} ${response.statusText}`);
    }
    return data;
  }

  let traceId = null;
  $("ask-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("ask-button");
    button.disabled = true;
    $("ask-error").textContent = "";
    $("ask-result").hidden = true;
    $("ask-status").textContent = "Asking… an answer takes a few seconds (the first one after a restart longer).";
    try {
      const answer = await post("/api/ask", {question: $("ask-question").value});
      traceId = answer.trace_id;
      $("ask-answer").textContent = answer.answer;
      $("ask-declined").hidden = !answer.refused;
      const sources = $("ask-sources");
      sources.replaceChildren(...answer.sources.map((s) => {
        const item = document.createElement("li");
        const doc = document.createElement("code");
        doc.textContent = s.doc_id;
        item.append(doc, s.heading ? ` — ${s.heading}` : "");
        return item;
      }));
      $("ask-no-sources").hidden = answer.sources.length > 0;
      $("ask-meta").textContent = `Tokens: ${answer.tokens_in} in, ${answer.tokens_out} out · latency `
        + `${Math.round(answer.latency_ms).toLocaleString("en-US")} ms · prompt v${answer.prompt_version} · `
        + `index ${answer.index_version} · model ${answer.model}`
        + (answer.adapter_version ? ` · adapter ${answer.adapter_version}` : "") + ` · trace ${answer.trace_id}`;
      $("ask-result").dataset.traceId = answer.trace_id;
      for (const thumb of document.querySelectorAll("button.thumb")) { thumb.disabled = false; }
      $("feedback-status").textContent = "";
      $("ask-result").hidden = false;
      $("ask-status").textContent = "";
    } catch (error) {
      $("ask-status").textContent = "";
      $("ask-error").textContent = `error: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  });

  for (const thumb of document.querySelectorAll("button.thumb")) {
    thumb.addEventListener("click", async () => {
      const thumbs = document.querySelectorAll("button.thumb");
      for (const t of thumbs) { t.disabled = true; }
      const comment = $("feedback-comment").value.trim();
      try {
        await post("/api/feedback", {trace_id: traceId, up: thumb.dataset.up === "true", comment: comment || null});
        $("feedback-status").className = "";
        $("feedback-status").textContent = `Thanks: recorded on trace ${traceId}`;
      } catch (error) {
        for (const t of thumbs) { t.disabled = false; }
        $("feedback-status").className = "errors";
        $("feedback-status").textContent = `error: ${error.message}`;
      }
    });
  }
})();
"""

STATE_CLASS = {"success": "good", "promoted": "good", "live": "good", "no_drift": "good", "approved": "good",
               "passed": "good", "failed": "bad", "rejected": "bad", "drift": "bad", "blocked": "bad",
               "rolled_back": "bad", "running": "warn", "queued": "warn", "building": "warn", "skipped": "neutral",
               "previous": "neutral", "checked": "neutral"}


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _badge(value: Any) -> str:
    if value is None:
        return ""
    return f'<span class="badge {STATE_CLASS.get(str(value), "neutral")}">{_e(value)}</span>'


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return _e(value)


def _table(headers: list[str], rows: list[str], attrs: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


class _Links:
    def __init__(self, base: str, airflow_base: str):
        self.base, self.airflow = base, airflow_base

    def dag(self, dag_id: str, text: str | None = None) -> str:
        return f'<a target="_top" href="{_e(self.airflow)}/dags/{quote(dag_id)}">{_e(text or dag_id)}</a>'

    def run(self, dag_id: str, run_id: str) -> str:
        return (f'<a target="_top" href="{_e(self.airflow)}/dags/{quote(dag_id)}/runs/{quote(run_id, safe="")}">'
                f'{_e(run_id)}</a>')

    def report(self, path: str | None, text: str = "report") -> str:
        """A link to a report; ``path`` must be one that :func:`pipelines.cockpit.report_link` returned."""
        if not path:
            return ""
        return (f'<a target="_blank" rel="noopener noreferrer" href="{_e(self.base)}/reports/{quote(path)}">'
                f"{_e(text)}</a>")


def _model(model: dict[str, Any], links: _Links) -> str:
    name = model["name"]
    out = [f'<h3>Model <code>{_e(name)}</code> · {links.dag(model.get("dag_id", ""))}</h3>']
    champion = model.get("champion")
    if champion:
        metrics = " · ".join(f"{_e(k)} <b>{_num(v)}</b>" for k, v in champion["metrics"].items())
        params = " ".join(f'<span class="chip">{_e(k)}={_e(v)}</span>' for k, v in champion["params"].items())
        out.append(
            f'<div class="champion" data-model="{_e(name)}" data-champion-version="{_e(champion["version"])}">'
            f'<div>Champion <b>v{_e(champion["version"])}</b>'
            f'{" (" + _e(champion["family"]) + ")" if champion.get("family") else ""}, '
            f'registered {_e(champion["created"])}</div>'
            f'<div>{metrics or "<span class=muted>no metrics logged</span>"}</div>'
            f'<div>{params}</div><div class="muted">{_e(champion.get("reason"))}</div></div>')
        out.append(_lineage(model.get("lineage"), links))
    elif model["versions"]:
        out.append(f'<p class="empty" data-model="{_e(name)}">No champion yet: no version passed the policy.</p>')
    else:
        out.append(f'<p class="empty" data-model="{_e(name)}">No version registered yet.</p>')
    out.append(_model_chart(model))
    if model["versions"]:
        metric_names = list(dict.fromkeys(k for v in model["versions"] for k in v["metrics"]))[:2]
        rows = []
        for v in model["versions"]:
            cells = "".join(f'<td class="num">{_num(v["metrics"].get(m))}</td>' for m in metric_names)
            params = " ".join(f"{_e(k)}={_e(val)}" for k, val in v["params"].items()
                              if k in ("family", "max_iter", "learning_rate", "lora_rank", "epochs"))
            rows.append(
                f'<tr data-version="{_e(v["version"])}"><td>v{_e(v["version"])}{" ★" if v["champion"] else ""}</td>'
                f'<td>{_e(v["created"])}</td><td>{_badge(v.get("promotion"))}</td>{cells}'
                f'<td class="muted">{params}</td><td>{_e(v.get("reason") or v.get("error"))}</td></tr>')
        out.append(_table(["version", "registered", "promotion", *metric_names, "params", "reason"], rows,
                          f' class="versions" data-model="{_e(name)}"'))
    return "".join(out)


def _model_chart(model: dict[str, Any]) -> str:
    """The first metric of each version, oldest first; champions filled."""
    versions = sorted(model["versions"], key=lambda v: int(v["version"]))
    metric = next((k for v in versions for k in v["metrics"]), None)
    if metric is None:
        return ""
    return line_chart(f"{metric} per version (filled: champion)", [f"v{v['version']}" for v in versions],
                      [Series(metric, [v["metrics"].get(metric) for v in versions],
                              [bool(v["champion"]) for v in versions])], chart_id=f"model-{model['name']}")


def _lineage(lineage: dict[str, Any] | None, links: _Links) -> str:
    """How a champion was made, folded: the task runs that made it and its raw inputs by kind (no script)."""
    if not lineage:
        return ""
    steps = [f'<tr><td><code>{_e(s["job"])}</code></td><td>{_e(s["at"][:19].replace("T", " "))}</td>'
             f'<td>{links.run(s["dag_id"], s["dag_run_id"]) if s.get("dag_run_id") else "–"}</td>'
             f'<td class="muted">{_e(", ".join(s["outputs"][:3]))}{" …" if len(s["outputs"]) > 3 else ""}</td></tr>'
             for s in lineage["steps"]]
    counts = lineage["source_counts"]
    sources = "".join(
        f'<details class="sources" data-kind="{_e(kind)}"><summary>{_e(kind)}: {counts[kind]}</summary><ul>'
        + "".join(f"<li><code>{_e(uri)}</code></li>" for uri in found)
        + ("<li>…</li>" if counts[kind] > len(found) else "") + "</ul></details>"
        for kind, found in lineage["sources"].items())
    return (f'<details class="lineage" data-lineage="{_e(lineage["uri"])}"><summary>Lineage of '
            f'<code>{_e(lineage["uri"])}</code>: {len(lineage["steps"])} task runs, '
            f'{sum(counts.values())} raw inputs</summary>'
            + '<div class="flow-wrap">' + flow_chart(lineage.get("flow") or {}, "what made it (raw inputs on the left)",
                                                     chart_id=f"lineage-{lineage['uri']}") + "</div>"
            + _table(["task", "finished", "run", "wrote"], steps) + f"<div>Raw inputs: {sources}</div></details>")


def _drift(drift: dict[str, Any], links: _Links) -> str:
    out = [f'<h3>Drift verdicts · {links.dag(drift["dag_id"])} <span class="muted">({_e(drift["kind"])})</span></h3>']
    if not drift["checks"]:
        return "".join(out) + '<p class="empty">No drift check has run yet.</p>'
    checks = drift["checks"][::-1]  # oldest first
    out.append(line_chart("drift share per check", [str(c.get("check_day")) for c in checks],
                          [Series("drift share", [c.get("drift_share") for c in checks])], unit="%",
                          threshold=drift.get("threshold"), threshold_name="fires at", y_min=0,
                          chart_id=f"drift-{drift['dag_id']}"))
    rows = []
    for c in drift["checks"]:
        status = "drift" if str(c.get("verdict") or "").startswith("DRIFT") else c.get("status")
        columns = ", ".join(str(col) for col in c.get("drifted_columns") or [])
        rows.append(
            f'<tr data-drift-run="{_e(c["dag_run_id"])}"><td>{_e(c.get("check_day"))}</td><td>{_badge(status)}</td>'
            f'<td class="num">{_num(c.get("drift_share"), 2)}</td><td>{_e(columns)}</td>'
            f'<td>{_e(c.get("verdict"))}</td><td>{_e(c.get("action"))}</td>'
            f'<td>{links.report(c.get("report"))}</td><td>{links.run(drift["dag_id"], c["dag_run_id"])}</td></tr>')
    return "".join(out) + _table(["day", "verdict", "drift share", "drifted columns", "why", "action", "report",
                                  "run"], rows)


def _index(index: dict[str, Any], links: _Links) -> str:
    out = [f'<h3>Index versions · {links.dag(index["dag_id"])} '
           f'<span class="muted">({_e(index["backend"])})</span></h3>']
    if not index["versions"]:
        return "".join(out) + '<p class="empty">No index version built yet.</p>'
    versions = index["versions"][::-1]  # oldest first
    modes = list(dict.fromkeys(mode for v in versions for mode in v["metrics"]))
    k = next((v.get("k") for v in versions if v.get("k")), "k")
    out.append(line_chart(f"hit@{k} per version (filled: live)", [v["version"] for v in versions],
                          [Series(mode, [v["metrics"].get(mode, {}).get("hit_rate") for v in versions],
                                  [bool(v["live"]) for v in versions]) for mode in modes],
                          y_max=1, chart_id=f"index-{index['dag_id']}"))
    rows = []
    for v in index["versions"]:
        k = v.get("k") or "k"
        metrics = "<br>".join(f'{_e(mode)}: hit@{_e(k)} <b>{_num(m.get("hit_rate"), 3)}</b>, '
                              f'MRR@{_e(k)} <b>{_num(m.get("mrr"), 3)}</b>' for mode, m in v["metrics"].items())
        chunker = ", ".join(f"{_e(a)} {_e(b)}" for a, b in v["chunker"].items())
        rows.append(
            f'<tr data-index-version="{_e(v["version"])}"><td>{_e(v["version"])}</td><td>{_badge(v["status"])}</td>'
            f'<td>{metrics or "–"}</td><td>{_e(v.get("model_id"))}<br><span class="muted">{chunker}</span></td>'
            f'<td>{_e(v.get("went_live_because") or v.get("gate"))}</td></tr>')
    return ("".join(out) + _table(["version", "status", "evaluation", "model · chunker", "why"], rows)
            + _lineage(index.get("lineage"), links))


def _ms(value: Any) -> str:
    return "–" if value is None else f"{float(value):,.0f} ms"


def _share(value: Any) -> str:
    return "–" if value is None else f"{float(value):.1%}"


def _count(value: Any) -> str:
    return "–" if value is None else _e(value)


def _up_share(day: dict[str, Any]) -> float | None:
    up, down = day.get("thumbs_up"), day.get("thumbs_down")
    return None if not (up or down) else up / (up + down)


def _assistant(assistant: dict[str, Any], links: _Links) -> str:
    """An assistant's answers per UTC day: counts, tokens, latency, budget share and thumbs."""
    out = [f'<h3>Assistant answers per day · {links.dag(assistant["dag_id"])} <span class="muted">(UTC; daily '
           f'budget {int(assistant["max_tokens_per_day"]):,} tokens)</span></h3>']
    if not assistant["days"]:
        return "".join(out) + '<p class="empty">No accounting: the query log could not be read.</p>'
    if not any(day["answers"] for day in assistant["days"]):
        out.append(f'<p class="empty">No answer in the last {len(assistant["days"])} days.</p>')
    days = assistant["days"][::-1]  # oldest first
    labels = [day["day"][5:] for day in days]
    charted = assistant["dag_id"]
    out.append('<div class="charts">' + "".join([
        line_chart("latency per day", labels, [Series("p50", [day["latency_p50_ms"] for day in days]),
                                               Series("p95", [day["latency_p95_ms"] for day in days])],
                   unit=" ms", y_min=0, chart_id=f"latency-{charted}"),
        line_chart("tokens per day", labels, [Series("tokens", [day["tokens"] for day in days])],
                   threshold=assistant["max_tokens_per_day"], threshold_name="daily budget", y_min=0,
                   chart_id=f"tokens-{charted}"),
        line_chart("thumbs up share per day", labels, [Series("thumbs up", [_up_share(day) for day in days])],
                   unit="%", y_min=0, y_max=1, chart_id=f"feedback-{charted}"),
    ]) + "</div>")
    rows = []
    for day in assistant["days"]:
        checks = f' <span class="muted">({_e(day["checks"])} checks)</span>' if day.get("checks") else ""
        rows.append(
            f'<tr data-day="{_e(day["day"])}"><td>{_e(day["day"])}</td><td class="num">{_e(day["answers"])}'
            f'{checks}</td>'
            f'<td class="num">{_e(day["refused"])}</td><td class="num">{int(day["tokens_in"]):,}</td>'
            f'<td class="num">{int(day["tokens_out"]):,}</td><td class="num">{_ms(day["latency_p50_ms"])}</td>'
            f'<td class="num">{_ms(day["latency_p95_ms"])}</td><td class="num">{_share(day["budget_share"])}</td>'
            f'<td class="num">{_count(day.get("thumbs_up"))}</td><td class="num">{_count(day.get("thumbs_down"))}</td>'
            "</tr>")
    out.append(_table(["day", "answers", "declined", "tokens in", "tokens out", "p50 latency", "p95 latency",
                       "budget used", "thumbs up", "thumbs down"], rows,
                      f' class="assistant-days" data-assistant="{_e(assistant["dag_id"])}"'))
    out.append(_lineage(assistant.get("prompt_lineage"), links))
    return "".join(out)


def _evaluation(evaluation: dict[str, Any], links: _Links) -> str:
    """An llm_eval pipeline's latest evaluation runs: what each evaluated, its headline metrics, the gate's call."""
    champion = evaluation.get("champion_prompt_version")
    held = (f' · prompt <code>{_e(evaluation["prompt"])}</code> champion <b>v{_e(champion)}</b>'
            if champion is not None else "")
    out = [f'<h3>LLM evaluations and release gate · {links.dag(evaluation["dag_id"])}{held}</h3>']
    if not evaluation["runs"]:
        return "".join(out) + '<p class="empty">No evaluation has run yet.</p>'
    names = list(dict.fromkeys(k for run in evaluation["runs"] for k in run["metrics"]))
    rows = []
    for run in evaluation["runs"]:
        what = _e(run.get("candidate") or f'champion prompt v{run.get("prompt_version")}')
        cells = "".join(f'<td class="num">{_num(run["metrics"].get(m), 3)}</td>' for m in names)
        rows.append(
            f'<tr data-eval-run="{_e(run["run_id"])}" data-role="{_e(run["role"])}"><td>{_e(run["started"])}</td>'
            f'<td>{what}<br><span class="muted">index {_e(run.get("index_version"))} · golden '
            f'{_e(run.get("golden_digest"))}</span></td>{cells}<td>{_badge(run.get("decision"))}</td>'
            f'<td>{_e(run.get("reason"))}</td><td>{links.report(run.get("report"))}</td></tr>')
    return "".join(out) + _table(["started", "evaluated", *names, "gate", "reason", "report"], rows,
                                 f' class="evaluations" data-dag="{_e(evaluation["dag_id"])}"')


def _ask(assistant: str, ask: dict[str, Any] | None = None) -> str:
    """The Ask tab: a question box, and where the script puts the answer, its sources and the thumbs; for a
    user who may not read the assistant's DAG (``ask["allowed"]`` false), only what to do about it."""
    if ask and ask.get("allowed") is False:
        return (f'<section class="usecase" id="ask" data-assistant="{_e(assistant)}"><h2>Ask the docs</h2>'
                f'<p class="errors" id="ask-refused">You may not ask <code>{_e(assistant)}</code>: it needs read '
                f'access to the DAG <code>{_e(ask.get("dag_id") or assistant)}</code>; ask an Airflow admin for '
                "it.</p></section>")
    return (
        f'<section class="usecase" id="ask" data-assistant="{_e(assistant)}"><h2>Ask the docs</h2>'
        f'<p class="muted">The assistant <code>{_e(assistant)}</code> answers from the live docs index with a small '
        "local model, and names the documents it used: treat the answer as a pointer to those sources. Every "
        "answer is an MLflow trace; your thumbs are recorded on it.</p>"
        '<form id="ask-form"><label for="ask-question">Question</label>'
        '<textarea id="ask-question" name="question" rows="3" placeholder="How do I roll the retrieval index back to '
        'the previous version?"></textarea><button type="submit" id="ask-button">Ask</button></form>'
        '<div id="ask-status" class="muted" role="status"></div><div id="ask-error" class="errors" role="alert"></div>'
        '<div id="ask-result" hidden><div class="answer" id="ask-answer"></div>'
        '<p id="ask-declined" class="muted" hidden>Declined: the docs do not answer this question well enough.</p>'
        '<h3>Sources</h3><ul class="sources" id="ask-sources"></ul>'
        '<p id="ask-no-sources" class="empty" hidden>None.</p><div id="ask-meta" class="muted"></div>'
        '<div><input type="text" id="feedback-comment" maxlength="2000" placeholder="Comment on the answer '
        '(optional)"><button type="button" class="thumb" id="thumb-up" data-up="true">Thumbs up'
        '</button><button type="button" class="thumb" id="thumb-down" data-up="false">Thumbs down'
        '</button></div><div id="feedback-status" role="status"></div></div></section>')


def _runs(runs: list[dict[str, Any]], links: _Links) -> str:
    out = ["<h3>Asset-triggered runs</h3>"]
    if not runs:
        return "".join(out) + '<p class="empty">No run was started by an Asset event yet.</p>'
    rows = []
    for run in runs:
        events = run["events"] or [{"asset": "?", "reason": "no consumed event recorded"}]
        trigger = "<br>".join(
            f'<code>{_e(e["asset"])}</code> from '
            f'{links.dag(e["source_dag_id"]) if e.get("source_dag_id") else "outside"}'
            f'{" / " + links.run(e["source_dag_id"], e["source_run_id"]) if e.get("source_run_id") else ""}'
            for e in events)
        reasons = "<br>".join(_e(e["reason"]) for e in events)
        reports = " ".join(links.report(e["report"]) if e.get("report") else _unlinked_report(e) for e in events)
        rows.append(
            f'<tr data-run="{_e(run["run_id"])}"><td>{links.run(run["dag_id"], run["run_id"])}</td>'
            f'<td>{links.dag(run["dag_id"])}</td><td>{_badge(run["state"])}</td><td>{_e(run.get("start_date"))}</td>'
            f'<td>{trigger}</td><td>{reasons} {reports}</td></tr>')
    return "".join(out) + _table(["run", "DAG", "state", "started", "triggered by", "reason"], rows)


def _unlinked_report(event: dict[str, Any]) -> str:
    """A ``report_uri`` of an event's extra that is not a report under ``reports/`` (or that the viewer may not
    read): shown as text, so that an extra cannot make the page link anywhere."""
    extra = event.get("extra")
    uri = extra.get("report_uri") if isinstance(extra, dict) else None
    if not uri:
        return ""
    return f'<span class="muted unlinked-report">report (not linked): <code>{_e(uri)}</code></span>'


def render(summary: dict[str, Any], *, base: str = "/loopline", airflow_base: str = "", user: str = "",
           assistant: str = ASK_ASSISTANT) -> str:
    """The whole page. ``base``: where this app is mounted; ``airflow_base``: the Airflow UI's root;
    ``assistant``: the assistant the Ask tab asks (the app's ``api/ask`` route); ``summary["ask"]``, when there,
    says whether the user may ask it (``{"dag_id", "allowed"}``)."""
    links = _Links(base, airflow_base)
    body = [f'<h1>Loopline</h1><div class="meta">Signed in as <b>{_e(user)}</b> · data home '
            f'<code>{_e(summary["data_home"])}</code> · MLflow <code>{_e(summary["mlflow"])}</code></div>',
            '<nav class="tabs" role="tablist"><a role="tab" href="#overview">Overview</a>'
            '<a role="tab" href="#ask" id="tab-ask">Ask</a></nav>', _ask(assistant, summary.get("ask")),
            '<div id="overview">']
    if summary.get("errors"):
        body.append('<div class="errors">' + "<br>".join(_e(e) for e in summary["errors"]) + "</div>")
    nav = " ".join(f'<a class="chip" href="#uc-{_e(c["name"])}">{_e(c["name"])}</a>' for c in summary["use_cases"])
    body.append(f"<div>{nav}</div>")
    for case in summary["use_cases"]:
        dags = " ".join(f'<span class="chip">{links.dag(d["dag_id"])} <span class="muted">{_e(d["template"])}'
                        f"</span></span>" for d in case["dags"])
        parts = [f'<section class="usecase" id="uc-{_e(case["name"])}" data-use-case="{_e(case["name"])}">'
                 f'<h2>{_e(case["name"])}</h2><div>{dags}</div>']
        if case["errors"]:
            parts.append('<div class="errors">' + "<br>".join(_e(e) for e in case["errors"]) + "</div>")
        parts += [_model(m, links) for m in case["models"]]
        parts += [_index(i, links) for i in case["indexes"]]
        parts += [_drift(d, links) for d in case["drift"]]
        parts += [_assistant(a, links) for a in case.get("assistants", [])]
        parts += [_evaluation(e, links) for e in case.get("evaluations", [])]
        parts.append(_runs(case["runs"], links))
        parts.append("</section>")
        body.append("".join(parts))
    body.append("</div>")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Loopline</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f'<body data-base="{_e(base)}">{"".join(body)}<script>{ASK_SCRIPT}</script></body></html>')
