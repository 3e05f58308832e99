"""validate_image: awkward-but-valid images are converted, broken or hostile ones rejected clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from storage.catalog import ConceptMeta, ConceptSpec
from storage.errors import InvalidImage, InvalidInput
from storage.images import ingest_concept, validate_image, write_pngs
from storage.store.local import LocalStore

from . import imagegen


@pytest.mark.parametrize(
    ("maker", "size"),
    [
        (imagegen.rgb_jpeg, (64, 48)),
        (imagegen.cmyk_jpeg, (40, 30)),
        (lambda: imagegen.palette_png(False), (20, 20)),
        (lambda: imagegen.palette_png(True), (20, 20)),
        (imagegen.gray16_png, (16, 16)),
        (imagegen.rgba_png, (10, 10)),
        (imagegen.la_png, (10, 10)),
        (imagegen.exif_rotated_jpeg, (20, 60)),  # orientation 6: rotated to portrait
        (imagegen.webp, (24, 24)),
    ],
    ids=["rgb", "cmyk", "palette", "palette-transparent", "gray16", "rgba", "la", "exif-rotated", "webp"],
)
def test_awkward_images_are_converted_to_rgb(maker, size) -> None:
    image = validate_image("x", maker())
    assert image.mode == "RGB"
    assert image.size == size


def test_conversions_keep_the_right_colours() -> None:
    rgba = validate_image("a.png", imagegen.rgba_png())
    assert rgba.getpixel((0, 0)) == (255, 255, 255)  # transparent → white
    assert rgba.getpixel((5, 5)) == (255, 0, 0)
    assert validate_image("p.png", imagegen.palette_png(True)).getpixel((0, 0)) == (255, 255, 255)
    assert validate_image("g.png", imagegen.gray16_png(65535)).getpixel((3, 3)) == (255, 255, 255)
    assert validate_image("g.png", imagegen.gray16_png(32768)).getpixel((3, 3)) == (128, 128, 128)
    assert validate_image("g.png", imagegen.gray16_png(200)).getpixel((3, 3)) == (1, 1, 1)  # dark stays dark
    cyan = validate_image("c.jpg", imagegen.cmyk_jpeg()).getpixel((5, 5))
    assert cyan[0] < 40 and cyan[1] > 200 and cyan[2] > 200


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"not an image at all", "not a decodable JPEG, PNG or WebP"),
        (imagegen.encode(Image.new("RGB", (8, 8)), "GIF"), "not a decodable JPEG, PNG or WebP"),
        (imagegen.truncated_jpeg(), "truncated or corrupt"),
        (imagegen.png_bomb(), "decompression bomb"),
    ],
    ids=["empty", "garbage", "gif", "truncated", "bomb"],
)
def test_broken_images_are_rejected_with_the_file_name(data: bytes, message: str) -> None:
    with pytest.raises(InvalidImage, match=message) as info:
        validate_image("concept/bad.png", data)
    assert str(info.value).startswith("concept/bad.png: ")


def test_pixel_limit_is_configurable() -> None:
    data = imagegen.rgb_png((300, 200))
    with pytest.raises(InvalidImage, match="300x200 = 60000 pixels exceeds the limit of 50000"):
        validate_image("big.png", data, max_pixels=50_000)
    assert validate_image("big.png", data, max_pixels=60_000).size == (300, 200)


def test_max_side_shrinks_keeping_aspect() -> None:
    image = validate_image("j.jpg", imagegen.rgb_jpeg((800, 400)), max_side=100)
    assert image.size == (100, 50)


def _spec(concept_id: str, names: list[str]) -> ConceptSpec:
    return ConceptSpec(
        concept_id, ConceptMeta.defaults(concept_id), tuple(f"{concept_id}/{n}" for n in names), "0" * 16
    )


def test_ingest_reports_bad_files_and_keeps_good_ones(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "cat")
    store.put("c/good.jpg", imagegen.rgb_jpeg())
    store.put("c/cut.jpg", imagegen.truncated_jpeg())
    store.put("c/rot.jpg", imagegen.exif_rotated_jpeg())
    ingested = ingest_concept(store, _spec("c", ["cut.jpg", "good.jpg", "rot.jpg", "gone.png"]))
    assert [key for key, _ in ingested.images] == ["c/good.jpg", "c/rot.jpg"]
    assert ingested.usable
    problems = {p.file: p.reason for p in ingested.problems}
    assert set(problems) == {"c/cut.jpg", "c/gone.png"}
    assert "truncated" in problems["c/cut.jpg"]
    assert "cannot read" in problems["c/gone.png"]


def test_concept_without_usable_image(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "cat")
    store.put("c/x.png", b"garbage")
    ingested = ingest_concept(store, _spec("c", ["x.png"]))
    assert not ingested.usable
    assert ingested.problems[-1].file is None and ingested.problems[-1].reason == "no usable image"


def test_write_pngs_hands_the_trainer_a_folder_of_rgb_pngs(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "cat")
    store.put("c/b.jpg", imagegen.cmyk_jpeg())
    store.put("c/a.png", imagegen.rgba_png())
    store.put("c/a.jpg", imagegen.rgb_jpeg())
    paths = write_pngs(ingest_concept(store, _spec("c", ["a.jpg", "a.png", "b.jpg"])).images, tmp_path / "train")
    assert [p.name for p in paths] == ["000_a.png", "001_a.png", "002_b.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB"
    with pytest.raises(InvalidInput, match="non-empty folder"):
        write_pngs(ingest_concept(store, _spec("c", ["a.jpg"])).images, tmp_path / "train")
