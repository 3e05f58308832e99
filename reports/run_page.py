"""The run report: one static HTML page per run, written next to the metrics.

A header (run id, ok/failed/skipped counts, mean inversion lift, one line on why concepts were learned —
``12 new, 3 images changed, 985 model changed`` from the rows' ``relearn_reason`` —, blown-up words), a chart of
the lift of the concepts learned in this run (bars per concept, a histogram past :data:`MAX_BARS`), one card per
learned concept (why it was learned, a strip of its own training images, its learned-word and words-only grid
thumbnails, scores, lift, token, the steps it ran and why it stopped, its norm against the vocabulary with a flag
when blown up, loss, train time, links), the failures with their reasons, and a summary of the skipped
concepts, the first :data:`MAX_SKIPPED_NAMES` with their training images.

The page stays small at catalog size: grids are never embedded. Each result carries small JPEG
thumbnails beside its grids (``grid.thumb.jpg``, written by :func:`inversion.evaluation.scoring.write_scores`)
and the strip of its training images (``training_images.jpg``, written at staging by :mod:`tasks.ingest`),
which the cards lazy-load through *relative* links (``../embeddings/<concept>/<digest>/…``), so the
page opens from a bucket or a local folder with no server; skipped concepts are counted and
summarised, not listed as cards. Its only script is the embedded chart library
(:mod:`reports.charts`); no external CSS, fonts, scripts or CDN. Everything that comes from a catalog or
an error message is HTML-escaped; links only keep safe schemes.

Results learned before staging wrote the strip have none: their card turns into words saying so when the
strip does not load (the report reads no manifest, so a quiet night reads nothing per concept).
Captions are HTML text, never drawn into the images.

Scores are raw CLIP cosines in [-1, 1] (see :mod:`inversion.evaluation.scoring`), not the 2.5×-scaled
CLIPScore; the lift is the learned word's image similarity minus the words-only baseline's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote, urlsplit

from common.filenames import (
    BASELINE_GRID_FILENAME,
    BASELINE_GRID_THUMBNAIL_FILENAME,
    GRID_FILENAME,
    GRID_THUMBNAIL_FILENAME,
    TRAINING_STRIP_FILENAME,
)
from common.norms import BLOWN_UP_RATIO
from reports.charts import bar_chart, chart, charts_script, histogram
from reports.style import (
    MISSING,
    PAGE_CSS,
    finite_number,
    format_lift,
    format_lr,
    format_norm_ratio,
    format_value,
    is_blown_up,
)
from storage.compositions import composition_prefix
from storage.metrics import STATUSES
from storage.relearn import relearn_summary
from storage.results import ResultStore
from storage.store.open import open_store

__all__ = ["MAX_BARS", "MAX_LISTED", "STOP_REASONS", "lift_chart", "NO_STRIP_NOTE", "render_report", "write_report"]

#: past this many learned concepts the lift chart is a histogram rather than one bar per concept
MAX_BARS = 60
#: failures listed one by one (the rest are counted); skipped concepts named in the summary
MAX_LISTED = 200
MAX_SKIPPED_NAMES = 40
#: ``(concept_id, digest, file name) -> key under the output root`` (``ResultStore.key``)
ResultKey = Callable[[str, str, str], str]
#: why training stopped (``stop_reason``, :mod:`inversion.training.stopping`), in words
STOP_REASONS = {"plateau": "plateau (the loss stopped improving)", "max_steps": "step cap reached"}
_SAFE_SCHEMES = {"http", "https", "s3", "gs", "file", ""}


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


def _relative(result_key: ResultKey, row: dict, name: str) -> str | None:
    """A link from ``reports/<page>.html`` to one of ``row``'s result files, or None without a digest."""
    digest = row.get("digest")
    if not isinstance(digest, str) or not digest:
        return None
    try:
        key = result_key(_cid(row), digest, name)
    except Exception:  # noqa: BLE001 - an id or digest the layout refuses only costs the card its picture
        return None
    return "../" + quote(key)


def _scored(rows: Sequence[dict]) -> list[tuple[dict, float]]:
    """The rows learned in this run (``ok``) that have a finite lift, each with its lift."""
    return [
        (r, v) for r in rows if r.get("status") == "ok" and (v := finite_number(r.get("inversion_lift"))) is not None
    ]


def lift_chart(rows: list[dict]) -> str:
    """The inversion lift of the concepts learned in this run (``ok`` rows with a score): one bar per
    concept sorted high to low (negative bars red) up to :data:`MAX_BARS` concepts, a histogram beyond."""
    scored = _scored(rows)
    if not scored:
        return f'<p class="muted">No concept learned in this run has a lift score ({MISSING}).</p>'
    scored.sort(key=lambda item: (-item[1], _cid(item[0])))
    if len(scored) <= MAX_BARS:
        config = bar_chart(
            [_cid(r) for r, _ in scored],
            [round(v, 4) for _, v in scored],
            series="inversion lift",
            x_title="inversion lift (raw cosine)",
            horizontal=True,
            signed_colours=True,
        )
        return chart("lift-chart", config, height=60 + 22 * len(scored), label="inversion lift per concept")
    labels, counts = histogram([v for _, v in scored], bins=30)
    config = bar_chart(labels, counts, series="concepts", x_title="inversion lift (raw cosine)", y_title="concepts")
    return chart("lift-chart", config, height=320, label="distribution of inversion lift")


def _figure(href: str | None, full: str | None, caption: str, alt: str, css: str = "") -> str:
    """A picture with its caption as HTML text, lazy-loaded from ``href`` and linked to ``full``; "—" without it."""
    if not href:
        return f"<figure><figcaption>{escape(caption)}: {MISSING}</figcaption></figure>"
    image = f"<img alt='{escape(alt, quote=True)}' loading='lazy' src='{escape(href, quote=True)}'>"
    if full:
        image = f"<a href='{escape(full, quote=True)}'>{image}</a>"
    css_class = f" class='{css}'" if css else ""
    return f"<figure{css_class}><figcaption>{escape(caption)}</figcaption>{image}</figure>"


#: what a card says where its result has no strip (learned before staging wrote one); the page finds out itself
#: (the picture fails to load), so a report reads no manifest (a quiet night reads nothing per concept)
NO_STRIP_NOTE = "no training images saved for this result (learned before sstar kept them)"
_NO_STRIP_FALLBACK = (
    "var f=this.closest('figure');this.closest('a').remove();var p=document.createElement('p');"
    f"p.className='muted small';p.textContent='{NO_STRIP_NOTE}';f.appendChild(p)"
)


def _strip(row: dict, result_key: ResultKey, unsaved: Mapping[str, str]) -> str:
    """The strip of the concept's training images, or the plain note that its result has none (``unsaved``:
    concept id → when that result was learned, where the caller knows; otherwise a skipped concept's card
    turns into the note in the browser when its strip does not load)."""
    cid = _cid(row)
    if cid in unsaved:
        return (
            "<figure><figcaption>training images</figcaption><p class='muted small'>no training images saved for "
            f"this result ({escape(unsaved[cid])})</p></figure>"
        )
    href = _relative(result_key, row, TRAINING_STRIP_FILENAME)
    figure = _figure(href, href, "training images", f"training images of {cid}", css="strip")
    if href and row.get("status") == "skipped":
        figure = figure.replace("<img ", f'<img onerror="{escape(_NO_STRIP_FALLBACK, quote=True)}" ', 1)
    return figure


def _steps_run(row: dict) -> tuple[tuple[str, str], ...]:
    """The steps the word actually ran, of the step cap, and why it stopped (table rows)."""
    reason = row.get("stop_reason")
    reason_text = escape(STOP_REASONS.get(reason, reason)) if isinstance(reason, str) and reason else MISSING
    return (
        ("steps run", f"{format_value(row.get('steps_run'))} of {format_value(row.get('steps'))}"),
        ("stop reason", reason_text),
    )


def _scores_table(row: dict) -> str:
    """The card's table: scores, the steps run and why they stopped, the norm, the settings and costs."""
    scores = (
        ("image similarity, learned word", format_value(row.get("image_similarity"))),
        ("image similarity, words only", format_value(row.get("baseline_image_similarity"))),
        ("text similarity, learned word", format_value(row.get("text_similarity"))),
        ("text similarity, words only", format_value(row.get("baseline_text_similarity"))),
        *_steps_run(row),
        ("largest norm / vocabulary mean", format_norm_ratio(row.get("norm_ratio"))),
        ("vectors", format_value(row.get("vectors"))),
        ("learning rate", format_lr(row.get("lr"))),
        ("final loss", format_value(row.get("final_loss"), 4)),
        ("train seconds", format_value(row.get("train_seconds"), 1)),
    )
    return (
        "<table>"
        + "".join(f"<tr><td>{label}</td><td class='num'>{value}</td></tr>" for label, value in scores)
        + "</table>"
    )


def _why(row: dict) -> str:
    """Why the concept was learned in this run (``relearn_reason``), as a line of its card; nothing when unknown."""
    reason = row.get("relearn_reason")
    if not isinstance(reason, str) or not reason:
        return ""
    return f"<div class='small relearn'>why learned: <b>{escape(reason)}</b></div>"


def _relearn_note(rows: list[dict]) -> str:
    """The run's one line on why its concepts were learned (``12 new, 3 images changed, 985 model changed``),
    with what a model change costs when there was one; nothing when no row says."""
    learned = [r.get("relearn_reason") for r in rows if r.get("status") != "skipped"]
    line = relearn_summary(r for r in learned if isinstance(r, str))
    if not line:
        return ""
    model = any(isinstance(r, str) and "model changed" in r for r in learned)
    cost = (
        " A new model changes every concept's digest: the whole catalog is learned again, at the cost of its "
        "first night."
        if model
        else ""
    )
    return f"<p class='relearn'>Learned in this run because: <b>{escape(line)}</b>.{cost}</p>"


def _card(row: dict, result_key: ResultKey, unsaved: Mapping[str, str]) -> str:
    """A learned concept's card: its training images, both grids, its scores and where its embedding is."""
    cid = _cid(row)
    pictures = (
        "<div class='grids'>"
        + _strip(row, result_key, unsaved)
        + _figure(
            _relative(result_key, row, GRID_THUMBNAIL_FILENAME),
            _relative(result_key, row, GRID_FILENAME),
            "learned word",
            f"learned word grid of {cid}",
        )
        + _figure(
            _relative(result_key, row, BASELINE_GRID_THUMBNAIL_FILENAME),
            _relative(result_key, row, BASELINE_GRID_FILENAME),
            "words only",
            f"words only grid of {cid}",
        )
        + "</div>"
    )
    flag = f" · {format_norm_ratio(row.get('norm_ratio'))}" if is_blown_up(row.get("norm_ratio")) else ""
    return (
        f"<div class='card'><h3>{escape(cid)}</h3>"
        f"<div>token <code>{format_value(row.get('token'))}</code> · "
        f"lift {format_lift(row.get('inversion_lift'))}{flag}</div>{_why(row)}"
        f"{pictures}{_scores_table(row)}"
        f"<div class='small'>embedding: {_link(row.get('embedding_uri'))}</div>"
        f"<div class='small muted'>model {format_value(row.get('model'))} · digest "
        f"<code>{escape(str(row.get('digest') or MISSING)[:16])}</code></div></div>"
    )


def _skipped_card(row: dict, result_key: ResultKey, unsaved: Mapping[str, str]) -> str:
    """A skipped concept, small: its name, the lift of its last learning and its training images."""
    flag = f" · {format_norm_ratio(row.get('norm_ratio'))}" if is_blown_up(row.get("norm_ratio")) else ""
    return (
        f"<div class='card mini'><h3>{escape(_cid(row))}</h3><div>lift {format_lift(row.get('inversion_lift'))}"
        f"{flag}</div><div class='grids'>{_strip(row, result_key, unsaved)}</div></div>"
    )


def _skipped_summary(skipped: list[dict], result_key: ResultKey, unsaved: Mapping[str, str]) -> str:
    """The skipped concepts: counted, their lifts summarised, the first :data:`MAX_SKIPPED_NAMES` shown small."""
    lifts = [v for r in skipped if (v := finite_number(r.get("inversion_lift"))) is not None]
    stats = (
        f"lift of their last learning: mean {format_lift(sum(lifts) / len(lifts))}, min {format_lift(min(lifts))}, "
        f"max {format_lift(max(lifts))}, below zero {sum(v < 0 for v in lifts)}"
        if lifts
        else "no lift scores"
    )
    cards = "".join(_skipped_card(r, result_key, unsaved) for r in skipped[:MAX_SKIPPED_NAMES])
    more = (
        f"<p class='muted small'>… and {len(skipped) - MAX_SKIPPED_NAMES} more</p>"
        if len(skipped) > MAX_SKIPPED_NAMES
        else ""
    )
    return (
        f"<h2>Skipped — already learned ({len(skipped)})</h2>"
        f"<p>{len(skipped)} concept(s) had a complete result for their current digest; {stats}. "
        f"Per-concept scores, grids and embeddings of every concept: the <a href='dashboard.html'>dashboard</a>."
        f"</p><div class='cards'>{cards}</div>{more}"
    )


def _composition_card(row: dict) -> str:
    """A composition's card: its grid thumbnail (relative link), per-concept image similarities, text similarity."""
    cid = str(row.get("composition_id") or MISSING)
    key = row.get("key")
    grid = ""
    if row.get("status") != "failed" and isinstance(key, str) and key:
        try:
            base = "../" + quote(composition_prefix(cid, key))
            grid = _figure(
                f"{base}/{GRID_THUMBNAIL_FILENAME}",
                f"{base}/{GRID_FILENAME}",
                "composition",
                f"composition grid of {cid}",
            )
        except Exception:  # noqa: BLE001 - an id the layout refuses only costs the card its picture
            grid = ""
    concepts = list(row.get("concepts") or ())
    similarities = list(row.get("image_similarities") or ())
    cells = "".join(
        f"<tr><td>image similarity to {escape(str(c))}</td><td class='num'>{format_value(v)}</td></tr>"
        for c, v in zip(concepts, similarities)
    )
    text_similarity = format_value(row.get("text_similarity"))
    cells += f"<tr><td>text similarity (class words)</td><td class='num'>{text_similarity}</td></tr>"
    error = f"<pre>{escape(str(row.get('error')))}</pre>" if row.get("error") else ""
    return (
        f"<div class='card'><h3>{escape(cid)} <span class='small {escape(str(row.get('status')))}'>"
        f"{escape(str(row.get('status')))}</span></h3><div><code>{escape(str(row.get('prompt') or ''))}</code></div>"
        f"{error}<div class='grids'>{grid}</div><table>{cells}</table></div>"
    )


def _header(rows: list[dict], run_id: str, title: str) -> list[str]:
    """The page's head and the run's summary: counts per status, the mean lift, the definitions."""
    counts = {s: sum(r.get("status") == s for r in rows) for s in STATUSES}
    lifts = [v for _, v in _scored(rows)]
    mean_lift = sum(lifts) / len(lifts) if lifts else None
    run_date = next((r.get("run_date") for r in rows if r.get("run_date")), None)
    return [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{PAGE_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<div class='muted'>run <code>{escape(str(run_id))}</code>"
        + (f" · {escape(str(run_date))}" if run_date else "")
        + f" · mean inversion lift of the concepts learned in this run: {format_lift(mean_lift)}"
        + " · <a href='dashboard.html'>all runs</a></div>",
        "<div class='pills'>" + "".join(f"<span class='{s}'>{s} {n}</span>" for s, n in counts.items()) + "</div>",
        _relearn_note(rows),
        _blown_up_note(rows),
        "<p class='muted small'>Similarities are raw CLIP cosines in [-1, 1] (not the 2.5×-scaled CLIPScore). "
        "Lift = image similarity of the learned word minus that of the same prompts with plain words; "
        "positive means the learned word captures the concept better than words do.</p>",
    ]


def _blown_up_note(rows: list[dict]) -> str:
    """The words learned in this run whose norm is blown up, named; nothing when none is."""
    blown = [r for r in rows if r.get("status") == "ok" and is_blown_up(r.get("norm_ratio"))]
    if not blown:
        return ""
    names = ", ".join(f"{escape(_cid(r))} ({finite_number(r['norm_ratio']):.1f}×)" for r in blown[:MAX_SKIPPED_NAMES])
    more = f" and {len(blown) - MAX_SKIPPED_NAMES} more" if len(blown) > MAX_SKIPPED_NAMES else ""
    return (
        f"<p><span class='blown'>{len(blown)} blown-up word(s)</span> {names}{more}: the largest vector norm is over "
        f"{BLOWN_UP_RATIO:g}× its text encoder's mean vocabulary norm, so the word may drown the rest of a prompt "
        "(<code>sstar inspect</code> shows each vector).</p>"
    )


def _failures(failed: list[dict]) -> list[str]:
    """The failures with their reasons, the first :data:`MAX_LISTED` one by one and the rest counted."""
    html = [f"<h2>Failures ({len(failed)})</h2>"]
    html.extend(
        f"<div class='fail'><b>{escape(_cid(row))}</b>{_why(row)}"
        f"<pre>{escape(str(row.get('error') or 'no reason recorded'))}</pre></div>"
        for row in failed[:MAX_LISTED]
    )
    if len(failed) > MAX_LISTED:
        html.append(
            f"<p class='muted'>… and {len(failed) - MAX_LISTED} more failures: see the metrics "
            "(<code>status = 'failed'</code>) or the <a href='dashboard.html'>dashboard</a>.</p>"
        )
    return html


def _compositions(compositions: Sequence[dict]) -> list[str]:
    """The compositions, one card each, by id."""
    return [
        f"<h2>Compositions ({len(compositions)})</h2><p class='muted small'>Each prompt names several "
        "learned words; image similarity to each word's training images, text similarity with the prompt "
        "in class words. Skipped: unchanged prompt and concepts, the earlier rendering.</p>"
        "<div class='cards'>",
        *(_composition_card(c) for c in sorted(compositions, key=lambda c: str(c.get("composition_id")))),
        "</div>",
    ]


def render_report(
    rows: list[dict],
    *,
    run_id: str,
    title: str,
    result_key: ResultKey,
    compositions: Sequence[dict] = (),
    unsaved_strips: Mapping[str, str] | None = None,
) -> str:
    """The report's HTML. ``rows`` are metrics rows as dicts (any value may be None); ``result_key``
    maps (concept id, digest, file name) to the file's key under the output root
    (:meth:`storage.results.ResultStore.key`), for the relative links to grids and thumbnails.
    ``compositions`` are composition rows as dicts (:mod:`storage.compositions`), shown with their grids.
    ``unsaved_strips``: concept id → when its result was learned, for results known to have no strip of their
    training images; every other card links its strip (a skipped one falls back to :data:`NO_STRIP_NOTE`)."""
    unsaved = unsaved_strips or {}
    by_status = {s: sorted((r for r in rows if r.get("status") == s), key=_cid) for s in STATUSES}
    # 1. the head, the run's summary and the lift chart
    lift = lift_chart(rows)
    html = _header(rows, run_id, title)
    html += ["<h2>Inversion lift of the concepts learned in this run</h2>", f"<div class='chart'>{lift}</div>"]
    # 2. one card per concept learned in this run
    if learned := by_status["ok"]:
        html.append(f"<h2>Concepts learned in this run ({len(learned)})</h2><div class='cards'>")
        html.extend(_card(row, result_key, unsaved) for row in learned)
        html.append("</div>")
    # 3. the failures, then the skipped concepts summarised
    if by_status["failed"]:
        html += _failures(by_status["failed"])
    if by_status["skipped"]:
        html.append(_skipped_summary(by_status["skipped"], result_key, unsaved))
    # 4. the compositions
    if compositions:
        html += _compositions(compositions)
    if not rows:
        html.append("<p class='muted'>This run had no concepts.</p>")
    # 5. the chart library, only when a chart needs it
    if "data-chart-for" in lift:
        html.append(charts_script())
    html.append("</body></html>")
    return "".join(html)


def write_report(out_uri: str, run_id: str, rows: list[dict], compositions: Sequence[dict] = ()) -> str:
    """Write ``reports/<run_id>.html`` and ``reports/latest.html`` under ``out_uri``; returns the run's report URL.

    Reads nothing: the grids' thumbnails and the training images' strip were published with each result and
    are linked, not embedded (a skipped result without a strip says so in the browser: :data:`NO_STRIP_NOTE`).
    """
    store = open_store(out_uri)
    results = ResultStore(store)
    page = render_report(
        rows,
        run_id=run_id,
        title=f"sstar run {run_id}",
        result_key=results.key,
        compositions=list(compositions),
    ).encode("utf-8")
    key = f"reports/{run_id}.html"
    store.put(key, page)
    store.put("reports/latest.html", page)
    return store.url(key)
