"""Charts for the run report and the dashboard: Chart.js, embedded in the page.

Chart.js (MIT, ~210 KB minified, canvas rendering) is vendored unmodified in ``reports/assets/`` and
inlined into each page, so a page works offline, from a bucket or from a laptop, with no CDN. It is
small enough to embed in every run report and keeps the dashboard far below its 5 MB cap at
10,000 concepts (plotly's bundle alone is ~4.5 MB; vega + vega-lite + vega-embed ~1 MB).

A chart is a ``<canvas>`` plus its Chart.js configuration as JSON in a ``<script
type="application/json">`` beside it; :func:`charts_script` draws every such canvas on load. The
configurations are plain data (no JavaScript callbacks), escaped so that no value from a catalog can
close the script element.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from html import escape
from pathlib import Path
from typing import Any

__all__ = [
    "CHART_JS_VERSION",
    "bar_chart",
    "chart",
    "charts_script",
    "histogram",
    "json_for_script",
    "line_chart",
    "stacked_bar_chart",
]

CHART_JS_VERSION = "4.6.1"
_ASSET = Path(__file__).resolve().parent / "assets" / "chart.umd.min.js"
UP, DOWN, NEUTRAL = "#2e9e5b", "#d9534f", "#4c78a8"
STATUS_COLOURS = {"ok": "#2e9e5b", "failed": "#d9534f", "skipped": "#9aa4b1"}

_INIT = """
document.querySelectorAll('script[type="application/json"][data-chart-for]').forEach(function (spec) {
  var canvas = document.getElementById(spec.getAttribute('data-chart-for'));
  if (canvas) { new Chart(canvas, JSON.parse(spec.textContent)); }
});
"""


def json_for_script(data: Any) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element (``<``, ``>``, ``&`` escaped)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


@lru_cache(maxsize=1)
def _library() -> str:
    code = _ASSET.read_text(encoding="utf-8")
    if "</script" in code.lower():  # pragma: no cover - guards a future update of the vendored file
        raise RuntimeError(f"{_ASSET} cannot be inlined: it contains '</script'")
    return code


def charts_script() -> str:
    """The ``<script>`` elements to put once at the end of a page: Chart.js itself, then the code that
    draws every :func:`chart` on the page."""
    return f"<script>{_library()}</script><script>{_INIT}</script>"


def chart(chart_id: str, config: dict[str, Any], *, height: int = 300, label: str = "") -> str:
    """A canvas drawn by Chart.js from ``config`` (a Chart.js configuration of plain data), ``height`` px tall."""
    config = {
        **config,
        "options": {"animation": False, "responsive": True, "maintainAspectRatio": False, **config.get("options", {})},
    }
    return (
        f"<div class='chart-box' style='position:relative;height:{int(height)}px'>"
        f"<canvas id='{escape(chart_id, quote=True)}' role='img' aria-label='{escape(label, quote=True)}'>"
        f"</canvas></div>"
        f"<script type='application/json' data-chart-for='{escape(chart_id, quote=True)}'>"
        f"{json_for_script(config)}</script>"
    )


def _axis(title: str) -> dict[str, Any]:
    return {"title": {"display": bool(title), "text": title}}


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    series: str,
    x_title: str = "",
    y_title: str = "",
    horizontal: bool = False,
    signed_colours: bool = False,
) -> dict[str, Any]:
    """One series of bars; with ``signed_colours`` negative bars are red and the others green."""
    colours = [UP if v >= 0 else DOWN for v in values] if signed_colours else NEUTRAL
    return {
        "type": "bar",
        "data": {
            "labels": list(labels),
            "datasets": [{"label": series, "data": list(values), "backgroundColor": colours}],
        },
        "options": {
            "indexAxis": "y" if horizontal else "x",
            "plugins": {"legend": {"display": False}},
            "scales": {"x": _axis(x_title), "y": _axis(y_title)},
        },
    }


def stacked_bar_chart(
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    x_title: str = "",
    y_title: str = "",
    colours: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Bars stacked per label, one dataset per entry of ``series``."""
    colours = colours or {}
    return {
        "type": "bar",
        "data": {
            "labels": list(labels),
            "datasets": [
                {"label": name, "data": list(values), "backgroundColor": colours.get(name, NEUTRAL)}
                for name, values in series.items()
            ],
        },
        "options": {"scales": {"x": {**_axis(x_title), "stacked": True}, "y": {**_axis(y_title), "stacked": True}}},
    }


def line_chart(
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    x_title: str = "",
    y_title: str = "",
    right_axis: Sequence[str] = (),
) -> dict[str, Any]:
    """One line per entry of ``series`` (``None`` leaves a gap); the series named in ``right_axis`` use a
    second y axis on the right."""
    datasets = [
        {
            "label": name,
            "data": list(values),
            "spanGaps": True,
            "pointRadius": 2,
            "yAxisID": "y2" if name in right_axis else "y",
        }
        for name, values in series.items()
    ]
    scales: dict[str, Any] = {"x": _axis(x_title), "y": _axis(y_title)}
    if right_axis:
        scales["y2"] = {**_axis(", ".join(right_axis)), "position": "right", "grid": {"drawOnChartArea": False}}
    return {"type": "line", "data": {"labels": list(labels), "datasets": datasets}, "options": {"scales": scales}}


def histogram(values: Sequence[float], bins: int = 20) -> tuple[list[str], list[int]]:
    """Counts of ``values`` (finite ones) in ``bins`` equal-width bins: (bin labels, counts)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return [], []
    lo, hi = min(finite), max(finite)
    if hi == lo:
        return [f"{lo:+.3f}"], [len(finite)]
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in finite:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    labels = [f"{lo + i * width:+.3f} … {lo + (i + 1) * width:+.3f}" for i in range(bins)]
    return labels, counts
