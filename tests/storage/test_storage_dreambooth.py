"""The real DreamBooth photos (30 subjects, read from ../shared, never copied into the repo)
uploaded to the S3 endpoint, discovered and ingested."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from storage.catalog import IMAGE_EXTENSIONS, discover_catalog
from storage.images import ingest_concept, write_pngs
from storage.store.open import open_store

from .helpers import unique_s3_uri

SETTINGS = {"model": "sd15", "steps": 3000, "lr": 0.005, "vectors": 1}

pytestmark = pytest.mark.slow


def _classes(dataset: Path) -> dict[str, str]:
    """subject → class from the dataset's prompts_and_classes.txt."""
    classes = {}
    for line in (dataset / "prompts_and_classes.txt").read_text().splitlines():
        subject, sep, cls = line.strip().partition(",")
        if sep and subject != "subject_name" and (dataset / subject).is_dir():
            classes[subject] = cls.strip()
    return classes


@pytest.fixture(scope="module")
def dreambooth(s3_client, s3_settings, dreambooth_dir):
    store = open_store(unique_s3_uri("dreambooth"), s3_settings)
    photos = sorted(p for p in dreambooth_dir.glob("*/*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    classes = _classes(dreambooth_dir)

    def upload(path: Path) -> None:
        store.put(f"{path.parent.name}/{path.name}", path.read_bytes())

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(upload, photos))
        list(
            pool.map(
                lambda item: store.put(f"{item[0]}/concept.json", json.dumps({"class": item[1]}).encode()),
                classes.items(),
            )
        )
    return store, photos, classes


def test_discover_all_30_concepts_with_stable_digests(dreambooth) -> None:
    store, photos, classes = dreambooth
    first = discover_catalog(store, SETTINGS)
    assert first.problems == ()
    assert len(first.specs) == 30 == len(classes)
    specs = first.by_id()
    assert sum(len(s.images) for s in first.specs) == len(photos) == 158
    assert specs["bear_plushie"].meta.class_name == "stuffed animal"
    assert specs["bear_plushie"].meta.initializer == "stuffed animal"
    assert specs["dog"].meta.token == "<dog>"
    assert len({s.digest for s in first.specs}) == 30

    second = discover_catalog(store, SETTINGS)
    assert {s.concept_id: s.digest for s in second.specs} == {s.concept_id: s.digest for s in first.specs}

    # change one photo of one concept: only that concept's digest moves
    key = specs["teapot"].images[0]
    original = store.get(key)
    store.put(key, original + b"\x00")  # bytes after the JPEG end marker: same picture, new content
    try:
        third = {s.concept_id: s.digest for s in discover_catalog(store, SETTINGS).specs}
    finally:
        store.put(key, original)
    changed = {c for c, d in third.items() if d != specs[c].digest}
    assert changed == {"teapot"}


def test_ingest_every_concept(dreambooth, tmp_path: Path) -> None:
    store, photos, _ = dreambooth
    scan = discover_catalog(store, SETTINGS)
    total = 0
    for spec in scan.specs:
        ingested = ingest_concept(store, spec, max_side=256)
        assert ingested.problems == (), ingested.problems
        for _key, image in ingested.images:
            assert image.mode == "RGB" and max(image.size) <= 256
        total += len(ingested.images)
    assert total == len(photos)
    paths = write_pngs(ingest_concept(store, scan.by_id()["bear_plushie"], max_side=512).images, tmp_path / "bear")
    assert len(paths) == len(scan.by_id()["bear_plushie"].images)
    assert all(p.suffix == ".png" and p.stat().st_size > 0 for p in paths)
