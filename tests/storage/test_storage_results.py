"""Publishing results write-once with a _SUCCESS manifest written last; checkpoints — both backends."""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from storage.errors import AlreadyExists, InvalidConcept, InvalidInput, NotFound
from storage.results import ResultStore
from storage.store.base import ObjectStore

from .helpers import SECRET_KEY

DIGEST = "0123456789abcdef"
FILES = {
    "learned_embeds.safetensors": b"\x00safetensors" * 100,
    "simba.pt": b"torch-pickle-bytes",
    "grid.png": b"\x89PNG fake grid",
    "scores.json": b'{"image_similarity": 0.8}',
}


def test_publish_then_complete(store: ObjectStore, backend: str) -> None:
    results = ResultStore(store)
    assert not results.is_complete("simba", DIGEST)
    assert results.read_manifest("simba", DIGEST) is None
    published = results.publish("simba", DIGEST, FILES, run_id="run-1")
    assert published.created
    assert results.is_complete("simba", DIGEST)
    assert set(published.uris) == set(FILES)
    assert published.uris["simba.pt"] == store.url(f"embeddings/simba/{DIGEST}/simba.pt")
    assert published.manifest_uri.endswith(f"embeddings/simba/{DIGEST}/_SUCCESS")
    if backend == "s3":
        assert published.prefix_uri.startswith("s3://")
    for name, data in FILES.items():
        assert store.get(f"embeddings/simba/{DIGEST}/{name}") == data
    manifest = json.loads(store.get(f"embeddings/simba/{DIGEST}/_SUCCESS"))
    assert manifest["run_id"] == "run-1" and manifest["concept_id"] == "simba" and manifest["digest"] == DIGEST
    assert manifest["files"]["simba.pt"] == {
        "size": len(FILES["simba.pt"]),
        "sha256": hashlib.sha256(FILES["simba.pt"]).hexdigest(),
    }
    assert manifest["created_at"].endswith("+00:00")
    assert results.read_manifest("simba", DIGEST) == published.manifest
    assert results.verify("simba", DIGEST) == []
    assert results.completed_digests("simba") == [DIGEST]
    assert SECRET_KEY.encode() not in store.get(f"embeddings/simba/{DIGEST}/_SUCCESS")


class RecordingStore(ObjectStore):
    """Delegates to a real store and records the order of writes."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.writes = inner, []

    uri = property(lambda self: self.inner.uri)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def list_info(self, prefix=""):
        return self.inner.list_info(prefix)

    def get(self, key):
        return self.inner.get(key)

    def get_with_info(self, key):
        return self.inner.get_with_info(key)

    def put(self, key, data):
        self.writes.append(key)
        return self.inner.put(key, data)

    def put_once(self, key, data):
        self.writes.append(key)
        return self.inner.put_once(key, data)

    def put_if(self, key, data, etag):
        self.writes.append(key)
        return self.inner.put_if(key, data, etag)

    def exists(self, key):
        return self.inner.exists(key)

    def delete(self, key):
        return self.inner.delete(key)

    def url(self, key):
        return self.inner.url(key)


def test_success_is_written_last(store: ObjectStore) -> None:
    recording = RecordingStore(store)
    ResultStore(recording).publish("simba", DIGEST, FILES, run_id="r")
    assert len(recording.writes) == len(FILES) + 1
    assert recording.writes[-1].endswith("/_SUCCESS")


def test_files_without_success_are_not_complete(store: ObjectStore) -> None:
    results = ResultStore(store)
    store.put(f"embeddings/simba/{DIGEST}/learned_embeds.safetensors", FILES["learned_embeds.safetensors"])
    assert not results.is_complete("simba", DIGEST)
    assert results.completed_digests("simba") == []
    with pytest.raises(NotFound):
        results.verify("simba", DIGEST)


def test_retry_after_interrupted_publish_is_idempotent(store: ObjectStore) -> None:
    results = ResultStore(store)
    # an earlier attempt died after writing two of the files
    store.put(f"embeddings/simba/{DIGEST}/grid.png", FILES["grid.png"])
    store.put(f"embeddings/simba/{DIGEST}/simba.pt", FILES["simba.pt"])
    first = results.publish("simba", DIGEST, FILES, run_id="retry")
    assert first.created and results.verify("simba", DIGEST) == []
    again = results.publish("simba", DIGEST, dict(FILES), run_id="retry-2")
    assert not again.created and again.manifest.run_id == "retry"


def test_different_bytes_never_overwrite(store: ObjectStore) -> None:
    results = ResultStore(store)
    store.put(f"embeddings/simba/{DIGEST}/simba.pt", b"left by a dead attempt")
    with pytest.raises(AlreadyExists, match="simba.pt already exists with different content"):
        results.publish("simba", DIGEST, FILES, run_id="r1")
    assert not results.is_complete("simba", DIGEST)
    # a retry of the same task may replace leftovers of an attempt that never completed
    assert results.publish("simba", DIGEST, FILES, run_id="r1", replace_incomplete=True).created
    assert results.verify("simba", DIGEST) == []
    # …but never a completed result
    changed = {**FILES, "grid.png": b"another grid"}
    with pytest.raises(AlreadyExists, match="already published by run r1 with different content"):
        results.publish("simba", DIGEST, changed, run_id="r2", replace_incomplete=True)
    assert store.get(f"embeddings/simba/{DIGEST}/grid.png") == FILES["grid.png"]


def test_concurrent_publishers_one_consistent_result(store: ObjectStore) -> None:
    results = ResultStore(store)
    writers = 4
    barrier = threading.Barrier(writers)
    variants = [{name: data + bytes([i]) for name, data in FILES.items()} for i in range(writers)]

    def publish(i: int):
        barrier.wait()
        try:
            return results.publish("race", DIGEST, variants[i], run_id=f"run-{i}")
        except AlreadyExists:
            return None

    with ThreadPoolExecutor(max_workers=writers) as pool:
        outcomes = list(pool.map(publish, range(writers)))
    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1
    assert results.verify("race", DIGEST) == []  # files match the manifest: no mixing
    manifest = results.read_manifest("race", DIGEST)
    assert manifest == winners[0].manifest
    # identical bytes from several writers: all succeed, one manifest
    barrier = threading.Barrier(writers)

    def publish_same(i: int):
        barrier.wait()
        return results.publish("same", DIGEST, FILES, run_id=f"run-{i}")

    with ThreadPoolExecutor(max_workers=writers) as pool:
        same = list(pool.map(publish_same, range(writers)))
    assert sum(r.created for r in same) == 1
    assert results.verify("same", DIGEST) == []


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("../x", DIGEST, FILES, "r"), InvalidConcept, "invalid concept id"),
        (("c", "XYZ", FILES, "r"), InvalidInput, "digest must be 8-64 lowercase hex"),
        (("c", DIGEST, {"_SUCCESS": b"x"}, "r"), InvalidInput, "file name must be a plain name"),
        (("c", DIGEST, {"sub/x.bin": b"x"}, "r"), InvalidInput, "file name must be a plain name"),
        (("c", DIGEST, {"../x.bin": b"x"}, "r"), InvalidInput, "file name must be a plain name"),
        (("c", DIGEST, {"x.bin": "text"}, "r"), InvalidInput, "must be bytes"),
        (("c", DIGEST, {}, "r"), InvalidInput, "files is empty"),
        (("c", DIGEST, FILES, "bad run/id"), InvalidInput, "run_id must be"),
    ],
)
def test_publish_validates_inputs(store: ObjectStore, args, error, message) -> None:
    with pytest.raises(error, match=message):
        ResultStore(store).publish(*args)
    assert list(store.list()) == []


def test_checkpoints_overwrite_list_and_clear(store: ObjectStore) -> None:
    results = ResultStore(store)
    assert results.get_checkpoint("simba", DIGEST, "state.pt") is None
    uri = results.put_checkpoint("simba", DIGEST, "state.pt", b"step-100")
    assert uri == store.url(f"checkpoints/simba/{DIGEST}/state.pt")
    results.put_checkpoint("simba", DIGEST, "state.pt", b"step-200")
    results.put_checkpoint("simba", DIGEST, "progress.json", b"{}")
    results.put_checkpoint("simba", "fedcba9876543210", "state.pt", b"other digest")
    assert results.get_checkpoint("simba", DIGEST, "state.pt") == b"step-200"
    assert results.list_checkpoints("simba", DIGEST) == ["progress.json", "state.pt"]
    assert results.clear_checkpoints("simba", DIGEST) == 2
    assert results.list_checkpoints("simba", DIGEST) == []
    assert results.get_checkpoint("simba", "fedcba9876543210", "state.pt") == b"other digest"
    with pytest.raises(InvalidInput):
        results.put_checkpoint("simba", DIGEST, "../escape", b"x")


def test_completed_results_come_from_one_listing(store: ObjectStore, monkeypatch) -> None:
    results = ResultStore(store)
    d2 = "fedcba9876543210"
    results.publish("simba", DIGEST, FILES, run_id="r")
    results.publish("simba", d2, FILES, run_id="r")
    results.publish("nala", DIGEST, FILES, run_id="r")
    store.put(f"embeddings/zazu/{DIGEST}/learned_embeds.safetensors", b"never completed")
    listed: list[str] = []
    list_info = store.list_info
    monkeypatch.setattr(store, "list_info", lambda prefix="": listed.append(prefix) or list_info(prefix))
    monkeypatch.setattr(store, "exists", lambda key: pytest.fail(f"a request per concept: exists({key})"))
    assert results.completed() == {"simba": frozenset({DIGEST, d2}), "nala": frozenset({DIGEST})}
    assert listed == ["embeddings/"]
    assert results.completed("nala") == {"nala": frozenset({DIGEST})}
    assert results.completed_digests("zazu") == []
