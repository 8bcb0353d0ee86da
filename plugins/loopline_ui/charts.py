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
