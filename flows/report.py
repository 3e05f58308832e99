"""The run report: one self-contained static HTML page written next to the metrics.

One card per concept (grid, scores, lift), failures with their reasons, skipped concepts, and an
inline-SVG chart of inversion lift across concepts. No scripts, no external assets.
"""

from __future__ import annotations

import base64
import io
from html import escape
from typing import Any

from storage.objectstore import open_store

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1d232b;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}.muted{color:#69727d}
.pills span{display:inline-block;padding:3px 10px;border-radius:12px;margin-right:6px;font-size:13px}
.ok{background:#dff3e4}.failed{background:#fbe0e0}.skipped{background:#e7eaee}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:12px}
.card h3{margin:0 0 6px;font-size:15px}.card img{max-width:100%;border-radius:4px;margin-top:8px}
table{border-collapse:collapse;font-size:13px;width:100%}td{padding:2px 6px 2px 0}td.num{text-align:right}
.up{color:#17803d;font-weight:600}.down{color:#b42318;font-weight:600}
.fail{background:#fff;border-left:4px solid #d92d20;padding:8px 12px;margin:6px 0;font-size:13px}
code{font-size:12px;word-break:break-all}
"""

_SCORES = (("image_similarity", "image similarity (learned word)"),
           ("baseline_image_similarity", "image similarity (words only)"),
           ("text_similarity", "text similarity (learned word)"),
           ("baseline_text_similarity", "text similarity (words only)"),
           ("final_loss", "final loss"), ("train_seconds", "train seconds"), ("steps", "steps"))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _lift(value: float | None) -> str:
    if value is None:
        return '<span class="muted">—</span>'
    css = "up" if value >= 0 else "down"
    return f'<span class="{css}">{value:+.3f}</span>'


def _thumbnail(png: bytes, width: int = 768) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def lift_chart(rows: list[dict]) -> str:
    """A horizontal bar chart (inline SVG) of inversion lift per concept, sorted, with a zero line."""
    scored = sorted((r for r in rows if r.get("inversion_lift") is not None), key=lambda r: r["inversion_lift"],
                    reverse=True)
    if not scored:
        return '<p class="muted">No concept was scored in this run.</p>'
    label_w, bar_w, row_h = 180, 360, 20
    span = max(0.05, max(abs(r["inversion_lift"]) for r in scored))
    zero = label_w + bar_w / 2
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 70}" '
             f'height="{row_h * len(scored) + 10}" role="img" aria-label="inversion lift per concept">']
    for i, row in enumerate(scored):
        lift = row["inversion_lift"]
        length = abs(lift) / span * (bar_w / 2)
        x = zero if lift >= 0 else zero - length
        y = 5 + i * row_h
        colour = "#2e9e5b" if lift >= 0 else "#d9534f"
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" font-size="12">'
                     f'{escape(str(row["concept_id"]))[:28]}</text>')
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{max(length, 1):.1f}" height="{row_h - 6}" '
                     f'fill="{colour}"><title>{escape(str(row["concept_id"]))}: {lift:+.4f}</title></rect>')
        anchor_x = zero + length + 4 if lift >= 0 else zero + 4
        parts.append(f'<text x="{anchor_x:.1f}" y="{y + 14}" font-size="11">{lift:+.3f}</text>')
    parts.append(f'<line x1="{zero}" y1="0" x2="{zero}" y2="{row_h * len(scored) + 10}" stroke="#1d232b"/>')
    parts.append("</svg>")
    return "".join(parts)


def render_report(rows: list[dict], *, run_id: str, title: str, images: dict[str, bytes | str]) -> str:
    """The report's HTML. ``rows`` are metrics rows as dicts; ``images`` maps concept id → grid PNG or URI."""
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "failed", "skipped")}
    lifts = [r["inversion_lift"] for r in rows if r.get("status") == "ok" and r.get("inversion_lift") is not None]
    mean_lift = sum(lifts) / len(lifts) if lifts else None
    html = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>",
            f"<h1>{escape(title)}</h1><p class='muted'>run <code>{escape(run_id)}</code> · mean inversion lift "
            f"{_lift(mean_lift)} · similarities are raw CLIP cosines in [-1, 1] (not the 2.5×-scaled CLIPScore); "
            "lift = image similarity of the learned word minus that of the words-only baseline</p>",
            "<p class='pills'>" + "".join(f"<span class='{s}'>{s} {n}</span>" for s, n in counts.items()) + "</p>",
            "<h2>Inversion lift across concepts</h2>", lift_chart([r for r in rows if r.get("status") != "failed"])]
    cards = [r for r in rows if r.get("status") in ("ok", "skipped")]
    if cards:
        html.append("<h2>Concepts</h2><div class='cards'>")
        for row in sorted(cards, key=lambda r: str(r["concept_id"])):
            cells = "".join(f"<tr><td>{label}</td><td class='num'>{_fmt(row.get(key))}</td></tr>"
                            for key, label in _SCORES)
            image = images.get(row["concept_id"])
            picture = ""
            if isinstance(image, bytes):
                picture = f"<img alt='grid of {escape(str(row['concept_id']))}' src='{_thumbnail(image)}'>"
            elif isinstance(image, str):
                picture = f"<p><a href='{escape(image)}'>grid</a></p>"
            html.append(
                f"<div class='card'><h3>{escape(str(row['concept_id']))} <span class='muted'>"
                f"{escape(str(row.get('token') or ''))}</span></h3>"
                f"<div>lift {_lift(row.get('inversion_lift'))} · <span class='{escape(str(row['status']))}'>"
                f"{escape(str(row['status']))}</span></div><table>{cells}</table>"
                f"<div class='muted'>embedding: <code>{_fmt(row.get('embedding_uri'))}</code></div>{picture}</div>")
        html.append("</div>")
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        html.append("<h2>Failures</h2>")
        for row in sorted(failed, key=lambda r: str(r["concept_id"])):
            html.append(f"<div class='fail'><b>{escape(str(row['concept_id']))}</b>: "
                        f"{escape(str(row.get('error') or 'unknown error'))}</div>")
    html.append("</body></html>")
    return "".join(html)


def write_report(out_uri: str, run_id: str, rows: list[dict], images: dict[str, bytes]) -> str:
    """Write ``reports/<run_id>.html`` and ``reports/latest.html`` under ``out_uri``; returns the run's report URI."""
    page = render_report(rows, run_id=run_id, title=f"sstar run {run_id}", images=images).encode("utf-8")
    store = open_store(out_uri)
    key = f"reports/{run_id}.html"
    store.put(key, page)
    store.put("reports/latest.html", page)
    return store.url(key)
