"""The static HTML run report: escaping, counts, the lift chart, missing values, linked thumbnails, the
training images' strip (and the plain note of a result learned before it), the steps run and why they stopped,
blown-up words, the summary of skipped concepts, its size at catalog scale, and writing it (from hand-built
rows, and from the two real catalog runs of ``two_runs``)."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest

from common.filenames import TRAINING_STRIP_FILENAME
from common.norms import BLOWN_UP_RATIO
from reports.run_page import MAX_BARS, MAX_LISTED, NO_STRIP_NOTE, STOP_REASONS, lift_chart, render_report, write_report
from storage.results import ResultStore
from storage.store.open import open_store

EVIL = "<script>alert('x')</script>"
DIGEST = "ab" * 8


def _row(concept_id: str, status: str = "ok", lift: float | None = 0.05, **extra) -> dict:
    row = dict(
        run_id="run-1",
        run_date="2024-05-01",
        concept_id=concept_id,
        digest=DIGEST,
        token=f"<{concept_id}>",
        status=status,
        error=None,
        model="tiny",
        steps=20,
        vectors=1,
        lr=5e-3,
        image_similarity=0.81,
        text_similarity=0.27,
        baseline_image_similarity=0.76,
        baseline_text_similarity=0.25,
        inversion_lift=lift,
        final_loss=0.1234,
        train_seconds=12.5,
        embedding_uri=f"s3://bucket/results/{concept_id}/learned_embeds.safetensors",
        grid_uri=f"s3://bucket/results/{concept_id}/grid.png",
    )
    row.update(extra)
    return row


@pytest.fixture
def key(tmp_path):
    return ResultStore(open_store(str(tmp_path))).key


def _render(rows, key, **kwargs) -> str:
    return render_report(
        rows, run_id=kwargs.pop("run_id", "run-1"), title=kwargs.pop("title", "t"), result_key=key, **kwargs
    )


def _card_of(html: str, concept_id: str) -> str:
    """The card (full or small) of ``concept_id`` in ``html``."""
    (card,) = [c for c in re.split(r"<div class='card(?: mini)?'>", html) if c.startswith(f"<h3>{concept_id}</h3>")]
    return card


def _chart_config(html: str) -> dict:
    match = re.search(r"<script type='application/json' data-chart-for='lift-chart'>(.*?)</script>", html)
    assert match, "the lift chart's configuration is in the page"
    return json.loads(match.group(1))


@pytest.fixture
def rows() -> list[dict]:
    return [
        _row("cat", lift=0.12),
        _row("dog", lift=-0.03),
        _row("teapot", lift=None, image_similarity=None),
        _row("bad-digest", lift=0.01, digest=None),
        _row("evil-fail", status="failed", lift=None, error=f"bad image {EVIL} & more"),
        _row("broken", status="failed", lift=None, error="NaN loss at step 3"),
        _row("old-1", status="skipped", lift=0.02),
        _row("old-2", status="skipped", lift=None),
    ]


def test_user_controlled_text_is_escaped(rows: list[dict], key) -> None:
    rows.append(_row("x", lift=0.4, token=EVIL, embedding_uri="javascript:alert(1)"))
    rows.append(_row(f"</script>{EVIL}", lift=0.3, stop_reason=EVIL))
    html = render_report(rows, run_id=f"run-{EVIL}", title=f"title {EVIL}", result_key=key)
    assert "<script>alert" not in html and "</script><script>alert" not in html
    assert "&lt;script&gt;" in html
    assert "bad image &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in html
    assert 'href="javascript' not in html and "href='javascript" not in html
    assert "\\u003c/script\\u003e" in html  # inside the chart's JSON the label cannot close the script element


def test_header_counts_and_mean_lift(rows: list[dict], key) -> None:
    html = _render(rows, key)
    assert "<span class='ok'>ok 4</span>" in html
    assert "<span class='failed'>failed 2</span>" in html
    assert "<span class='skipped'>skipped 2</span>" in html
    # mean over this run's learned concepts with a score: (0.12 - 0.03 + 0.01) / 3
    assert '<span class="up">+0.033</span>' in html
    assert "raw CLIP cosines" in html and "not the 2.5×-scaled CLIPScore" in html
    assert "href='dashboard.html'" in html


def test_chart_has_one_bar_per_learned_concept_with_a_score(rows: list[dict], key) -> None:
    html = _render(rows, key)
    config = _chart_config(html)
    assert config["type"] == "bar" and config["options"]["indexAxis"] == "y"
    (dataset,) = config["data"]["datasets"]
    assert config["data"]["labels"] == ["cat", "bad-digest", "dog"]  # sorted high → low; skipped/failed not charted
    assert dataset["data"] == [0.12, 0.01, -0.03]
    assert dataset["backgroundColor"][0] != dataset["backgroundColor"][-1]  # the negative bar in another colour
    assert html.count("Chart.js v") == 1  # the library is embedded once, no CDN
    assert "<svg" not in html


def test_many_concepts_chart_as_a_histogram(key) -> None:
    rows = [_row(f"c{i:04d}", lift=(i % 50 - 20) / 100) for i in range(MAX_BARS + 1)]
    config = _chart_config(lift_chart(rows))
    assert sum(config["data"]["datasets"][0]["data"]) == MAX_BARS + 1
    assert len(config["data"]["labels"]) == 30


def test_no_scores_no_chart_and_no_script() -> None:
    html = lift_chart([_row("a", lift=None), _row("b", lift=float("nan")), _row("c", status="skipped", lift=0.2)])
    assert "No concept learned in this run has a lift score" in html and "data-chart-for" not in html


def test_missing_values_render_as_dash(rows: list[dict], key) -> None:
    html = _render(rows, key)
    (teapot,) = [card for card in html.split("<div class='card'>") if card.startswith("<h3>teapot</h3>")]
    assert "<td>image similarity, learned word</td><td class='num'>—</td>" in teapot
    assert 'lift <span class="muted">—</span>' in teapot
    bare = render_report([{"concept_id": "x", "status": "ok"}], run_id="r", title="t", result_key=key)
    assert bare.count("—") >= 10
    assert "None" not in bare and "nan" not in bare.lower()


def test_grids_are_linked_thumbnails_never_embedded(rows: list[dict], key) -> None:
    html = _render(rows, key)
    (cat,) = [card for card in html.split("<div class='card'>") if card.startswith("<h3>cat</h3>")]
    prefix = f"../embeddings/cat/{DIGEST}/"
    assert f"src='{prefix}grid.thumb.jpg'" in cat and f"src='{prefix}baseline_grid.thumb.jpg'" in cat
    assert f"href='{prefix}grid.png'" in cat and f"href='{prefix}baseline_grid.png'" in cat
    assert "loading='lazy'" in cat
    (no_digest,) = [card for card in html.split("<div class='card'>") if card.startswith("<h3>bad-digest</h3>")]
    assert "<img" not in no_digest and "learned word: —" in no_digest
    assert "data:image" not in html and "base64" not in html
    assert "http://" not in html and "<link" not in html and "https://cdn" not in html


def test_failures_listed_and_skipped_summarised(rows: list[dict], key) -> None:
    html = _render(rows, key)
    assert "Failures (2)" in html and "NaN loss at step 3" in html
    skipped = html[html.index("Skipped") :]
    assert "Skipped — already learned (2)" in skipped
    assert 'mean <span class="up">+0.020</span>' in skipped
    assert "old-1" in skipped and "old-2" in skipped
    assert "<div class='card'><h3>old-1</h3>" not in html  # no full card for a skipped concept: a small one
    assert "<div class='card mini'><h3>old-1</h3>" in skipped
    assert 'href="s3://bucket/results/cat/learned_embeds.safetensors"' in html


def test_report_stays_small_at_catalog_size(key) -> None:
    """1,000 learned concepts, 5,000 skipped and 500 failures: cards link their thumbnails, skipped
    concepts are a summary, failures past MAX_LISTED are counted."""
    rows = (
        [_row(f"new-{i:04d}", lift=0.01 * (i % 7 - 2)) for i in range(1000)]
        + [_row(f"old-{i:05d}", status="skipped", lift=0.05) for i in range(5000)]
        + [_row(f"bad-{i:04d}", status="failed", lift=None, error="x" * 2000) for i in range(500)]
    )
    html = _render(rows, key)
    assert html.count("<div class='card'>") == 1000
    assert html.count("<div class='fail'>") == MAX_LISTED and f"… and {500 - MAX_LISTED} more failures" in html
    assert html.count("<div class='card mini'>") == 40 and "old-00039" in html
    assert "old-04999" not in html and "and 4960 more" in html
    assert len(html.encode()) < 2_500_000, len(html.encode())  # ~170 MB when grids were embedded


def test_empty_run(key) -> None:
    html = _render([], key)
    assert "ok 0" in html and "no concepts" in html


def test_write_report_to_a_local_folder(tmp_path, rows: list[dict]) -> None:
    out = tmp_path / "out"
    url = write_report(str(out), "run-1", rows)
    run_page = out / "reports" / "run-1.html"
    latest = out / "reports" / "latest.html"
    assert run_page.is_file() and latest.is_file()
    assert run_page.read_bytes() == latest.read_bytes()
    assert "run-1.html" in url
    page = run_page.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and f"../embeddings/cat/{DIGEST}/grid.thumb.jpg" in page


def test_cards_show_the_strip_of_the_training_images(rows: list[dict], key) -> None:
    """Learned and skipped concepts alike link their result's strip, captioned in HTML, lazy-loaded."""
    html = _render(rows, key)
    for concept_id in ("cat", "old-1"):
        card = _card_of(html, concept_id)
        src = f"../embeddings/{concept_id}/{DIGEST}/{TRAINING_STRIP_FILENAME}"
        assert f"<figure class='strip'><figcaption>training images</figcaption><a href='{src}'>" in card
        assert f"alt='training images of {concept_id}' loading='lazy' src='{src}'" in card
    assert "training images: —" in _card_of(html, "bad-digest")  # no digest, no picture


def test_a_result_learned_before_the_strip_says_so_plainly(rows: list[dict], key) -> None:
    note = "learned 2024-01-02 by run run-0, before sstar kept them"
    html = _render(rows, key, unsaved_strips={"old-1": note, "cat": note})
    for concept_id in ("old-1", "cat"):
        card = _card_of(html, concept_id)
        assert f"no training images saved for this result ({note})" in card
        assert TRAINING_STRIP_FILENAME not in card
    assert TRAINING_STRIP_FILENAME in _card_of(html, "old-2")


def test_cards_show_the_steps_run_and_why_they_stopped(key) -> None:
    rows = [
        _row("plateaued", steps=200, steps_run=100, stop_reason="plateau"),
        _row("capped", steps=200, steps_run=200, stop_reason="max_steps"),
        _row("older", steps=200),  # a row written before steps_run and stop_reason existed
    ]
    html = _render(rows, key)
    plateaued = _card_of(html, "plateaued")
    assert "<td>steps run</td><td class='num'>100 of 200</td>" in plateaued
    assert f"<td>stop reason</td><td class='num'>{STOP_REASONS['plateau']}</td>" in plateaued
    assert "<td>steps</td>" not in html  # the step cap alone is never shown as the steps run
    assert f"<td>stop reason</td><td class='num'>{STOP_REASONS['max_steps']}</td>" in _card_of(html, "capped")
    older = _card_of(html, "older")
    assert "<td>steps run</td><td class='num'>— of 200</td>" in older
    assert "<td>stop reason</td><td class='num'>—</td>" in older


def test_blown_up_words_are_flagged_with_their_ratio(key) -> None:
    rows = [
        _row("blown", norm_ratio=BLOWN_UP_RATIO + 2.5),
        _row("fine", norm_ratio=3.8),
        _row("older"),  # no norm_ratio: written before the column existed
        _row("blown-before", status="skipped", norm_ratio=40.0),
    ]
    html = _render(rows, key)
    flag = f'<span class="blown">blown up: {BLOWN_UP_RATIO + 2.5:.1f}× (over {BLOWN_UP_RATIO:g}×)</span>'
    blown = _card_of(html, "blown")
    assert f"· {flag}</div>" in blown and f"<td>largest norm / vocabulary mean</td><td class='num'>{flag}" in blown
    assert f"<span class='blown'>1 blown-up word(s)</span> blown ({BLOWN_UP_RATIO + 2.5:.1f}×)" in html
    fine = _card_of(html, "fine")
    assert "<td>largest norm / vocabulary mean</td><td class='num'>3.8×</td>" in fine and "blown" not in fine
    older = _card_of(html, "older")
    assert "<td>largest norm / vocabulary mean</td><td class='num'>—</td>" in older and "blown" not in older
    assert "blown up: 40.0×" in _card_of(html, "blown-before")
    assert "blown-up word" not in _render([_row("fine", norm_ratio=3.8), _row("older")], key)


def test_write_report_reads_no_manifest_and_a_missing_strip_turns_into_words(tmp_path, monkeypatch) -> None:
    """A skipped concept's card links its strip; where the result was published before staging wrote one, the
    page itself turns the card's picture into the plain note when it fails to load. The report reads no
    manifest: a quiet night reads nothing per concept (tests/flows/test_catalog_scale.py)."""
    out = tmp_path / "out"
    results = ResultStore(open_store(str(out)))
    results.publish("old", DIGEST, {"learned_embeds.safetensors": b"v"}, "run-0")
    results.publish("new", DIGEST, {"learned_embeds.safetensors": b"v", TRAINING_STRIP_FILENAME: b"jpeg"}, "run-1")
    monkeypatch.setattr(ResultStore, "read_manifest", lambda *a, **k: pytest.fail("the report read a manifest"))
    write_report(str(out), "run-2", [_row("old", status="skipped"), _row("new", status="skipped")])
    page = (out / "reports" / "run-2.html").read_text(encoding="utf-8")
    for concept_id in ("old", "new"):
        card = _card_of(page, concept_id)
        assert f"src='../embeddings/{concept_id}/{DIGEST}/{TRAINING_STRIP_FILENAME}'" in card
        assert "onerror=" in card and NO_STRIP_NOTE in unescape(card)


def test_the_real_runs_reports_link_strips_that_exist_and_show_the_steps_run(two_runs) -> None:
    """Two real catalog runs: the first learns two concepts, the second skips them; both reports show each
    concept's strip (a JPEG published with its result) and the first shows the steps each word ran."""
    reports = two_runs.out / "reports"
    first, second = (reports / f"{run_id}.html" for run_id in two_runs.run_ids)
    for page in (first, second):
        html = page.read_text(encoding="utf-8")
        strips = re.findall(rf"src='([^']*/{re.escape(TRAINING_STRIP_FILENAME)})'", html)
        assert len(strips) == 2, strips
        for src in strips:
            assert (reports / src).resolve().read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, where the link says
        assert "<p class='muted small'>no training images saved" not in html  # only the browser's fallback
    html = first.read_text(encoding="utf-8")
    for concept_id in ("red-square", "blue-square"):
        card = _card_of(html, concept_id)
        assert re.search(r"<td>steps run</td><td class='num'>[1-4] of 4</td>", card), card
        assert any(f"<td>stop reason</td><td class='num'>{text}</td>" in card for text in STOP_REASONS.values())
        assert re.search(r"<td>largest norm / vocabulary mean</td><td class='num'>[0-9.]+×</td>", card), card
