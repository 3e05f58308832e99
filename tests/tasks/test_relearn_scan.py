"""scan_catalog says why each concept to learn is learned (on its record, for its metrics row), staging keeps the
reason (and drops it for identical bytes found learned), and rows made elsewhere can take it from the record."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from storage.catalog import ConceptMeta, ConceptSpec
from storage.metrics import MetricsRow
from storage.results import ResultStore
from storage.scanstate import load_scan_state
from storage.store.open import open_store
from tasks.ingest import remember_scan, scan_catalog, stage_concept
from tasks.records import ConceptRecord, with_relearn_reason
from tests.conftest import write_shape_images

pytestmark = pytest.mark.usefixtures("quiet_run_logger")


@pytest.fixture
def two(tmp_path: Path) -> Path:
    catalog = tmp_path / "catalog"
    write_shape_images(catalog / "red", count=2, color=(220, 30, 30), seed=1)
    write_shape_images(catalog / "blue", count=2, color=(30, 30, 220), seed=2)
    return catalog


def _night(catalog: Path, learn, out: str, work: Path) -> dict[str, str | None]:
    """One catalog run without training: scan, stage what is to learn, publish a stand-in result for each,
    remember the scan. Returns each record's relearn reason (``None``: skipped)."""
    scan = scan_catalog.fn(str(catalog), learn, out_uri=out)
    results = ResultStore.open(out)
    staged = []
    for record in scan.records:
        if record.digest is not None and record.digest in scan.done.get(record.concept_id, ()):
            continue
        one = stage_concept(str(catalog), record, str(work), scan.done.get(record.concept_id, ()))
        staged.append(one)
        if not one.done:
            results.publish(record.concept_id, one.record.known_digest(), {"learned_embeds.safetensors": b"x"}, "r")
    remember_scan.fn(out, scan.state, scan.previous, staged)
    return {r.concept_id: r.relearn_reason for r in scan.records}


def test_scan_reasons_follow_images_settings_and_model(two: Path, learn, tmp_path: Path, monkeypatch) -> None:
    out, work = str(tmp_path / "out"), tmp_path / "work"
    assert _night(two, learn, out, work) == {"red": "new", "blue": "new"}
    assert _night(two, learn, out, work) == {"red": None, "blue": None}
    write_shape_images(two / "red", count=1, color=(250, 120, 0), seed=3)
    assert _night(two, learn, out, work) == {"red": "images changed", "blue": None}
    slower = learn.model_copy(update={"lr": learn.lr / 2})
    assert _night(two, slower, out, work) == {"red": "settings changed", "blue": "settings changed"}
    monkeypatch.setattr("tasks.ingest.model_fingerprint", lambda model: "folder:" + "9" * 64)
    assert _night(two, slower, out, work) == {"red": "model changed", "blue": "model changed"}
    state = load_scan_state(open_store(out), open_store(str(two)).uri)
    assert state.setups[state.setup].model == "folder:" + "9" * 64


def test_without_an_output_nothing_is_known_and_no_reason_is_given(two: Path, learn) -> None:
    scan = scan_catalog.fn(str(two), learn)
    assert [r.relearn for r in scan.records] == [(), ()]


def test_staging_keeps_the_reason_and_drops_it_for_bytes_already_learned(two: Path, learn, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    _night(two, learn, out, tmp_path / "work")
    (two / "red" / "00.png").write_bytes((two / "red" / "00.png").read_bytes())  # same bytes, a new listing entry
    scan = scan_catalog.fn(str(two), learn, out_uri=out)
    (red,) = [r for r in scan.records if r.concept_id == "red"]
    assert red.digest is None and red.relearn_reason == "images changed"  # the listing changed: read to know
    staged = stage_concept(str(two), red, str(tmp_path / "w2"), scan.done["red"])
    assert staged.done and staged.record.relearn == ()
    (two / "blue" / "04.png").write_bytes((two / "red" / "00.png").read_bytes())  # an image more: other bytes
    (blue,) = [r for r in scan_catalog.fn(str(two), learn, out_uri=out).records if r.concept_id == "blue"]
    staged = stage_concept(str(two), blue, str(tmp_path / "w3"), ())
    assert not staged.done and staged.record.relearn_reason == "images changed" and staged.record.digest


SPEC = ConceptSpec("red", ConceptMeta("<red>", "square", "square"), ("red/00.png",), "0123456789abcdef")


def test_a_record_carries_its_reasons_joined_in_one_order() -> None:
    record = ConceptRecord.of(SPEC, 2, ("model changed", "images changed"))
    assert record.relearn == ("model changed", "images changed") and record.vectors == 2
    assert record.relearn_reason == "images changed + model changed"
    assert ConceptRecord.of(SPEC).relearn_reason is None
    assert dataclasses.replace(record, spec=SPEC).relearn == record.relearn


def test_rows_made_elsewhere_take_the_reason_from_the_record_and_skipped_rows_have_none() -> None:
    record = ConceptRecord.of(SPEC, relearn=("new",))
    row = MetricsRow("run-1", "red", "ok")
    assert with_relearn_reason(row, record).relearn_reason == "new"
    assert with_relearn_reason(dataclasses.replace(row, relearn_reason="model changed"), record) == (
        dataclasses.replace(row, relearn_reason="model changed")
    )
    assert MetricsRow("run-1", "red", "skipped", relearn_reason="new").relearn_reason is None
    assert with_relearn_reason(MetricsRow("run-1", "red", "skipped"), record).relearn_reason is None
