"""The run report says why each concept was learned (its ``relearn_reason``) and sums the run up in one line."""

from __future__ import annotations

import re

import pytest

from reports.run_page import render_report
from storage.results import ResultStore
from storage.store.open import open_store


def _row(concept_id: str, status: str = "ok", reason: str | None = None) -> dict:
    return dict(
        run_id="run-1",
        concept_id=concept_id,
        status=status,
        digest=f"{concept_id}-digest",
        token=f"<{concept_id}>",
        relearn_reason=reason,
        error="boom" if status == "failed" else None,
    )


@pytest.fixture
def key(tmp_path):
    return ResultStore(open_store(str(tmp_path))).key


def _render(rows: list[dict], key) -> str:
    return render_report(rows, run_id="run-1", title="t", result_key=key)


def test_the_header_counts_reasons_most_first_and_each_card_says_its_own(key) -> None:
    rows = [
        *(_row(f"m{i}", reason="model changed") for i in range(3)),
        _row("fresh", reason="new"),
        _row("moved", status="failed", reason="images changed + model changed"),
        _row("old", status="skipped"),
        _row("unusable", status="failed"),
    ]
    html = _render(rows, key)
    line = "Learned in this run because: <b>3 model changed, 1 images changed + model changed, 1 new</b>."
    assert line in html
    assert "the whole catalog is learned again" in html, "a model change says what it costs"
    cards = {c.split("</h3>")[0]: c for c in re.split(r"<div class='card(?: mini)?'><h3>", html)[1:]}
    assert "why learned: <b>model changed</b>" in cards["m0"] and "why learned: <b>new</b>" in cards["fresh"]
    fail = html.split("<b>moved</b>", 1)[1].split("</div></div>", 1)[0]
    assert "why learned: <b>images changed + model changed</b>" in fail
    assert "why learned" not in html.split("<b>unusable</b>", 1)[1].split("</pre>", 1)[0]


def test_no_reason_no_line(key) -> None:
    html = _render([_row("a"), _row("b", status="skipped")], key)  # rows written before the column: no reason
    assert "Learned in this run because" not in html and "why learned" not in html
    html = _render([_row("a", reason="settings changed")], key)
    assert "<b>1 settings changed</b>." in html and "the whole catalog is learned again" not in html


def test_a_reason_is_escaped(key) -> None:
    html = _render([_row("a", reason="<script>alert(1)</script>")], key)
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)" in html
