"""Catalog discovery, concept.json defaults and validation, content digests — on both backends."""

from __future__ import annotations

import json
import re

import pytest

from storage.catalog import ConceptMeta, concept_digest, discover_catalog, validate_concept_id
from storage.errors import InvalidConcept, InvalidInput
from storage.images import ingest_concept
from storage.store.base import ObjectStore

from . import imagegen


def test_meta_defaults_for_objects_and_styles() -> None:
    meta = ConceptMeta.defaults("simba")
    assert meta.to_dict() == {
        "token": "<simba>",
        "initializer": "object",
        "class": "object",
        "property": "object",
        "vectors": 1,
        "captions": [],
    }
    style = ConceptMeta.from_dict("monet", {"property": "style"})
    assert (style.initializer, style.class_name, style.token) == ("painting", "painting", "<monet>")
    by_class = ConceptMeta.from_dict("c", {"class": "cat"})
    assert (by_class.initializer, by_class.class_name) == ("cat", "cat")
    by_init = ConceptMeta.from_dict("c", {"initializer": "kitten"})
    assert (by_init.initializer, by_init.class_name) == ("kitten", "kitten")
    full = ConceptMeta.from_json(
        "c",
        json.dumps(
            {
                "initializer": "cat",
                "property": "object",
                "vectors": 3,
                "class": "feline",
                "captions": ["a ginger cat on a sofa"],
                "token": "<simba>",
            }
        ).encode(),
    )
    assert full.to_dict() == {
        "token": "<simba>",
        "initializer": "cat",
        "class": "feline",
        "property": "object",
        "vectors": 3,
        "captions": ["a ginger cat on a sofa"],
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "concept.json is not valid JSON: .* at line 1 column 2"),
        (b"[1, 2]", "must hold a JSON object"),
        (b'{"property": "animal"}', "property must be one of object, style, got 'animal'"),
        (b'{"vectors": 0}', r"vectors must be an integer in 1..64, got 0"),
        (b'{"vectors": "2"}', "vectors must be an integer"),
        (b'{"vectors": true}', "vectors must be an integer"),
        (b'{"vector": 2}', "unknown key\\(s\\) 'vector'"),
        (b'{"token": "two words"}', "token must be one word"),
        (b'{"initializer": ""}', "initializer must be a non-empty string"),
        (b'{"captions": "a photo of {}"}', "captions must be a list of strings"),
        (b'{"captions": [" "]}', "each caption must be a non-empty description"),
        (b'{"captions": ["my <c1> on a sofa"], "token": "<c1>"}', "contains the token <c1>"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_bad_concept_json_messages(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidConcept, match=message) as info:
        ConceptMeta.from_json("c", raw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("good", ["cat", "dog_2", "A.b-c", "x" * 128, "0"])
def test_good_concept_ids(good: str) -> None:
    assert validate_concept_id(good) == good


@pytest.mark.parametrize("bad", ["", "-cat", ".hidden", "a..b", "a/b", "a b", "x" * 129, "é", "..", "_x"])
def test_unsafe_concept_ids(bad: str) -> None:
    with pytest.raises(InvalidConcept, match="invalid concept id"):
        validate_concept_id(bad)


def test_digest_is_stable_and_sensitive() -> None:
    images = {"a.jpg": b"AAA", "b.png": b"BBB"}
    meta = ConceptMeta.defaults("c")
    settings = {"steps": 100, "lr": 0.005, "model": "sd15"}
    digest = concept_digest(images, meta, settings)
    assert re.fullmatch(r"[0-9a-f]{16}", digest), digest  # what result keys accept (embeddings/<id>/<digest>)
    assert (
        concept_digest({k: bytes(bytearray(v)) for k, v in images.items()}, ConceptMeta.defaults("c"), dict(settings))
        == digest
    )  # equal content, other objects: the same digest
    assert concept_digest(dict(reversed(images.items())), meta, dict(reversed(settings.items()))) == digest
    assert concept_digest(images, meta.to_dict(), settings) == digest
    changed = [
        concept_digest({**images, "a.jpg": b"AAB"}, meta, settings),
        concept_digest({"c.jpg": b"AAA", "b.png": b"BBB"}, meta, settings),
        concept_digest({"a.jpg": b"AAA"}, meta, settings),
        concept_digest(images, ConceptMeta.from_dict("c", {"vectors": 2}), settings),
        concept_digest(images, meta, {**settings, "steps": 101}),
        concept_digest(images, meta, {}),
    ]
    assert len({digest, *changed}) == len(changed) + 1
    with pytest.raises(InvalidInput, match="JSON-like"):
        concept_digest(images, meta, {"when": object()})
    with pytest.raises(InvalidInput, match="NaN"):
        concept_digest(images, meta, {"lr": float("nan")})


def _build_catalog(store: ObjectStore) -> None:
    store.put("README.md", b"catalog readme, not a concept")
    store.put("good/1.jpg", imagegen.rgb_jpeg())
    store.put("good/2.PNG", imagegen.rgba_png())
    store.put("good/concept.json", json.dumps({"class": "cat", "token": "<good-cat>"}).encode())
    store.put("good/.DS_Store", b"\x00")
    store.put("good/notes.txt", b"some notes")
    store.put("plain/x.JPEG", imagegen.cmyk_jpeg())
    store.put("plain/y.webp", imagegen.webp())
    store.put("nested/a.jpg", imagegen.rgb_jpeg())
    store.put("nested/sub/b.jpg", imagegen.rgb_jpeg())
    store.put("no-images/concept.json", b"{}")
    store.put("no-images/readme.txt", b"hi")
    store.put("bad-json/concept.json", b"{oops")
    store.put("bad-json/1.jpg", imagegen.rgb_jpeg())
    store.put("bad-prop/concept.json", b'{"property": "texture"}')
    store.put("bad-prop/1.jpg", imagegen.rgb_jpeg())
    store.put("zero-vec/concept.json", b'{"vectors": 0}')
    store.put("zero-vec/1.jpg", imagegen.rgb_jpeg())
    store.put("-unsafe/1.jpg", imagegen.rgb_jpeg())
    store.put("a..b/1.jpg", imagegen.rgb_jpeg())
    store.put("broken/cut.jpg", imagegen.truncated_jpeg())
    store.put("broken/junk.png", b"definitely not a png")
    store.put("half/ok.jpg", imagegen.rgb_jpeg())
    store.put("half/cut.jpg", imagegen.truncated_jpeg())


def test_discover_reports_problems_without_stopping_others(store: ObjectStore) -> None:
    _build_catalog(store)
    scan = discover_catalog(store, {"steps": 10})
    specs = scan.by_id()
    assert sorted(specs) == ["broken", "good", "half", "nested", "plain"]
    good = specs["good"]
    assert good.images == ("good/1.jpg", "good/2.PNG")
    assert good.meta.token == "<good-cat>" and good.meta.initializer == "cat"
    assert good.meta_key == "good/concept.json"
    assert specs["plain"].meta == ConceptMeta.defaults("plain")
    assert specs["nested"].images == ("nested/a.jpg",)

    problems = {(p.concept_id, p.file): p.reason for p in scan.problems}
    assert "not an image" in problems[("good", "good/notes.txt")]
    assert "nested folders" in problems[("nested", "nested/sub/b.jpg")]
    assert "no images" in problems[("no-images", None)]
    assert "not valid JSON" in problems[("bad-json", "bad-json/concept.json")]
    assert "property must be one of" in problems[("bad-prop", "bad-prop/concept.json")]
    assert "vectors must be an integer in 1..64" in problems[("zero-vec", "zero-vec/concept.json")]
    assert "invalid concept id" in problems[("-unsafe", None)]
    assert "invalid concept id" in problems[("a..b", None)]
    assert not any(cid in ("README.md",) for cid, _ in problems)
    assert not any(file and file.endswith(".DS_Store") for _, file in problems)

    # decoding happens at ingest: broken → no usable image, half → one good image + one problem
    broken = ingest_concept(store, specs["broken"])
    assert not broken.usable
    assert {p.file for p in broken.problems} == {"broken/cut.jpg", "broken/junk.png", None}
    half = ingest_concept(store, specs["half"])
    assert [k for k, _ in half.images] == ["half/ok.jpg"]
    assert [p.file for p in half.problems] == ["half/cut.jpg"]
    for _key, image in ingest_concept(store, good).images:
        assert image.mode == "RGB"


def test_scan_limited_to_some_concepts_reads_only_their_folders(store: ObjectStore, monkeypatch) -> None:
    _build_catalog(store)
    full = discover_catalog(store, {"steps": 10}).by_id()
    listed: list[str] = []
    read: list[str] = []
    list_all, get = store.list_info, store.get_with_info
    monkeypatch.setattr(store, "list_info", lambda prefix="": listed.append(prefix) or list_all(prefix))
    monkeypatch.setattr(store, "get_with_info", lambda key: read.append(key) or get(key))

    scan = discover_catalog(store, {"steps": 10}, concept_ids=["good", "-unsafe", "missing", "good"])
    assert [s.concept_id for s in scan.specs] == ["good"]
    assert scan.specs[0] == full["good"]  # same digest as in a full scan
    assert {(p.concept_id, p.file) for p in scan.problems} == {("good", "good/notes.txt"), ("-unsafe", None)}
    assert listed == ["good/", "missing/"]
    assert read and all(key.startswith("good/") for key in read)
    with pytest.raises(InvalidInput, match="not the string"):
        discover_catalog(store, concept_ids="good")


def test_digests_track_content(store: ObjectStore) -> None:
    _build_catalog(store)
    scan = discover_catalog(store)
    first = {s.concept_id: s.digest for s in scan.specs}
    assert {s.concept_id: s.digest for s in discover_catalog(store).specs} == first
    # identical bytes uploaded again (a new mtime or upload, the same content): nothing changes,
    # whether the scan reads everything or starts from the state of the previous scan
    store.put("good/1.jpg", store.get("good/1.jpg"))
    assert {s.concept_id: s.digest for s in discover_catalog(store).specs} == first
    assert {s.concept_id: s.digest for s in discover_catalog(store, previous=scan.state).specs} == first
    store.put("plain/y.webp", imagegen.encode(imagegen.Image.new("RGB", (24, 24), (9, 9, 9)), "WEBP"))
    second = {s.concept_id: s.digest for s in discover_catalog(store).specs}
    assert {c for c in first if first[c] != second[c]} == {"plain"}
    other_settings = {s.concept_id: s.digest for s in discover_catalog(store, {"steps": 5}).specs}
    assert all(other_settings[c] != second[c] for c in second)


def test_empty_catalog(store: ObjectStore) -> None:
    scan = discover_catalog(store)
    assert scan.specs == () and scan.problems == ()
