"""Scanning from listings: the scan state, pending concepts, bounded reads and token rules — on both backends."""

from __future__ import annotations

import json

import pytest

from storage.catalog import (
    MAX_IMAGE_BYTES,
    MAX_META_BYTES,
    ConceptMeta,
    discover_catalog,
    read_concept,
    token_problem,
)
from storage.errors import InvalidConcept
from storage.scanstate import STATE_KEY, ScanState, load_scan_state, save_scan_state
from storage.store.base import ObjectStore

from . import imagegen

SETTINGS = {"steps": 10}


def _catalog(store: ObjectStore) -> None:
    store.put("cat/1.jpg", imagegen.rgb_jpeg(color=(200, 30, 30)))
    store.put("cat/2.png", imagegen.rgb_png())
    store.put("cat/concept.json", json.dumps({"class": "cat", "token": "<my-cat>"}).encode())
    store.put("dog/1.jpg", imagegen.rgb_jpeg(color=(30, 200, 30)))
    store.put("emu/1.jpg", imagegen.rgb_jpeg(color=(30, 30, 200)))


class Counting:
    """Counts the reads of objects (``get``/``get_with_info``) made through ``store``."""

    def __init__(self, store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: list[str] = []
        get, get_with_info = store.get, store.get_with_info
        monkeypatch.setattr(store, "get", lambda key: self.keys.append(key) or get(key))
        monkeypatch.setattr(store, "get_with_info", lambda key: self.keys.append(key) or get_with_info(key))


def test_unchanged_concepts_are_scanned_from_listings_alone(store: ObjectStore, monkeypatch) -> None:
    _catalog(store)
    full = discover_catalog(store, SETTINGS)
    assert {s.concept_id for s in full.specs} == {"cat", "dog", "emu"}
    reads = Counting(store, monkeypatch)
    again = discover_catalog(store, SETTINGS, previous=full.state, read_changed=False)
    assert reads.keys == [], "nothing changed: no object is read, not even concept.json"
    assert {s.concept_id: s.digest for s in again.specs} == {s.concept_id: s.digest for s in full.specs}
    assert again.state == full.state


def test_a_changed_concept_is_pending_and_read_once_by_its_own_work(store: ObjectStore, monkeypatch) -> None:
    _catalog(store)
    first = discover_catalog(store, SETTINGS)
    store.put("dog/1.jpg", imagegen.rgb_jpeg(color=(99, 99, 99)))
    reads = Counting(store, monkeypatch)
    scan = discover_catalog(store, SETTINGS, previous=first.state, read_changed=False)
    assert reads.keys == []
    specs = scan.by_id()
    assert specs["dog"].pending and not specs["cat"].pending and not specs["emu"].pending
    assert "dog" not in scan.state.concepts

    read = read_concept(store, specs["dog"])
    assert reads.keys == ["dog/1.jpg"]
    truth = discover_catalog(store, SETTINGS).by_id()["dog"]  # a full scan of the new content
    assert read.spec.digest == truth.digest != first.by_id()["dog"].digest
    assert read.data == {"dog/1.jpg": store.get("dog/1.jpg")}
    # remembered, the next scan needs no read for it either
    reads.keys.clear()
    third = discover_catalog(store, SETTINGS, previous=scan.state.merged({"dog": read.state}), read_changed=False)
    assert reads.keys == [] and third.by_id()["dog"].digest == truth.digest


def test_identical_bytes_rewritten_keep_the_digest(store: ObjectStore) -> None:
    _catalog(store)
    first = discover_catalog(store, SETTINGS)
    store.put("emu/1.jpg", store.get("emu/1.jpg"))  # S3: same ETag; local: a new mtime
    scan = discover_catalog(store, SETTINGS, previous=first.state, read_changed=False)
    emu = scan.by_id()["emu"]
    digest = emu.digest if not emu.pending else read_concept(store, emu).spec.digest
    assert digest == first.by_id()["emu"].digest


def test_changed_metadata_is_read_and_changes_the_digest(store: ObjectStore, monkeypatch) -> None:
    _catalog(store)
    first = discover_catalog(store, SETTINGS)
    store.put("cat/concept.json", json.dumps({"class": "cat", "token": "<my-cat>", "vectors": 2}).encode())
    reads = Counting(store, monkeypatch)
    scan = discover_catalog(store, SETTINGS, previous=first.state, read_changed=False)
    assert reads.keys == ["cat/concept.json"], "the images did not change: only the metadata is read"
    cat = scan.by_id()["cat"]
    assert cat.meta.vectors == 2 and not cat.pending and cat.digest != first.by_id()["cat"].digest


def test_state_survives_storage_and_a_bad_state_costs_a_full_scan(store: ObjectStore) -> None:
    _catalog(store)
    scan = discover_catalog(store, SETTINGS)
    assert load_scan_state(store, store.uri) == ScanState(store.uri)  # none yet
    assert save_scan_state(store, scan.state) is True
    assert load_scan_state(store, store.uri) == scan.state
    assert save_scan_state(store, scan.state, previous=scan.state) is False  # unchanged: not rewritten
    assert load_scan_state(store, "s3://elsewhere/catalog") == ScanState("s3://elsewhere/catalog")
    store.put(STATE_KEY, b"\x1f\x8b not really gzip")
    lost = load_scan_state(store, store.uri)
    assert lost == ScanState(store.uri)
    rescan = discover_catalog(store, SETTINGS, previous=lost, read_changed=False)
    assert all(s.pending for s in rescan.specs), "without a state every concept is read again"


def test_sizes_are_checked_from_the_listing_before_any_read(store: ObjectStore, monkeypatch) -> None:
    store.put("big-meta/1.jpg", imagegen.rgb_jpeg())
    store.put("big-meta/concept.json", b" " * (MAX_META_BYTES + 1))
    store.put("ok/1.jpg", imagegen.rgb_jpeg())
    reads = Counting(store, monkeypatch)
    monkeypatch.setattr("storage.catalog.MAX_IMAGE_BYTES", 100)  # the small JPEG is over it
    scan = discover_catalog(store, SETTINGS, read_changed=False)
    assert reads.keys == []
    problems = {(p.concept_id, p.file): p.reason for p in scan.problems}
    assert f"larger than {MAX_META_BYTES}" in problems[("big-meta", "big-meta/concept.json")]
    assert "-byte limit" in problems[("ok", "ok/1.jpg")]
    assert MAX_IMAGE_BYTES > 100
    assert scan.specs == ()


@pytest.mark.parametrize("token", ["<café-猫>", "<猫>", "<MyCat>", "Ω", "<a.b_c-d>"])
def test_printable_tokens_are_accepted(token: str) -> None:
    assert token_problem(token) is None
    assert ConceptMeta.from_dict("c", {"token": token}).token == token


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("", "empty"),
        ("<two words>", "whitespace"),
        ("<tab\there>", "whitespace"),
        ("<nb\u00a0sp>", "whitespace"),
        ("<zero\u200bwidth>", "U+200B"),
        ("<bell\x07>", "U+0007"),
        ("<" + "x" * 70 + ">", "characters"),
    ],
)
def test_tokens_the_pipeline_cannot_carry_are_refused_at_scan(store: ObjectStore, token: str, why: str) -> None:
    with pytest.raises(InvalidConcept, match="token must be one word"):
        ConceptMeta.from_dict("c", {"token": token})
    store.put("c/1.jpg", imagegen.rgb_jpeg())
    store.put("c/concept.json", json.dumps({"token": token}).encode())
    scan = discover_catalog(store, SETTINGS, read_changed=False)
    assert scan.specs == ()
    (problem,) = scan.problems
    assert problem.file == "c/concept.json" and why in problem.reason


def test_read_changed_can_choose_per_concept(store: ObjectStore, monkeypatch) -> None:
    _catalog(store)
    full = discover_catalog(store, SETTINGS).by_id()
    reads = Counting(store, monkeypatch)
    scan = discover_catalog(store, SETTINGS, read_changed=lambda concept_id: concept_id == "dog").by_id()
    assert sorted(k for k in reads.keys if not k.endswith(".json")) == ["dog/1.jpg"]
    assert scan["dog"].digest == full["dog"].digest and scan["cat"].pending and scan["emu"].pending
