"""``sstar dashboard``: one static page over ALL runs of an output root, for the data team.

``<out>/reports/dashboard.html`` is rewritten by every catalog run (and by ``sstar dashboard --out``)
from the Parquet metrics (:func:`storage.metrics.read_metrics`). It shows, per concept, the latest
status and scores with links to its grid and embedding (a searchable, sortable, paged table); the
distribution of inversion lift and the concepts where the learned word loses to words; runs over
time (ok / failed / skipped counts, training and evaluation seconds, mean lift); the current
failures grouped by reason; the slowest concepts; the words whose norm is blown up (``norm_ratio`` above
:data:`common.norms.BLOWN_UP_RATIO`, flagged in the table too; rows written before the column existed
show a dash).

The aggregates are those of the SQL views in ``sql/views.sql`` (same definitions: latest row per
concept by ``created_at`` then ``run_id``; a failure's *reason* is its first line with quoted text and
numbers masked), and a test checks the two agree. The page is self-contained: data as JSON, charts by
the embedded Chart.js (:mod:`reports.charts`), links relative to ``reports/`` so it opens from a bucket
or a local folder. At 10,000 concepts it stays under 5 MB (README).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from html import escape
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from common.filenames import GRID_FILENAME, word_filename
from common.norms import BLOWN_UP_RATIO, blown_up
from reports.charts import (
    STATUS_COLOURS,
    bar_chart,
    chart,
    charts_script,
    histogram,
    json_for_script,
    line_chart,
    stacked_bar_chart,
)
from reports.style import PAGE_CSS, finite_number, format_lift, format_norm_ratio
from storage.metrics import METRICS_SCHEMA, STATUSES, read_metrics
from storage.results import ResultStore
from storage.store.base import ObjectStore
from storage.store.open import open_store

__all__ = [
    "DASHBOARD_KEY",
    "STATE_KEY",
    "Dashboard",
    "DashboardState",
    "failure_reason",
    "refresh_dashboard",
    "render_dashboard",
    "summarise",
    "write_dashboard",
]

DASHBOARD_KEY = "reports/dashboard.html"
#: what the page is made from, so that a run adds its own rows instead of re-reading the metrics history
STATE_KEY = "reports/dashboard-state.parquet"
_RUNS_META = "sstar.runs"
SLOWEST = 20
MAX_LOSERS = 100
MAX_REASON_CHARS = 160
_ERROR_CHARS = 300  # per concept in the page's table (the metrics keep up to 4000)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_DIGITS = re.compile(r"[0-9]+")


def failure_reason(error: str | None) -> str | None:
    """What a failure's message says without its particulars: the first line, quoted text → ``'…'``,
    digit runs → ``#``, at most 160 characters (``sql/views.sql`` computes the same)."""
    if error is None:
        return None
    line = error.split("\n", 1)[0]
    return _DIGITS.sub("#", _QUOTED.sub("'…'", line))[:MAX_REASON_CHARS]


def _latest_key(row: dict) -> tuple:
    return (row["created_at"], row["run_id"])


@dataclass(frozen=True)
class Dashboard:
    """What the page shows (see the module docstring for the definitions)."""

    latest: list[dict[str, Any]]  # one row per concept: its most recent metrics row
    runs: list[dict[str, Any]]  # one per run, oldest first
    reasons: list[dict[str, Any]]  # current failures (latest status failed) grouped by reason, most first
    slowest: list[dict[str, Any]]  # latest ok row per concept, by train_seconds, slowest first
    generated_at: datetime
    #: concept → its current result's norm_ratio (a skipped row's is its learning's: the same digest's ok row)
    norm_ratios: dict[str, float] = field(default_factory=dict)


@dataclass
class DashboardState:
    """The fold over metrics rows that the page is made from. It merges: a catalog run adds its own rows
    to the stored state (:data:`STATE_KEY`) instead of re-reading the metrics history."""

    latest: dict[str, dict[str, Any]] = field(default_factory=dict)  # concept → its most recent row
    latest_ok: dict[str, dict[str, Any]] = field(default_factory=dict)  # concept → its most recent ok row
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id → counts, seconds, lift sum

    def add(self, rows: Iterable[dict[str, Any]]) -> "DashboardState":
        """Fold metrics rows (dicts with :data:`storage.metrics.METRICS_SCHEMA`'s columns) in; returns self."""
        for row in rows:
            cid = row["concept_id"]
            if cid not in self.latest or _latest_key(row) > _latest_key(self.latest[cid]):
                self.latest[cid] = row
            if row["status"] == "ok" and (
                cid not in self.latest_ok or _latest_key(row) > _latest_key(self.latest_ok[cid])
            ):
                self.latest_ok[cid] = row
            run = self.runs.setdefault(
                row["run_id"],
                {
                    "run_id": row["run_id"],
                    "run_date": row["run_date"],
                    "started_at": row["created_at"],
                    "finished_at": row["created_at"],
                    "concepts": 0,
                    **dict.fromkeys(STATUSES, 0),
                    "train_seconds": 0.0,
                    "eval_seconds": 0.0,
                    "lift_sum": 0.0,
                    "lift_count": 0,
                },
            )
            run["run_date"] = min(run["run_date"], row["run_date"])
            run["started_at"] = min(run["started_at"], row["created_at"])
            run["finished_at"] = max(run["finished_at"], row["created_at"])
            run["concepts"] += 1
            run[row["status"]] += 1
            run["train_seconds"] += row.get("train_seconds") or 0.0
            run["eval_seconds"] += row.get("eval_seconds") or 0.0
            if row["status"] == "ok" and row.get("inversion_lift") is not None:
                run["lift_sum"] += row["inversion_lift"]
                run["lift_count"] += 1
        return self

    def dashboard(self, now: datetime | None = None) -> Dashboard:
        """The page's content: sorted concepts and runs, failures grouped by reason, the slowest concepts."""
        runs = [
            {**r, "mean_lift": r["lift_sum"] / r["lift_count"] if r["lift_count"] else None} for r in self.runs.values()
        ]
        groups: dict[str, list[dict]] = defaultdict(list)
        for row in self.latest.values():
            if row["status"] == "failed":
                groups[failure_reason(row.get("error")) or "no reason recorded"].append(row)
        reasons = [
            {
                "reason": reason,
                "concepts": len(members),
                "examples": sorted(r["concept_id"] for r in members)[:5],
                "last_seen": max(r["created_at"] for r in members),
            }
            for reason, members in groups.items()
        ]
        reasons.sort(key=lambda g: (-g["concepts"], g["reason"]))
        slowest = sorted(
            (r for r in self.latest_ok.values() if r.get("train_seconds") is not None),
            key=lambda r: (-r["train_seconds"], r["concept_id"]),
        )[:SLOWEST]
        return Dashboard(
            latest=[self.latest[c] for c in sorted(self.latest)],
            runs=sorted(runs, key=lambda r: (r["started_at"], r["run_id"])),
            reasons=reasons,
            slowest=slowest,
            generated_at=now or datetime.now(timezone.utc),
            norm_ratios=self.norm_ratios(),
        )

    def norm_ratios(self) -> dict[str, float]:
        """Concept → the norm ratio of its current result: its latest row's, or, for a row that carries none
        (skipped), its latest ok row's when that learned the same digest. Failed concepts and rows written
        before the column existed have none."""
        ratios: dict[str, float] = {}
        for cid, row in self.latest.items():
            ratio = row.get("norm_ratio")
            learned = self.latest_ok.get(cid)
            if ratio is None and row["status"] == "skipped" and learned and learned.get("digest") == row.get("digest"):
                ratio = learned.get("norm_ratio")
            if row["status"] != "failed" and (number := finite_number(ratio)) is not None:
                ratios[cid] = number
        return ratios

    def to_parquet(self) -> bytes:
        """The state as one Parquet file: the latest rows (column ``kind``) and the runs as JSON metadata."""
        schema = METRICS_SCHEMA.append(pa.field("kind", pa.string(), nullable=False))
        records = [
            {**row, "kind": kind}
            for kind, rows in (("latest", self.latest), ("latest_ok", self.latest_ok))
            for row in rows.values()
        ]
        runs = json.dumps(list(self.runs.values()), default=lambda v: v.isoformat())
        table = pa.Table.from_pylist(records, schema=schema).replace_schema_metadata({_RUNS_META: runs})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()

    @classmethod
    def from_parquet(cls, data: bytes) -> "DashboardState":
        """The inverse of :meth:`to_parquet`."""
        table = pq.read_table(io.BytesIO(data))
        state = cls()
        for record in table.to_pylist():
            kind = record.pop("kind")
            (state.latest if kind == "latest" else state.latest_ok)[record["concept_id"]] = record
        for run in json.loads(table.schema.metadata[_RUNS_META.encode()]):
            run["run_date"] = date.fromisoformat(run["run_date"])
            run["started_at"] = datetime.fromisoformat(run["started_at"])
            run["finished_at"] = datetime.fromisoformat(run["finished_at"])
            state.runs[run["run_id"]] = run
        return state


def summarise(rows: Iterable[dict[str, Any]], now: datetime | None = None) -> Dashboard:
    """The dashboard's content over metrics rows (dicts with :data:`storage.metrics.METRICS_SCHEMA`'s columns)."""
    return DashboardState().add(rows).dashboard(now)


def _round(value: Any, digits: int = 4) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def _table_data(latest: list[dict], results: ResultStore, norm_ratios: dict[str, float]) -> dict[str, Any]:
    """The per-concept table as compact JSON columns; ``prefix`` is each result's folder relative to ``reports/``,
    ``embedding`` the file in it that stands for the word (its model family's: :func:`~common.filenames.word_filename`),
    ``norm_ratio`` its current result's (``blown_up``: the line above which the page flags it)."""
    columns = (
        "concept_id",
        "status",
        "run_id",
        "inversion_lift",
        "image_similarity",
        "baseline_image_similarity",
        "text_similarity",
        "train_seconds",
        "prefix",
        "embedding",
        "error",
        "norm_ratio",
    )
    data = []
    for row in latest:
        prefix = embedding = None
        if row.get("digest") and row["status"] != "failed":
            try:
                prefix = "../" + quote(results.prefix(row["concept_id"], row["digest"]))
            except Exception:  # noqa: BLE001 - an id or digest the layout refuses is shown without links
                prefix = None
            embedding = quote(word_filename(row.get("token") or "", row.get("model_family")))
        error = row.get("error")
        data.append(
            [
                row["concept_id"],
                row["status"],
                row["run_id"],
                *(_round(row.get(c)) for c in columns[3:8]),
                prefix,
                embedding,
                error[:_ERROR_CHARS] if error else None,
                _round(norm_ratios.get(row["concept_id"]), 2),
            ]
        )
    return {
        "columns": columns,
        "rows": data,
        "grid": GRID_FILENAME,
        "blown_up": BLOWN_UP_RATIO,
    }


_TABLE_JS = """
(function () {
  var data = JSON.parse(document.getElementById('concept-data').textContent);
  var col = {}; data.columns.forEach(function (c, i) { col[c] = i; });
  var body = document.querySelector('#concepts tbody'), info = document.getElementById('concepts-info');
  var search = document.getElementById('concept-search'), status = document.getElementById('concept-status');
  var state = {sort: 'concept_id', desc: false, page: 0, size: 100};
  function num(v) { return v === null ? '\\u2014' : v.toFixed(3); }
  function cell(tr, text, cls) { var td = document.createElement('td'); td.textContent = text;
    if (cls) { td.className = cls; } tr.appendChild(td); return td; }
  function link(td, href, text) { var a = document.createElement('a'); a.href = href; a.textContent = text;
    td.appendChild(a); td.appendChild(document.createTextNode(' ')); }
  function rows() {
    var q = search.value.toLowerCase(), s = status.value, c = col[state.sort];
    var out = data.rows.filter(function (r) { return (!s || r[col.status] === s) &&
      (!q || r[col.concept_id].toLowerCase().indexOf(q) >= 0); });
    out.sort(function (a, b) { var x = a[c], y = b[c];
      if (x === y) { return 0; } if (x === null) { return 1; } if (y === null) { return -1; }
      return (x < y ? -1 : 1) * (state.desc ? -1 : 1); });
    return out;
  }
  function draw() {
    var all = rows(), pages = Math.max(1, Math.ceil(all.length / state.size));
    state.page = Math.min(state.page, pages - 1);
    body.textContent = '';
    all.slice(state.page * state.size, (state.page + 1) * state.size).forEach(function (r) {
      var tr = document.createElement('tr');
      cell(tr, r[col.concept_id]); cell(tr, r[col.status], 'st-' + r[col.status]); cell(tr, r[col.run_id]);
      var lift = r[col.inversion_lift];
      cell(tr, lift === null ? '\\u2014' : (lift >= 0 ? '+' : '') + lift.toFixed(3),
           'num ' + (lift === null ? '' : lift >= 0 ? 'up' : 'down'));
      cell(tr, num(r[col.image_similarity]), 'num'); cell(tr, num(r[col.baseline_image_similarity]), 'num');
      cell(tr, num(r[col.text_similarity]), 'num');
      cell(tr, r[col.train_seconds] === null ? '\\u2014' : r[col.train_seconds].toFixed(1), 'num');
      var ratio = r[col.norm_ratio], blown = ratio !== null && ratio > data.blown_up;
      var norm = cell(tr, ratio === null ? '\\u2014' : ratio.toFixed(1) + '\\u00d7', 'num');
      if (blown) { var flag = document.createElement('span'); flag.className = 'blown';
                   flag.textContent = 'blown up'; norm.textContent += ' '; norm.appendChild(flag); }
      var links = cell(tr, '');
      if (r[col.prefix]) { link(links, r[col.prefix] + '/' + data.grid, 'grid');
                           link(links, r[col.prefix] + '/' + r[col.embedding], 'embedding'); }
      cell(tr, r[col.error] || '', 'err');
      body.appendChild(tr);
    });
    info.textContent = all.length + ' of ' + data.rows.length + ' concepts \\u00b7 page ' + (state.page + 1) +
      ' of ' + pages;
  }
  document.querySelectorAll('#concepts th[data-col]').forEach(function (th) {
    th.addEventListener('click', function () { var c = th.getAttribute('data-col');
      state.desc = state.sort === c ? !state.desc : c !== 'concept_id'; state.sort = c; draw(); });
  });
  search.addEventListener('input', function () { state.page = 0; draw(); });
  status.addEventListener('change', function () { state.page = 0; draw(); });
  document.getElementById('prev').addEventListener('click', function () {
    state.page = Math.max(0, state.page - 1); draw(); });
  document.getElementById('next').addEventListener('click', function () { state.page += 1; draw(); });
  draw();
})();
"""

_EXTRA_CSS = """
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:14px}
.panel{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:12px 14px}
.panel h2{margin:0 0 8px}
table.data th{text-align:left;font-weight:600;border-bottom:1px solid #dde1e6;padding:3px 8px 3px 0;cursor:pointer}
table.data td{border-bottom:1px solid #f0f1f3}td.err{font-size:12px;color:#8a1c12;max-width:420px}
.st-ok{color:#17803d}.st-failed{color:#b42318}.st-skipped{color:#69727d}
.controls{display:flex;gap:8px;align-items:center;margin:6px 0}.scroll{max-height:280px;overflow-y:auto}
"""


def _runs_charts(runs: list[dict]) -> str:
    labels = [f"{r['run_date']} {r['run_id'][-8:]}" for r in runs]
    counts = stacked_bar_chart(
        labels,
        {s: [r[s] for r in runs] for s in STATUSES},
        y_title="concepts",
        colours=STATUS_COLOURS,
    )
    seconds = line_chart(
        labels,
        {
            "train seconds": [round(r["train_seconds"], 1) for r in runs],
            "eval seconds": [round(r["eval_seconds"], 1) for r in runs],
            "mean lift": [_round(r["mean_lift"]) for r in runs],
        },
        y_title="seconds (sum over concepts)",
        right_axis=("mean lift",),
    )
    return (
        f"<div class='grid2'><div class='panel'><h2>Concepts per run</h2>"
        f"{chart('runs-counts', counts, height=280, label='ok, failed and skipped concepts per run')}</div>"
        f"<div class='panel'><h2>Time and lift per run</h2>"
        f"{chart('runs-seconds', seconds, height=280, label='train and eval seconds and mean lift per run')}"
        f"</div></div>"
    )


def _lift_panel(latest: list[dict]) -> str:
    lifts = [r["inversion_lift"] for r in latest if r.get("inversion_lift") is not None]
    losers = sorted(
        (r for r in latest if r.get("inversion_lift") is not None and r["inversion_lift"] < 0),
        key=lambda r: (r["inversion_lift"], r["concept_id"]),
    )
    if lifts:
        labels, counts = histogram(lifts, bins=30)
        body = chart(
            "lift-histogram",
            bar_chart(labels, counts, series="concepts", y_title="concepts", x_title="inversion lift (raw cosine)"),
            height=280,
            label="distribution of inversion lift",
        )
    else:
        body = "<p class='muted'>No concept has a lift score yet.</p>"
    rows = "".join(
        f"<tr><td>{escape(r['concept_id'])}</td><td class='num'>{format_lift(r['inversion_lift'])}</td>"
        f"<td>{escape(r['run_id'])}</td></tr>"
        for r in losers[:MAX_LOSERS]
    )
    more = f"<p class='muted small'>… and {len(losers) - MAX_LOSERS} more</p>" if len(losers) > MAX_LOSERS else ""
    loser_html = (
        f"<div class='scroll'><table class='data'><tr><th>concept</th><th>lift</th><th>run</th></tr>{rows}"
        f"</table></div>{more}"
        if losers
        else "<p class='muted'>None: the learned word beats words on every scored concept.</p>"
    )
    return (
        f"<div class='grid2'><div class='panel'><h2>Inversion lift, latest per concept ({len(lifts)})</h2>{body}"
        f"</div><div class='panel'><h2>Learned word loses to words ({len(losers)})</h2>{loser_html}</div></div>"
    )


def _blown_up_panel(dashboard: Dashboard) -> str:
    """The concepts whose current word is blown up, largest ratio first, each with its ratio and run."""
    latest = {r["concept_id"]: r for r in dashboard.latest}
    blown = sorted(
        ((cid, ratio) for cid, ratio in dashboard.norm_ratios.items() if blown_up(ratio)), key=lambda c: (-c[1], c[0])
    )
    title = f"Blown-up words ({len(blown)})"
    if not blown:
        return (
            f"<div class='panel'><h2>{title}</h2><p class='muted'>None: no word's largest norm is over "
            f"{BLOWN_UP_RATIO:g}× its vocabulary's mean (words learned before the metrics kept it: —).</p></div>"
        )
    rows = "".join(
        f"<tr><td>{escape(cid)}</td><td class='num'>{format_norm_ratio(ratio)}</td>"
        f"<td>{escape(latest[cid]['run_id'])}</td></tr>"
        for cid, ratio in blown[:MAX_LOSERS]
    )
    more = f"<p class='muted small'>… and {len(blown) - MAX_LOSERS} more</p>" if len(blown) > MAX_LOSERS else ""
    return (
        f"<div class='panel'><h2>{title}</h2><p class='muted small'>The largest vector norm is over "
        f"{BLOWN_UP_RATIO:g}× its text encoder's mean vocabulary norm: the word may drown the rest of a prompt "
        f"(<code>sstar inspect</code> shows each vector).</p><div class='scroll'><table class='data'>"
        f"<tr><th>concept</th><th>norm ×vocab</th><th>run</th></tr>{rows}</table></div>{more}</div>"
    )


def _failures_panel(reasons: list[dict]) -> str:
    if not reasons:
        return "<div class='panel'><h2>Current failures</h2><p class='muted'>No concept is failing.</p></div>"
    rows = "".join(
        f"<tr><td class='num'>{g['concepts']}</td><td class='err'>{escape(g['reason'])}</td>"
        f"<td>{escape(', '.join(g['examples']))}</td><td>{escape(str(g['last_seen'])[:19])}</td></tr>"
        for g in reasons
    )
    total = sum(g["concepts"] for g in reasons)
    plural = "s" if len(reasons) != 1 else ""
    return (
        f"<div class='panel'><h2>Current failures by reason ({total} concepts, {len(reasons)} reason{plural})</h2>"
        f"<table class='data'><tr><th>concepts</th><th>reason</th><th>examples</th><th>last seen</th></tr>"
        f"{rows}</table></div>"
    )


def _slowest_panel(slowest: list[dict]) -> str:
    if not slowest:
        return ""
    config = bar_chart(
        [r["concept_id"] for r in slowest],
        [round(r["train_seconds"], 1) for r in slowest],
        series="train seconds",
        x_title="train seconds (latest learning)",
        horizontal=True,
    )
    return (
        f"<div class='panel'><h2>Slowest concepts (latest learning)</h2>"
        f"{chart('slowest', config, height=60 + 20 * len(slowest), label='slowest concepts')}</div>"
    )


def render_dashboard(dashboard: Dashboard, *, results: ResultStore, title: str = "sstar dashboard") -> str:
    """The dashboard's HTML for ``dashboard``; ``results`` gives the result folders the links point into."""
    counts = Counter(r["status"] for r in dashboard.latest)
    last = dashboard.runs[-1] if dashboard.runs else None
    header = (
        f"<h1>{escape(title)}</h1><div class='muted'>{len(dashboard.latest)} concepts · "
        f"{len(dashboard.runs)} runs · generated {dashboard.generated_at:%Y-%m-%d %H:%M} UTC"
        + (
            f" · latest run <a href='{escape(quote(last['run_id']), quote=True)}.html'>"
            f"{escape(last['run_id'])}</a> (mean lift {format_lift(last['mean_lift'])})"
            if last
            else ""
        )
        + "</div><div class='pills'>"
        + "".join(f"<span class='{s}'>latest {s} {counts.get(s, 0)}</span>" for s in STATUSES)
        + "</div><p class='muted small'>Similarities are raw CLIP cosines in [-1, 1]; lift = image similarity "
        "of the learned word minus that of the words-only baseline. Same definitions as "
        "<code>sql/views.sql</code>.</p>"
    )
    table = (
        "<div class='panel'><h2>Concepts: latest status and scores</h2><div class='controls'>"
        "<input id='concept-search' type='search' placeholder='filter concepts'>"
        "<select id='concept-status'><option value=''>any status</option><option>ok</option>"
        "<option>failed</option><option>skipped</option></select>"
        "<button id='prev' type='button'>‹ prev</button><button id='next' type='button'>next ›</button>"
        "<span id='concepts-info' class='muted small'></span></div>"
        "<table id='concepts' class='data'><thead><tr>"
        "<th data-col='concept_id'>concept</th><th data-col='status'>status</th><th data-col='run_id'>run</th>"
        "<th data-col='inversion_lift'>lift</th><th data-col='image_similarity'>image sim</th>"
        "<th data-col='baseline_image_similarity'>words-only image sim</th>"
        "<th data-col='text_similarity'>text sim</th><th data-col='train_seconds'>train s</th>"
        "<th data-col='norm_ratio'>norm ×vocab</th>"
        "<th>links</th><th data-col='error'>error</th></tr></thead><tbody></tbody></table>"
        f"<script type='application/json' id='concept-data'>"
        f"{json_for_script(_table_data(dashboard.latest, results, dashboard.norm_ratios))}</script></div>"
    )
    empty = "" if dashboard.runs else "<p class='muted'>No runs yet: the metrics are empty.</p>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{PAGE_CSS}{_EXTRA_CSS}</style></head><body>"
        f"{header}{empty}<h2>Runs over time</h2>{_runs_charts(dashboard.runs)}<h2>Quality</h2>"
        f"{_lift_panel(dashboard.latest)}{_blown_up_panel(dashboard)}<h2>Failures and cost</h2><div class='grid2'>"
        f"{_failures_panel(dashboard.reasons)}{_slowest_panel(dashboard.slowest)}</div><h2>All concepts</h2>"
        f"{table}{charts_script()}<script>{_TABLE_JS}</script></body></html>"
    )


#: how many times a run re-renders the page when the state changed under it (another run's refresh)
_PAGE_ROUNDS = 5


def _write(store: ObjectStore, merge: Callable[[bytes | None], bytes | None]) -> str:
    """Update the state by compare-and-swap (``merge``: stored state bytes → new ones; two runs at once both keep
    their rows), then write the page of the state as stored. A page written from a state that another run has
    since replaced is written again from the newer state: the last page written is the last state's."""
    state = store.update(STATE_KEY, merge)
    for _ in range(_PAGE_ROUNDS):
        assert state is not None
        page = render_dashboard(DashboardState.from_parquet(state).dashboard(), results=ResultStore(store))
        store.put(DASHBOARD_KEY, page.encode("utf-8"))
        stored = store.get(STATE_KEY)
        if stored == state:
            break
        state = stored
    return store.url(DASHBOARD_KEY)


def write_dashboard(out_uri: str) -> str:
    """Rebuild ``reports/dashboard.html`` (and its state) from every metrics row under ``out_uri``; returns its URL."""
    rebuilt = DashboardState().add(read_metrics(out_uri).to_pylist()).to_parquet()
    return _write(open_store(out_uri), lambda _stored: rebuilt)


def refresh_dashboard(
    out_uri: str, rows: list[dict[str, Any]], logger: logging.Logger | logging.LoggerAdapter
) -> str | None:
    """After a run: add the run's ``rows`` (already appended to the metrics) to the stored state and rewrite
    the page, reading one small state object instead of the metrics history. Without a usable state, or when
    the state already holds this run, the state is rebuilt from the metrics (as :func:`write_dashboard`).

    A failure is logged, not raised: the run's own outputs are already written, and ``sstar dashboard
    --out`` rebuilds the page at any time."""
    run_ids = {r["run_id"] for r in rows}
    rebuilt: list[bytes] = []  # the metrics are read at most once, however often the merge runs

    def merge(stored: bytes | None) -> bytes:
        state = None
        if rows and stored is not None:
            try:
                state = DashboardState.from_parquet(stored)
            except Exception as exc:  # noqa: BLE001 - a corrupt state costs one rebuild, never a wrong page
                logger.warning("dashboard state unreadable (%s); rebuilding from the metrics", exc)
        if state is not None and not run_ids & set(state.runs):
            return state.add(rows).to_parquet()
        if not rebuilt:
            rebuilt.append(DashboardState().add(read_metrics(out_uri).to_pylist()).to_parquet())
        return rebuilt[0]

    try:
        return _write(open_store(out_uri), merge)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        logger.warning("dashboard not refreshed (%s); rebuild it with: sstar dashboard --out %s", exc, out_uri)
        return None
