"""tasks.ingest: scanning a catalog into records, and staging a concept's validated images locally (with their
thumbnail strip)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from common.filenames import TRAINING_STRIP_FILENAME
from storage.catalog import discover_catalog
from storage.store.open import open_store
from tasks.ingest import (
    STRIP_HEIGHT,
    STRIP_MAX_IMAGES,
    learning_identity,
    remember_scan,
    scan_catalog,
    stage_concept,
    write_training_strip,
)

pytestmark = pytest.mark.usefixtures("quiet_run_logger")


def _full_read_digests(catalog: Path, learn) -> dict[str, str]:
    """Each concept's digest from a scan that reads every image (no state from earlier scans)."""
    return {s.concept_id: s.digest for s in discover_catalog(open_store(str(catalog)), learning_identity(learn)).specs}


def _staged(catalog: Path, learn, work: Path, concept_ids: list[str] | None = None):
    scan = scan_catalog.fn(str(catalog), learn, concept_ids)
    return {r.concept_id: stage_concept(str(catalog), r, str(work)) for r in scan.records}


def test_scan_finds_usable_concepts_and_says_why_others_are_not(catalog: Path, learn) -> None:
    scan = scan_catalog.fn(str(catalog), learn)
    assert [r.concept_id for r in scan.records] == ["broken", "half", "red-square"]
    square = next(r for r in scan.records if r.concept_id == "red-square")
    assert (square.token, square.initializer, square.class_name, square.property, square.vectors) == (
        "<red-square>",
        "square",
        "square",
        "object",
        1,
    )
    assert square.images == ("red-square/00.png", "red-square/01.png")
    ((concept_id, reason),) = scan.unusable
    assert concept_id == "bad-meta" and "property must be one of" in reason


def test_a_token_the_model_already_knows_is_unusable_before_any_image_is_read(catalog: Path, learn) -> None:
    (catalog / "red-square" / "concept.json").write_text(json.dumps({"token": "cat", "initializer": "square"}))
    scan = scan_catalog.fn(str(catalog), learn, ["red-square"])
    assert scan.records == []
    ((concept_id, reason),) = scan.unusable
    assert concept_id == "red-square" and "cat is already a word" in reason


def test_a_known_word_in_other_case_is_unusable_too(catalog: Path, learn) -> None:
    """CLIP's tokenizer lowercases prompts before matching added words: ``CAT`` would be ``cat``."""
    (catalog / "red-square" / "concept.json").write_text(json.dumps({"token": "CAT", "initializer": "square"}))
    ((concept_id, reason),) = scan_catalog.fn(str(catalog), learn, ["red-square"]).unusable
    assert concept_id == "red-square" and "CAT is already a word" in reason


@pytest.mark.parametrize(
    "tokens",
    [
        ({"token": "<twin>"}, {"token": "<twin>"}),  # the same word twice
        ({"token": "<Twin>"}, {"token": "<tWIN>"}),  # one word to the tokenizer, which ignores case
        ({"token": "<twin>", "vectors": 2}, {"token": "<twin>_1"}),  # a second vector's name is taken
    ],
    ids=["same", "case", "vector-name"],
)
def test_concepts_whose_tokens_collide_are_refused_naming_each_other(catalog: Path, learn, tokens) -> None:
    for concept_id, meta in zip(("red-square", "half"), tokens):
        (catalog / concept_id / "concept.json").write_text(json.dumps({"initializer": "square", **meta}))
    scan = scan_catalog.fn(str(catalog), learn)
    assert [r.concept_id for r in scan.records] == ["broken"], "the others keep their place in the run"
    reasons = dict(scan.unusable)
    assert "red-square's" in reasons["half"] and "half's" in reasons["red-square"], reasons
    assert all("collides with" in reasons[c] for c in ("half", "red-square"))


def test_distinct_tokens_do_not_collide(catalog: Path, learn) -> None:
    (catalog / "half" / "concept.json").write_text(json.dumps({"token": "<red-square>-2", "initializer": "square"}))
    assert [r.concept_id for r in scan_catalog.fn(str(catalog), learn).records] == ["broken", "half", "red-square"]


def test_staging_finishes_each_digest_as_a_full_read_computes_it(catalog: Path, learn, tmp_path: Path) -> None:
    staged = _staged(catalog, learn, tmp_path / "work")
    assert {cid: s.record.digest for cid, s in staged.items()} == _full_read_digests(catalog, learn)


def test_digests_follow_the_learning_settings(catalog: Path, learn, tmp_path: Path) -> None:
    first = {cid: s.record.digest for cid, s in _staged(catalog, learn, tmp_path / "a").items()}
    more_steps = learn.model_copy(update={"steps": 3})
    other = {cid: s.record.digest for cid, s in _staged(catalog, more_steps, tmp_path / "b").items()}
    assert first.keys() == other.keys() and all(first[c] != other[c] for c in first)


def test_a_remembered_scan_knows_unchanged_digests_without_reading_images(catalog: Path, learn, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    scan = scan_catalog.fn(str(catalog), learn, out_uri=out)
    staged = [stage_concept(str(catalog), r, str(tmp_path / "work")) for r in scan.records]
    remember_scan.fn(out, scan.state, scan.previous, staged)
    again = scan_catalog.fn(str(catalog), learn, out_uri=out)
    assert {r.concept_id: r.digest for r in again.records} == {s.record.concept_id: s.record.digest for s in staged}


def test_vector_override_applies_to_every_record(catalog: Path, learn) -> None:
    scan = scan_catalog.fn(str(catalog), learn.model_copy(update={"vectors": 3}))
    assert {r.vectors for r in scan.records} == {3}


def test_a_remembered_scan_with_a_vector_override_knows_the_digest_staging_finishes(
    catalog: Path, learn, tmp_path: Path
) -> None:
    """With ``--vectors`` overriding concept.json's count, the scan's digest took the file's count while staging
    took the override: such concepts were never skipped at scan time, and every night read their images."""
    three = learn.model_copy(update={"vectors": 3})
    out = str(tmp_path / "out")
    scan = scan_catalog.fn(str(catalog), three, out_uri=out)
    staged = [stage_concept(str(catalog), r, str(tmp_path / "work")) for r in scan.records]
    remember_scan.fn(out, scan.state, scan.previous, staged)
    again = scan_catalog.fn(str(catalog), three, out_uri=out)
    assert {r.concept_id: r.digest for r in again.records} == {s.record.concept_id: s.record.digest for s in staged}


def test_scan_of_some_concepts_only(catalog: Path, learn) -> None:
    scan = scan_catalog.fn(str(catalog), learn, ["half", "bad-meta"])
    assert [r.concept_id for r in scan.records] == ["half"] and [cid for cid, _ in scan.unusable] == ["bad-meta"]


def test_stage_writes_decoded_pngs_and_reports_bad_files(catalog: Path, learn, tmp_path: Path) -> None:
    staged = _staged(catalog, learn, tmp_path / "work", ["half"])["half"]
    assert staged.error is None and not staged.done and staged.num_images == 1
    assert Path(staged.work_dir) == tmp_path / "work" / f"half-{staged.record.digest}"
    (png,) = sorted(Path(staged.image_dir).iterdir())
    with Image.open(png) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.tobytes() == Image.open(catalog / "half" / "00.png").convert("RGB").tobytes()
    (problem,) = staged.problems
    assert problem.startswith("half/cut.png: ")


def test_stage_writes_the_strip_of_the_training_images_beside_them(catalog: Path, learn, tmp_path: Path) -> None:
    staged = _staged(catalog, learn, tmp_path / "work", ["red-square"])["red-square"]
    strip = Path(staged.work_dir) / TRAINING_STRIP_FILENAME
    with Image.open(strip) as image:  # two 80×80 pictures at the strip's height, 2 px apart
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (2 * STRIP_HEIGHT + 2, STRIP_HEIGHT))
        second = image.crop((STRIP_HEIGHT + 2, 0, 2 * STRIP_HEIGHT + 2, STRIP_HEIGHT))
    with Image.open(catalog / "red-square" / "01.png") as source:
        expected = source.convert("RGB").resize((STRIP_HEIGHT, STRIP_HEIGHT))
    assert max(ImageStat.Stat(ImageChops.difference(second, expected)).mean) < 6  # JPEG's loss only
    assert strip.stat().st_size < 20_000


def test_the_strip_keeps_aspect_caps_width_and_count(tmp_path: Path) -> None:
    images = [Image.new("RGB", (400, 100), "red"), Image.new("RGB", (50, 200), "blue")] * STRIP_MAX_IMAGES
    path = write_training_strip(images, tmp_path / "strip.jpg")
    widths = [2 * STRIP_HEIGHT, STRIP_HEIGHT // 4] * (STRIP_MAX_IMAGES // 2)  # 4:1 capped at 2:1; 1:4 kept
    with Image.open(path) as image:
        assert image.size == (sum(widths) + 2 * (STRIP_MAX_IMAGES - 1), STRIP_HEIGHT)


def test_a_retried_stage_starts_from_a_clean_folder(catalog: Path, learn, tmp_path: Path) -> None:
    (record,) = scan_catalog.fn(str(catalog), learn, ["red-square"]).records
    first = stage_concept(str(catalog), record, str(tmp_path / "work"))
    stale = Path(first.image_dir) / "left-by-a-killed-attempt.png"
    stale.write_bytes(b"half written")
    again = stage_concept(str(catalog), record, str(tmp_path / "work"))
    assert again.record == first.record and again.image_dir == first.image_dir
    assert not stale.exists() and len(list(Path(again.image_dir).iterdir())) == 2


def test_a_concept_already_done_is_not_decoded(catalog: Path, learn, tmp_path: Path) -> None:
    (record,) = scan_catalog.fn(str(catalog), learn, ["red-square"]).records
    digest = _full_read_digests(catalog, learn)["red-square"]
    staged = stage_concept(str(catalog), record, str(tmp_path / "work"), done_digests=[digest])
    assert staged.done and staged.record.digest == digest and staged.error is None
    assert not Path(staged.image_dir).exists() and not (Path(staged.work_dir) / TRAINING_STRIP_FILENAME).exists()


def test_stage_of_a_concept_without_usable_images_is_an_error_not_an_exception(
    catalog: Path, learn, tmp_path: Path
) -> None:
    staged = _staged(catalog, learn, tmp_path / "work", ["broken"])["broken"]
    assert staged.num_images == 0 and staged.error.startswith("no usable image (broken/junk.png: ")
    assert not Path(staged.image_dir).exists()
