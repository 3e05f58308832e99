"""The dashboard and a run report in a real headless Chromium: no console errors, the charts drawn
(canvas elements with size and a Chart.js chart each), the concept table filled (its norm column too),
thumbnails and training-image strips loaded through their relative links. Chromium missing fails these tests
with a message (tests/browser.py)."""

from __future__ import annotations

import pytest

from tests.browser import open_page
from tests.flows.conftest import TwoRuns

pytestmark = pytest.mark.slow

CHARTS = """(() => Array.from(document.querySelectorAll('canvas')).map(c => {
  const box = c.getBoundingClientRect();
  return {id: c.id, width: box.width, height: box.height, chart: !!(window.Chart && Chart.getChart(c))};
}))()"""


def _charts_drawn(charts: list[dict], expected: set[str]) -> None:
    assert {c["id"] for c in charts} == expected
    for c in charts:
        assert c["chart"] and c["width"] > 50 and c["height"] > 50, c


def test_dashboard_renders_in_chromium(two_runs: TwoRuns) -> None:
    page = open_page(
        two_runs.out / "reports" / "dashboard.html",
        "({charts: " + CHARTS + ", rows: document.querySelectorAll('#concepts tbody tr').length,"
        " info: document.getElementById('concepts-info').textContent,"
        " links: Array.from(document.querySelectorAll('#concepts a')).map(a => a.getAttribute('href')),"
        " norms: Array.from(document.querySelectorAll('#concepts tbody tr')).map(tr => tr.children[8].textContent)})",
    )
    assert page.errors == []
    _charts_drawn(page.value["charts"], {"runs-counts", "runs-seconds", "lift-histogram", "slowest"})
    assert page.value["rows"] == 3 and page.value["info"].startswith("3 of 3 concepts")
    assert any(h.startswith("../embeddings/red-square/") and h.endswith("/grid.png") for h in page.value["links"])
    assert any(h.endswith("/learned_embeds.safetensors") for h in page.value["links"])  # the SD 1.x word's file
    assert sorted(n[-1] for n in page.value["norms"]) == ["×", "×", "—"]  # the corrupt concept has none


def test_run_report_renders_in_chromium_with_its_thumbnails(two_runs: TwoRuns) -> None:
    page = open_page(
        two_runs.out / "reports" / "views-run-1.html",
        "({charts: " + CHARTS + ", images: Array.from(document.images).map(i => "
        "({src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0}))})",
    )
    assert page.errors == []
    _charts_drawn(page.value["charts"], {"lift-chart"})
    images = page.value["images"]
    assert len(images) == 6  # the training images' strip, learned-word and words-only thumbnails of two concepts
    assert sum(i["src"].endswith("/training_images.jpg") for i in images) == 2
    assert all(i["loaded"] for i in images), images


def test_dashboard_with_10000_concepts_renders(tmp_path) -> None:
    """The catalog-size page (bench/dashboard_size.py measures its size and load time) is usable."""
    from bench.dashboard_size import synthetic_rows
    from reports.dashboard import render_dashboard, summarise
    from storage.results import ResultStore
    from storage.store.open import open_store

    page_path = tmp_path / "reports" / "dashboard.html"
    page_path.parent.mkdir()
    page_path.write_text(
        render_dashboard(summarise(synthetic_rows(10_000)), results=ResultStore(open_store(str(tmp_path))))
    )
    page = open_page(
        page_path,
        "({charts: " + CHARTS + ", rows: document.querySelectorAll('#concepts tbody tr')"
        ".length, info: document.getElementById('concepts-info').textContent})",
    )
    assert page.errors == []
    assert page.value["rows"] == 100 and page.value["info"].startswith("10000 of 10000 concepts")
    _charts_drawn(page.value["charts"], {"runs-counts", "runs-seconds", "lift-histogram", "slowest"})


def test_the_harness_sees_console_errors_exceptions_and_missing_files(tmp_path) -> None:
    """So that an empty error list above means something."""
    broken = tmp_path / "broken.html"
    broken.write_text("<!doctype html><img src='missing.png'><script>console.error('boom'); notDefined();</script>")
    page = open_page(broken, "document.images.length")
    assert page.value == 1
    text = "\n".join(page.errors)
    assert "boom" in text and "notDefined" in text and "missing.png" in text, page.errors
