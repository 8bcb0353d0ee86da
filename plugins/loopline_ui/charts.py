"""Small line charts drawn on the server as inline SVG: no script and no library, nothing fetched from elsewhere.

One chart is one or more series over the same ordered x labels (days, versions), an optional threshold line, and
the values as ``data-value`` attributes and ``<title>`` tooltips, so a person can hover a point and a test can
read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

WIDTH, HEIGHT = 440, 160
LEFT, RIGHT, TOP, BOTTOM = 64, 34, 22, 34
COLORS = ("#175cd3", "#b54708", "#6941c6", "#039855")


@dataclass(frozen=True)
class Series:
    """Values by x label (None: no value that day or version, the line breaks there)."""

    name: str
    values: list[float | None]
    marked: list[bool] = field(default_factory=list)  # points drawn filled (a champion, a live version)


def line_chart(title: str, labels: list[str], series: list[Series], *, threshold: float | None = None,
               threshold_name: str = "threshold", y_min: float | None = None, y_max: float | None = None,
               unit: str = "", chart_id: str = "") -> str:
    """An SVG line chart; an empty string when no series has a value (the page says so in words instead)."""
    values = [v for s in series for v in s.values if v is not None]
    if not values or not labels:
        return ""
    low = min(values + ([threshold] if threshold is not None else []))
    high = max(values + ([threshold] if threshold is not None else []))
    low = y_min if y_min is not None else low
    high = y_max if y_max is not None else high
    if high == low:
        high, low = high + (abs(high) or 1) * 0.05, low - (abs(low) or 1) * 0.05
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w / 2 if len(labels) == 1 else plot_w * i / (len(labels) - 1))

    def y(v: float) -> float:
        return TOP + plot_h * (1 - (v - low) / (high - low))

    parts = [f'<svg class="chart" role="img" aria-label="{escape(title)}" data-chart="{escape(chart_id or title)}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>",
             f'<text x="{LEFT}" y="14" font-size="12" font-weight="600">{escape(title)}</text>',
             f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="#d0d5dd"/>']
    for tick in (low, (low + high) / 2, high):
        parts.append(f'<text x="{LEFT - 4}" y="{y(tick) + 4:.1f}" font-size="10" text-anchor="end" '
                     f'fill="#667085">{escape(_fmt(tick, unit))}</text>')
    step = max(1, len(labels) // 6)
    for i, label in enumerate(labels):
        if i % step == 0 or i == len(labels) - 1:
            parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - 18}" font-size="10" text-anchor="middle" '
                         f'fill="#667085">{escape(label)}</text>')
    if threshold is not None:
        parts.append(f'<line class="threshold" data-value="{threshold}" x1="{LEFT}" y1="{y(threshold):.1f}" '
                     f'x2="{LEFT + plot_w}" y2="{y(threshold):.1f}" stroke="#d92d20" stroke-dasharray="4 3">'
                     f"<title>{escape(threshold_name)} {escape(_fmt(threshold, unit))}</title></line>")
    for n, s in enumerate(series):
        color = COLORS[n % len(COLORS)]
        runs: list[list[str]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
        for run in runs:
            if len(run) > 1:
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{" ".join(run)}"/>')
        for i, v in enumerate(s.values):
            if v is None:
                continue
            filled = color if (s.marked[i] if i < len(s.marked) else True) else "#fff"
            parts.append(f'<circle class="point" data-series="{escape(s.name)}" data-x="{escape(labels[i])}" '
                         f'data-value="{v}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.2" fill="{filled}" '
                         f'stroke="{color}"><title>{escape(s.name)} · {escape(labels[i])}: '
                         f"{escape(_fmt(v, unit))}</title></circle>")
    if len(series) > 1:
        for n, s in enumerate(series):
            parts.append(f'<text x="{LEFT + 8 + n * 110}" y="{HEIGHT - 4}" font-size="10" '
                         f'fill="{COLORS[n % len(COLORS)]}">● {escape(s.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.0f}%"
    if abs(value) >= 1000:
        return f"{value:,.0f}{unit}"
    return f"{value:.3g}{unit}"


BOX_W, BOX_H, COL_GAP, ROW_GAP = 140, 46, 30, 12
# What each kind of dataset is, in words (the URI's scheme; written files apart from the raw ones nobody wrote).
DATA_NAMES = {"raw file": "raw files", "file": "files written", "dbt": "dbt model days", "gx": "GE validations",
              "feast": "feature view days", "mlflow": "MLflow versions", "corpus": "corpus digests",
              "index": "index versions", "model": "models", "assistant": "assistant"}


def flow_chart(flow: dict, title: str, chart_id: str = "") -> str:
    """The lineage as columns, raw inputs on the left and the version on the right: kinds of data as rounded
    boxes, tasks as square ones, each with how many datasets or runs it stands for; arrows from what was read to
    the task and from the task to what it wrote."""
    nodes = flow.get("nodes") or []
    if not nodes:
        return ""
    columns: dict[int, list[dict]] = {}
    for node in nodes:
        columns.setdefault(node["depth"], []).append(node)
    place: dict[str, tuple[float, float]] = {}
    for depth, column in sorted(columns.items()):
        for row, node in enumerate(sorted(column, key=lambda n: n["label"])):
            place[node["id"]] = (10 + depth * (BOX_W + COL_GAP), 28 + row * (BOX_H + ROW_GAP))
    width = 20 + (max(columns) + 1) * (BOX_W + COL_GAP) - COL_GAP
    height = 40 + max(len(c) for c in columns.values()) * (BOX_H + ROW_GAP)
    parts = [f'<svg class="chart flow" role="img" aria-label="{escape(title)}" '
             f'data-chart="{escape(chart_id or title)}" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>",
             '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7" '
             'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#98a2b3"/></marker></defs>',
             f'<text x="10" y="16" font-size="12" font-weight="600">{escape(title)}</text>']
    for source, target in flow.get("edges") or []:
        if source in place and target in place:
            (x1, y1), (x2, y2) = place[source], place[target]
            parts.append(f'<line class="edge" data-from="{escape(source)}" data-to="{escape(target)}" '
                         f'x1="{x1 + BOX_W:.0f}" y1="{y1 + BOX_H / 2:.0f}" x2="{x2 - 2:.0f}" y2="{y2 + BOX_H / 2:.0f}" '
                         'stroke="#98a2b3" stroke-width="1.2" marker-end="url(#arrow)"/>')
    for node in nodes:
        x, y = place[node["id"]]
        job = node["kind"] == "job"
        what = "runs" if job else "datasets"
        # A task: its DAG above, the task in bold; a dataset kind: its name in words.
        upper, lower = node["label"].split(".", 1) if job and "." in node["label"] else (
            "", DATA_NAMES.get(node["label"], node["label"]))
        parts.append(
            f'<g class="node" data-node="{escape(node["id"])}" data-count="{node["count"]}">'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="{2 if job else 12}" '
            f'fill="{"#eef4ff" if job else "#f9fafb"}" stroke="{"#175cd3" if job else "#98a2b3"}"/>'
            f'<text x="{x + 7:.0f}" y="{y + 13:.0f}" font-size="9" fill="#667085">{escape(_cut(upper))}</text>'
            f'<text x="{x + 7:.0f}" y="{y + 26:.0f}" font-size="10.5" font-weight="{600 if job else 400}">'
            f"{escape(_cut(lower))}</text>"
            f'<text x="{x + 7:.0f}" y="{y + 39:.0f}" font-size="9" fill="#667085">{node["count"]} {what}</text>'
            f"<title>{escape(node['label'])}: {node['count']} {what}</title></g>")
    parts.append("</svg>")
    return "".join(parts)


def _cut(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
