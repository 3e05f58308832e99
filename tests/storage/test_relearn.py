"""Why a concept is learned again (storage.relearn), over nights simulated on a local catalog: the scan state
remembers what each complete result was learned from, and a concept to learn says what changed since."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from storage.catalog import discover_catalog, read_concept, settings_fingerprint
from storage.relearn import format_reasons, relearning
from storage.scanstate import ScanState, Setup
from storage.store.base import ObjectStore
from storage.store.open import open_store

from . import imagegen

SETTINGS = {"steps": 10, "lr": 0.005}
MODEL = "folder:" + "a" * 64


@pytest.fixture
def catalog(tmp_path: Path) -> ObjectStore:
    store = open_store(str(tmp_path / "catalog"))
    store.put("cat/1.jpg", imagegen.rgb_jpeg(color=(200, 30, 30)))
    store.put("cat/concept.json", json.dumps({"class": "cat", "token": "<my-cat>"}).encode())
    store.put("dog/1.jpg", imagegen.rgb_jpeg(color=(30, 200, 30)))
    store.put("emu/1.jpg", imagegen.rgb_jpeg(color=(30, 30, 200)))
    return store


class Nights:
    """Runs of a catalog as the flow makes them, without training: scan, say why, then "learn" every concept
    to learn (its digest gets a complete result) except those told to fail, and remember the scan."""

    def __init__(self, store: ObjectStore) -> None:
        self.store, self.state, self.done = store, ScanState(store.uri), {}

    def run(
        self, model: str = MODEL, settings: Mapping[str, Any] = SETTINGS, fail: tuple[str, ...] = ()
    ) -> dict[str, str | None]:
        identity = {**settings, "model": model}
        setup = Setup(model, settings_fingerprint(settings), settings_fingerprint(identity))
        scan = discover_catalog(self.store, identity, previous=self.state, read_changed=False)
        keep = {p.concept_id for p in scan.problems}
        reasons, state = relearning(scan.specs, scan.state, self.state, self.done, setup, keep)
        staged = {}
        for spec in scan.specs:
            if spec.concept_id not in reasons:
                continue
            read = read_concept(self.store, spec) if spec.pending else None
            digest = read.spec.digest if read else spec.digest
            if read and read.state:
                staged[spec.concept_id] = read.state
            if digest in self.done.get(spec.concept_id, ()):  # staging found the bytes learned: not learned again
                del reasons[spec.concept_id]
            elif spec.concept_id not in fail:
                self.done.setdefault(spec.concept_id, set()).add(digest)
        self.state = state.merged(staged)
        return {cid: format_reasons(r) for cid, r in reasons.items()}


def test_first_night_is_new_then_nothing_is_learned_again(catalog: ObjectStore) -> None:
    nights = Nights(catalog)
    assert nights.run() == {"cat": "new", "dog": "new", "emu": "new"}
    assert nights.run() == {}
    assert set(nights.state.learned) == {"cat", "dog", "emu"}
    settled = nights.state
    assert nights.run() == {}
    assert nights.state == settled, "a night where nothing changed leaves the state as it was: it is not rewritten"


def test_each_change_names_itself(catalog: ObjectStore) -> None:
    nights = Nights(catalog)
    nights.run()
    nights.run()  # the results of the first night are found complete: their fingerprints are remembered
    catalog.put("dog/1.jpg", imagegen.rgb_jpeg(color=(99, 99, 99)))
    assert nights.run() == {"dog": "images changed"}
    catalog.put("cat/concept.json", json.dumps({"class": "cat", "token": "<my-cat>", "vectors": 2}).encode())
    assert nights.run() == {"cat": "concept.json changed"}
    assert nights.run(settings={**SETTINGS, "lr": 0.01}) == dict.fromkeys(("cat", "dog", "emu"), "settings changed")
    nights.run(settings={**SETTINGS, "lr": 0.01})
    catalog.put("emu/2.jpg", imagegen.rgb_jpeg(color=(1, 2, 3)))
    upgraded = "folder:" + "b" * 64
    assert nights.run(model=upgraded, settings={**SETTINGS, "lr": 0.01}) == {
        "cat": "model changed",
        "dog": "model changed",
        "emu": "images changed + model changed",
    }


def test_a_failed_learning_still_says_why_it_was_learned(catalog: ObjectStore) -> None:
    nights = Nights(catalog)
    nights.run()
    nights.run()
    upgraded = "folder:" + "b" * 64
    assert nights.run(model=upgraded, fail=("dog",)) == dict.fromkeys(("cat", "dog", "emu"), "model changed")
    assert nights.run(model=upgraded) == {"dog": "model changed"}, "the earlier learning is still the old model's"
    assert nights.run(model=upgraded) == {}
    assert nights.run() == {}, "back to the old model: its results are complete still, nothing is learned"


def test_a_concept_that_never_got_a_result_is_new(catalog: ObjectStore) -> None:
    nights = Nights(catalog)
    assert nights.run(fail=("emu",))["emu"] == "new"
    assert nights.run() == {"emu": "new"}


def test_a_state_from_before_the_fingerprints_reads_and_says_so(catalog: ObjectStore) -> None:
    nights = Nights(catalog)
    nights.run()
    nights.run()
    body = json.loads(gzip.decompress(nights.state.to_bytes()))
    old = {k: body[k] for k in ("version", "catalog", "concepts", "metas")}  # as the code before wrote it
    nights.state = ScanState.from_bytes(gzip.compress(json.dumps(old).encode()))
    assert nights.state.concepts and not nights.state.learned and nights.state.setup is None
    catalog.put("fox/1.jpg", imagegen.rgb_jpeg(color=(250, 120, 0)))
    reasons = nights.run(model="folder:" + "c" * 64)
    assert reasons == {**dict.fromkeys(("cat", "dog", "emu"), "unknown (no earlier fingerprints)"), "fox": "new"}
    assert nights.run(model="folder:" + "d" * 64) == dict.fromkeys(("cat", "dog", "emu", "fox"), "model changed")


def test_the_state_keeps_fingerprints_small_once_per_setup_and_readable_by_older_code(catalog: ObjectStore) -> None:
    nights = Nights(catalog)
    nights.run()
    nights.run(settings={**SETTINGS, "lr": 0.02}, fail=("dog",))
    state = nights.state
    assert ScanState.from_bytes(state.to_bytes()) == state
    body = json.loads(gzip.decompress(state.to_bytes()))
    # an older reader unpacks two strings per concept and three values per concept.json: those are unchanged
    assert all(len(v) == 2 for v in body["concepts"].values()) and all(len(v) == 3 for v in body["metas"].values())
    assert set(body["setups"]) == {state.setup, state.learned["dog"].setup}, "the failed one's setup is kept"
    assert len(body["setups"]) == 2 and all(len(v) == 3 for v in body["setups"].values())
    per_concept = len(json.dumps(body["learned"], separators=(",", ":"))) / len(body["learned"])
    assert per_concept < 70, f"{per_concept:.0f} bytes of learning fingerprints per concept (its id included)"


def test_a_concept_that_left_the_catalog_is_forgotten_and_an_unusable_one_kept(catalog: ObjectStore) -> None:
    nights = Nights(catalog)
    nights.run()
    nights.run()
    catalog.delete("emu/1.jpg")
    catalog.put("dog/concept.json", b'{"property": "sculpture"}')
    assert nights.run() == {}
    assert set(nights.state.learned) == {"cat", "dog"}
    catalog.put("dog/concept.json", b"{}")
    assert nights.run() == {}, "the same concept.json as its defaults: the digest is the one learned"
