"""The static HTML run report: escaping, counts, the lift chart, missing values, and writing it."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from flows.report import lift_chart, render_report, write_report

EVIL = "<script>alert('x')</script>"


def _row(concept_id: str, status: str = "ok", lift: float | None = 0.05, **extra) -> dict:
    row = dict(run_id="run-1", run_date="2024-05-01", concept_id=concept_id, digest="ab" * 32, token=f"<{concept_id}>",
               status=status, error=None, model="tiny", steps=20, vectors=1, lr=5e-3, image_similarity=0.81,
               text_similarity=0.27, baseline_image_similarity=0.76, baseline_text_similarity=0.25,
               inversion_lift=lift, final_loss=0.1234, train_seconds=12.5,
               embedding_uri=f"s3://bucket/results/{concept_id}/learned_embeds.safetensors",
               grid_uri=f"s3://bucket/results/{concept_id}/grid.png")
    row.update(extra)
    return row


def _png(width: int = 1600, height: int = 400) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def _bars(html: str) -> list[str]:
    return re.findall(r'<rect class="bar"[^>]*>', html)


@pytest.fixture
def rows() -> list[dict]:
    return [
        _row("cat", lift=0.12),
        _row("dog", lift=-0.03),
        _row("teapot", lift=None, image_similarity=None),
        _row(EVIL, status="failed", lift=None, error=f"bad image {EVIL} & more"),
        _row("broken", status="failed", lift=None, error="NaN loss at step 3"),
        _row("old-1", status="skipped", lift=0.02),
        _row("old-2", status="skipped", lift=None),
    ]


def test_user_controlled_text_is_escaped(rows: list[dict]) -> None:
    rows.append(_row(EVIL, lift=0.4, token=EVIL, embedding_uri="javascript:alert(1)"))
    html = render_report(rows, run_id=f"run-{EVIL}", title=f"title {EVIL}", images={EVIL: "javascript:alert(2)"})
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html
    assert "bad image &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in html
    assert 'href="javascript' not in html and "href='javascript" not in html


def test_header_counts_and_mean_lift(rows: list[dict]) -> None:
    html = render_report(rows, run_id="run-1", title="sstar run run-1", images={})
    assert "<span class='ok'>ok 3</span>" in html
    assert "<span class='failed'>failed 2</span>" in html
    assert "<span class='skipped'>skipped 2</span>" in html
    assert "run-1" in html
    # mean over this run's learned concepts with a score: (0.12 - 0.03) / 2
    assert '<span class="up">+0.045</span>' in html
    assert "raw CLIP cosines" in html and "not the 2.5×-scaled CLIPScore" in html


def test_chart_has_one_bar_per_scored_concept(rows: list[dict]) -> None:
    html = render_report(rows, run_id="run-1", title="t", images={})
    assert html.count("<svg") == 1
    bars = _bars(html)
    assert len(bars) == 3  # cat, dog, old-1 (scored); teapot, old-2 have no lift; failures are not charted
    colours = [re.search(r'fill="([^"]+)"', bar).group(1) for bar in bars]
    assert colours[-1] != colours[0]  # sorted high → low, the negative bar in another colour
    chart = lift_chart(rows)
    labels = re.findall(r'text-anchor="end" font-size="12">([^<]+)<', chart)
    assert labels == ["cat", "old-1", "dog"]
    assert "<line" in chart  # zero line


def test_chart_without_scores_and_nan_lift() -> None:
    assert "<svg" not in lift_chart([_row("a", lift=None), _row("b", lift=float("nan"))])
    assert len(_bars(lift_chart([_row("a", lift=0.1), _row("b", lift=float("nan"))]))) == 1


def test_missing_values_render_as_dash(rows: list[dict]) -> None:
    html = render_report(rows, run_id="run-1", title="t", images={})
    (teapot,) = [card for card in html.split("<div class='card'>") if card.startswith("<h3>teapot</h3>")]
    assert "<td>image similarity, learned word</td><td class='num'>—</td>" in teapot
    assert 'lift <span class="muted">—</span>' in teapot
    bare = render_report([{"concept_id": "x", "status": "ok"}], run_id="r", title="t", images={})
    assert bare.count("—") >= 10
    assert "None" not in bare and "nan" not in bare.lower()


def test_grid_is_embedded_as_a_downscaled_thumbnail_or_linked(rows: list[dict]) -> None:
    png = _png()
    html = render_report(rows, run_id="run-1", title="t",
                         images={"cat": png, "dog": "https://example.test/dog/grid.png", "teapot": b"not an image"})
    match = re.search(r"src='data:image/jpeg;base64,([^']+)'", html)
    assert match, "the cat's grid is embedded"
    with Image.open(io.BytesIO(base64.b64decode(match.group(1)))) as thumb:
        assert thumb.width <= 768
    assert 'href="https://example.test/dog/grid.png"' in html
    assert "grid image unreadable" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no external assets
    assert "<link" not in html and "<script" not in html
    assert html.count("data:image/jpeg") == 1  # skipped concepts are listed compactly, never embedded


def test_failures_and_skipped_are_listed(rows: list[dict]) -> None:
    html = render_report(rows, run_id="run-1", title="t", images={})
    assert "Failures (2)" in html and "NaN loss at step 3" in html
    skipped = html[html.index("Skipped"):]
    assert "old-1" in skipped and "old-2" in skipped
    assert 'href="s3://bucket/results/old-1/grid.png"' in skipped
    assert "<h3>old-1</h3>" not in html  # no card for a skipped concept
    assert 'href="s3://bucket/results/cat/learned_embeds.safetensors"' in html


def test_empty_run() -> None:
    html = render_report([], run_id="r", title="t", images={})
    assert "ok 0" in html and "no concepts" in html


def test_write_report_to_a_local_folder(tmp_path, rows: list[dict]) -> None:
    out = tmp_path / "out"
    url = write_report(str(out), "run-1", rows, {"cat": _png(400, 100)})
    run_page = out / "reports" / "run-1.html"
    latest = out / "reports" / "latest.html"
    assert run_page.is_file() and latest.is_file()
    assert run_page.read_bytes() == latest.read_bytes()
    assert "run-1.html" in url
    page = run_page.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "data:image/jpeg;base64," in page
