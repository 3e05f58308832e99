"""The run report: one self-contained static HTML page written next to the metrics.

A header (run id, ok/failed/skipped counts, mean inversion lift), an inline-SVG bar chart of the
lift across concepts, one card per concept learned in this run (grid thumbnail, scores, lift,
token, steps, loss, train time, links), the failures with their reasons, and the skipped concepts
in a compact list. No scripts, no external CSS, fonts or images: the page opens from a bucket, a
mail attachment or a laptop alike. Everything that comes from a catalog or an error message is
HTML-escaped; links only keep safe schemes.

Scores are raw CLIP cosines in [-1, 1] (see :mod:`inversion.scoring`), not the 2.5×-scaled
CLIPScore; the lift is the learned word's image similarity minus the words-only baseline's.
"""

from __future__ import annotations

import base64
import io
import math
import numbers
from html import escape
from typing import Any
from urllib.parse import urlsplit

from storage.objectstore import open_store

__all__ = ["lift_chart", "render_report", "write_report"]

THUMBNAIL_WIDTH = 768
MISSING = "—"
_SAFE_SCHEMES = {"http", "https", "s3", "gs", "file", ""}

_CSS = """
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
.card img{display:block;width:100%;height:auto;border-radius:4px;margin-top:10px;background:#eee}
table{border-collapse:collapse;font-size:13px;width:100%;margin-top:6px}
td{padding:2px 8px 2px 0;vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#17803d;font-weight:600}.down{color:#b42318;font-weight:600}
.fail{background:#fff;border-left:4px solid #d92d20;padding:8px 12px;margin:6px 0}
.fail pre{margin:4px 0 0;white-space:pre-wrap;word-break:break-word;font-size:12px}
ul.skipped-list{list-style:none;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:6px}
ul.skipped-list li{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:3px 9px;font-size:13px}
.chart{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px;overflow-x:auto}
code{font-size:12px;word-break:break-all}a{color:#1558b0}
"""


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, NaN, inf, not a number)."""
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: Any, digits: int = 3) -> str:
    """A cell's text, escaped; missing values (None, NaN, empty) as an em dash."""
    if value is None or (isinstance(value, str) and not value):
        return MISSING
    if isinstance(value, bool):
        return escape(str(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = _number(value)
        return MISSING if number is None else f"{number:.{digits}f}"
    return escape(str(value))


def _fmt_lr(value: Any) -> str:
    number = _number(value)
    return MISSING if number is None else f"{number:.2g}"


def _lift(value: Any) -> str:
    number = _number(value)
    if number is None:
        return f'<span class="muted">{MISSING}</span>'
    css = "up" if number >= 0 else "down"
    return f'<span class="{css}">{number:+.3f}</span>'


def _safe_href(uri: Any) -> str | None:
    """``uri`` escaped for an ``href`` if its scheme is harmless (no ``javascript:``, ``data:``…)."""
    if not isinstance(uri, str) or not uri.strip():
        return None
    try:
        scheme = urlsplit(uri.strip()).scheme.lower()
    except ValueError:
        return None
    if scheme not in _SAFE_SCHEMES and not (len(scheme) == 1 and scheme.isalpha()):  # c:\… on Windows
        return None
    return escape(uri.strip(), quote=True)


def _link(uri: Any, text: str | None = None) -> str:
    """A link to ``uri`` (or its escaped text when the scheme is not safe to link); "—" when missing."""
    if not isinstance(uri, str) or not uri:
        return MISSING
    label = escape(text if text is not None else uri)
    href = _safe_href(uri)
    return f'<a href="{href}">{label}</a>' if href else f"<code>{escape(uri)}</code>"


def _cid(row: dict) -> str:
    return str(row.get("concept_id") or "?")


def _thumbnail(data: bytes, width: int = THUMBNAIL_WIDTH) -> str | None:
    """A ``data:`` URI of the image downscaled to at most ``width`` px wide (JPEG), or None if unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "P"):
                rgba = image.convert("RGBA")
                background = Image.new("RGB", rgba.size, (255, 255, 255))
                background.paste(rgba, mask=rgba.getchannel("A"))
                image = background
            else:
                image = image.convert("RGB")
            if image.width > width:
                height = max(1, round(image.height * width / image.width))
                image = image.resize((width, height), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85, optimize=True)
    except Exception:  # noqa: BLE001 - a broken grid only costs the card its picture
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def lift_chart(rows: list[dict]) -> str:
    """An inline-SVG horizontal bar chart of inversion lift: one bar per scored (non-failed) concept,
    sorted high to low, a zero line, negative bars red."""
    scored = [(r, _number(r.get("inversion_lift"))) for r in rows if r.get("status") != "failed"]
    scored = sorted(((r, v) for r, v in scored if v is not None), key=lambda item: (-item[1], _cid(item[0])))
    if not scored:
        return f'<p class="muted">No concept has a lift score in this run ({MISSING}).</p>'
    label_w, bar_w, value_w, row_h, top = 200, 420, 64, 22, 22
    span = max(0.02, max(abs(v) for _, v in scored))
    has_negative = any(v < 0 for _, v in scored)
    zero = label_w + (bar_w / 2 if has_negative else 0)
    half = bar_w / 2 if has_negative else bar_w - 4
    height = top + row_h * len(scored) + 8
    width = label_w + bar_w + value_w
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="inversion lift per concept" '
             f'font-family="system-ui,sans-serif">',
             f'<text x="{zero:.1f}" y="14" text-anchor="middle" font-size="11" fill="#69727d">0</text>',
             f'<text x="{zero + half:.1f}" y="14" text-anchor="end" font-size="11" fill="#69727d">+{span:.3f}</text>']
    if has_negative:
        parts.append(f'<text x="{zero - half:.1f}" y="14" font-size="11" fill="#69727d">-{span:.3f}</text>')
    for i, (row, lift) in enumerate(scored):
        cid = _cid(row)
        short = cid if len(cid) <= 30 else cid[:29] + "…"
        length = max(abs(lift) / span * half, 1.0)
        x = zero if lift >= 0 else zero - length
        y = top + i * row_h
        colour = "#2e9e5b" if lift >= 0 else "#d9534f"
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" font-size="12">{escape(short)}</text>')
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{y + 4}" width="{length:.1f}" height="{row_h - 8}" '
                     f'fill="{colour}"><title>{escape(cid)}: {lift:+.4f}</title></rect>')
        value_x = (zero + length + 4) if lift >= 0 else (zero + 4)
        parts.append(f'<text x="{value_x:.1f}" y="{y + 15}" font-size="11" fill="#1d232b">{lift:+.3f}</text>')
    parts.append(f'<line x1="{zero:.1f}" y1="{top - 2}" x2="{zero:.1f}" y2="{height - 4}" stroke="#1d232b" '
                 'stroke-width="1"/>')
    parts.append("</svg>")
    return "".join(parts)


def _card(row: dict, image: bytes | str | None) -> str:
    cid = _cid(row)
    scores = (
        ("image similarity, learned word", _fmt(row.get("image_similarity"))),
        ("image similarity, words only", _fmt(row.get("baseline_image_similarity"))),
        ("text similarity, learned word", _fmt(row.get("text_similarity"))),
        ("text similarity, words only", _fmt(row.get("baseline_text_similarity"))),
        ("steps", _fmt(row.get("steps"))),
        ("vectors", _fmt(row.get("vectors"))),
        ("learning rate", _fmt_lr(row.get("lr"))),
        ("final loss", _fmt(row.get("final_loss"), 4)),
        ("train seconds", _fmt(row.get("train_seconds"), 1)),
    )
    cells = "".join(f"<tr><td>{label}</td><td class='num'>{value}</td></tr>" for label, value in scores)
    picture = ""
    if isinstance(image, (bytes, bytearray)):
        src = _thumbnail(bytes(image))
        picture = (f"<img alt='prompt grid of {escape(cid, quote=True)}' loading='lazy' src='{src}'>" if src
                   else "<p class='muted small'>grid image unreadable</p>")
    elif isinstance(image, str) and image:
        picture = f"<p>grid: {_link(image, 'open')}</p>"
    elif row.get("grid_uri"):
        picture = f"<p>grid: {_link(row.get('grid_uri'), 'open')}</p>"
    return (f"<div class='card'><h3>{escape(cid)}</h3>"
            f"<div>token <code>{_fmt(row.get('token'))}</code> · lift {_lift(row.get('inversion_lift'))}</div>"
            f"<table>{cells}</table>"
            f"<div class='small'>embedding: {_link(row.get('embedding_uri'))}</div>"
            f"<div class='small muted'>model {_fmt(row.get('model'))} · digest "
            f"<code>{escape(str(row.get('digest') or MISSING)[:16])}</code></div>{picture}</div>")


def render_report(rows: list[dict], *, run_id: str, title: str, images: dict[str, bytes | str]) -> str:
    """The report's HTML. ``rows`` are metrics rows as dicts (any value may be None); ``images``
    maps concept id → grid PNG bytes (embedded as a downscaled thumbnail) or a URI (linked)."""
    images = images or {}
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "failed", "skipped")}
    lifts = [v for r in rows if r.get("status") == "ok" and (v := _number(r.get("inversion_lift"))) is not None]
    mean_lift = sum(lifts) / len(lifts) if lifts else None
    run_date = next((r.get("run_date") for r in rows if r.get("run_date")), None)
    html = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<div class='muted'>run <code>{escape(str(run_id))}</code>"
        + (f" · {escape(str(run_date))}" if run_date else "")
        + f" · mean inversion lift of the concepts learned in this run: {_lift(mean_lift)}</div>",
        "<div class='pills'>" + "".join(f"<span class='{s}'>{s} {n}</span>" for s, n in counts.items()) + "</div>",
        "<p class='muted small'>Similarities are raw CLIP cosines in [-1, 1] (not the 2.5×-scaled CLIPScore). "
        "Lift = image similarity of the learned word minus that of the same prompts with plain words; "
        "positive means the learned word captures the concept better than words do.</p>",
        "<h2>Inversion lift across concepts</h2>"
        "<p class='muted small'>One bar per concept with a score; skipped concepts show the score of the run "
        "that learned them.</p>",
        f"<div class='chart'>{lift_chart(rows)}</div>",
    ]
    learned = sorted((r for r in rows if r.get("status") == "ok"), key=_cid)
    if learned:
        html.append(f"<h2>Concepts learned in this run ({len(learned)})</h2><div class='cards'>")
        html.extend(_card(row, images.get(_cid(row))) for row in learned)
        html.append("</div>")
    failed = sorted((r for r in rows if r.get("status") == "failed"), key=_cid)
    if failed:
        html.append(f"<h2>Failures ({len(failed)})</h2>")
        for row in failed:
            html.append(f"<div class='fail'><b>{escape(_cid(row))}</b>"
                        f"<pre>{escape(str(row.get('error') or 'no reason recorded'))}</pre></div>")
    skipped = sorted((r for r in rows if r.get("status") == "skipped"), key=_cid)
    if skipped:
        html.append(f"<h2>Skipped — already learned ({len(skipped)})</h2><ul class='skipped-list'>")
        for row in skipped:
            image = images.get(_cid(row))
            grid = image if isinstance(image, str) and image else row.get("grid_uri")
            extra = f" · {_link(grid, 'grid')}" if grid else ""
            html.append(f"<li>{escape(_cid(row))} · lift {_lift(row.get('inversion_lift'))}{extra}</li>")
        html.append("</ul>")
    if not rows:
        html.append("<p class='muted'>This run had no concepts.</p>")
    html.append("</body></html>")
    return "".join(html)


def write_report(out_uri: str, run_id: str, rows: list[dict], images: dict[str, bytes]) -> str:
    """Write ``reports/<run_id>.html`` and ``reports/latest.html`` under ``out_uri``; returns the run's report URL."""
    page = render_report(rows, run_id=run_id, title=f"sstar run {run_id}", images=images).encode("utf-8")
    store = open_store(out_uri)
    key = f"reports/{run_id}.html"
    store.put(key, page)
    store.put("reports/latest.html", page)
    return store.url(key)
