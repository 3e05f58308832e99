"""What the run report and the dashboard share: the page style and the formatting of a value in a cell.

Both pages show the same scores the same way (three decimals, an em dash for a missing value, a signed,
coloured lift), so the style and the formatters live here once; the pages add only their own parts.
"""

from __future__ import annotations

import math
import numbers
from html import escape
from typing import Any

from common.norms import BLOWN_UP_RATIO, blown_up

__all__ = [
    "MISSING",
    "PAGE_CSS",
    "finite_number",
    "format_lift",
    "format_lr",
    "format_norm_ratio",
    "format_value",
    "is_blown_up",
]

#: what a missing value (None, NaN, an empty string) shows
MISSING = "—"

#: the style of both pages (the dashboard appends its own rules)
PAGE_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:24px 32px;
color:#1d232b;background:#f5f6f8}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:30px 0 10px}
.muted{color:#69727d}.small{font-size:12px}
.pills span{display:inline-block;padding:3px 11px;border-radius:12px;margin:6px 6px 0 0;font-size:13px}
.ok{background:#dff3e4}.failed{background:#fbe0e0}.skipped{background:#e7eaee}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:14px}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:12px 14px}
.card h3{margin:0 0 4px;font-size:15px;word-break:break-all}
.card img{display:block;width:100%;height:auto;border-radius:4px;margin-top:4px;background:#eee;
image-rendering:pixelated}
.grids{display:grid;grid-template-columns:1fr;gap:6px;margin-top:8px}.grids figure{margin:0}
.grids figcaption{font-size:12px;color:#69727d}
table{border-collapse:collapse;font-size:13px;width:100%;margin-top:6px}
td{padding:2px 8px 2px 0;vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#17803d;font-weight:600}.down{color:#b42318;font-weight:600}
.fail{background:#fff;border-left:4px solid #d92d20;padding:8px 12px;margin:6px 0}
.fail pre{margin:4px 0 0;white-space:pre-wrap;word-break:break-word;font-size:12px}
.chart{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px;overflow-x:auto}
code{font-size:12px;word-break:break-all}a{color:#1558b0}
.blown{display:inline-block;background:#fbe0e0;color:#8a1c12;font-weight:600;border-radius:10px;padding:0 8px}
.strip{overflow-x:auto}.card .strip img{width:auto;max-width:none;height:80px;image-rendering:auto}
"""


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, NaN, inf, not a number)."""
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def format_value(value: Any, digits: int = 3) -> str:
    """A cell's text, escaped; missing values (None, NaN, empty) as an em dash."""
    if value is None or (isinstance(value, str) and not value):
        return MISSING
    if isinstance(value, bool):
        return escape(str(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = finite_number(value)
        return MISSING if number is None else f"{number:.{digits}f}"
    return escape(str(value))


def format_lr(value: Any) -> str:
    """A learning rate in two significant digits (``0.005``, ``5e-05``)."""
    number = finite_number(value)
    return MISSING if number is None else f"{number:.2g}"


def format_lift(value: Any) -> str:
    """An inversion lift, signed, green when the learned word wins and red when words win."""
    number = finite_number(value)
    if number is None:
        return f'<span class="muted">{MISSING}</span>'
    css = "up" if number >= 0 else "down"
    return f'<span class="{css}">{number:+.3f}</span>'


def is_blown_up(value: Any) -> bool:
    """Whether a metrics row's ``norm_ratio`` flags its word as blown up (:data:`common.norms.BLOWN_UP_RATIO`);
    False when missing (rows written before the column existed)."""
    number = finite_number(value)
    return number is not None and blown_up(number)


def format_norm_ratio(value: Any) -> str:
    """A word's largest vector norm over its vocabulary's mean norm (``3.8×``); a blown-up word gets a red flag
    that says so in words, with the ratio; missing as an em dash."""
    number = finite_number(value)
    if number is None:
        return MISSING
    if blown_up(number):
        return f'<span class="blown">blown up: {number:.1f}× (over {BLOWN_UP_RATIO:g}×)</span>'
    return f"{number:.1f}×"
