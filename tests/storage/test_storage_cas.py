"""Compare-and-swap writes on both backends: what keeps the embeddings index and the dashboard state whole when
two runs rewrite them at once, and a conditional PUT whose reply was lost (issue 20, "Overlapping runs lose
nothing"). Each test names the failure it catches without the fix."""

from __future__ import annotations

import functools
import threading
from datetime import datetime, timedelta, timezone

import pytest

from storage.metrics import INDEX_KEY, MetricsRow, append_metrics, read_embeddings_index, update_embeddings_index
from storage.results import ResultStore
from storage.store.base import ObjectStore
from storage.store.open import open_store
from tests.storage.forwarding import ForwardingHandler, ForwardingServer

from .helpers import make_settings, unique_s3_uri

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def _add(stored: bytes | None, word: bytes) -> bytes:
    """A merge: the sorted set of words in the object, plus ``word``."""
    return b",".join(sorted({*(stored or b"").split(b","), word} - {b""}))


def test_put_if_is_a_compare_and_swap(store: ObjectStore) -> None:
    created = store.put_if("state", b"one", None)
    assert created is not None and store.get("state") == b"one"
    assert store.put_if("state", b"again", None) is None, "create-only must refuse an existing object"
    _, info = store.get_with_info("state")
    assert info.etag == created.etag
    replaced = store.put_if("state", b"two", info.etag)
    assert replaced is not None and replaced.etag != info.etag
    assert store.put_if("state", b"three", info.etag) is None, "a stale ETag must be refused"
    assert store.get("state") == b"two"
    assert [i.key for i in store.list_info("")] == ["state"], "nothing beside the object (no lock file)"
    if store.local_path("state") is not None:
        assert [p.name for p in store.local_path("state").parent.iterdir()] == ["state"]


def test_two_writers_interleaved_by_hand_lose_nothing(store: ObjectStore) -> None:
    """Both writers read ``a``; one writes first. A plain put by the second loses the first's word (the
    bug: the index was read, merged and rewritten whole); its conditional put is refused and a re-merge keeps
    both."""
    store.put("index", b"a")
    first, first_info = store.get_with_info("index")
    second, second_info = store.get_with_info("index")
    assert store.put_if("index", _add(first, b"x"), first_info.etag) is not None
    # without compare-and-swap: the second writer's whole rewrite drops "x"
    lost = _add(second, b"y")
    assert b"x" not in lost
    # with it: refused, then read and merged again
    assert store.put_if("index", lost, second_info.etag) is None
    assert store.update("index", lambda stored: _add(stored, b"y")) == b"a,x,y"
    assert store.get("index") == b"a,x,y"


def test_update_from_many_threads_keeps_every_change(store: ObjectStore) -> None:
    start = threading.Barrier(8)

    def writer(i: int) -> None:
        start.wait()
        for j in range(3):
            store.update("words", functools.partial(_add, word=f"w{i}-{j}".encode()))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(store.get("words").split(b",")) == {f"w{i}-{j}".encode() for i in range(8) for j in range(3)}


def _published_row(results: ResultStore, run_id: str, concept: str, at: datetime) -> MetricsRow:
    digest = f"{abs(hash(concept)) % 16**16:016x}"
    results.publish(concept, digest, {"learned_embeds.safetensors": concept.encode()}, run_id=run_id)
    return MetricsRow(
        run_id=run_id,
        concept_id=concept,
        status="ok",
        digest=digest,
        created_at=at,
        embedding_uri=results.uri(concept, digest, "learned_embeds.safetensors"),
    )


def test_runs_updating_the_index_at_once_keep_every_concept(
    root_uri: str, settings_for, store: ObjectStore, monkeypatch
) -> None:
    """Six runs finish together, each with one new concept, over an index that holds one: every run reads the
    index before any writes it (forced below where the backend lets two readers in at once). Without the
    compare-and-swap the last rewrite wins and the others' concepts are lost."""
    results = ResultStore(store)
    seed = [_published_row(results, "run-0", "seed", T0)]
    append_metrics(root_uri, seed, settings_for)
    update_embeddings_index(root_uri, settings_for, rows=seed)
    runs = {f"run-{i}": [_published_row(results, f"run-{i}", f"c{i}", T0 + timedelta(minutes=i))] for i in range(1, 7)}
    together = threading.Barrier(len(runs))
    read = type(store).get_with_info

    def read_then_meet(self, key):
        found = read(self, key)
        if key == INDEX_KEY:
            try:
                together.wait(timeout=1)  # local: the lock lets one reader in at a time, so this times out once
            except threading.BrokenBarrierError:
                pass
        return found

    monkeypatch.setattr(type(store), "get_with_info", read_then_meet)
    errors: list[BaseException] = []

    def finish(rows: list[MetricsRow]) -> None:
        try:
            update_embeddings_index(root_uri, settings_for, rows=rows)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=finish, args=(rows,)) for rows in runs.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    index = read_embeddings_index(root_uri, settings_for).to_pylist()
    assert sorted(r["concept_id"] for r in index) == ["c1", "c2", "c3", "c4", "c5", "c6", "seed"]


class _LoseFirstConditionalReply(ForwardingHandler):
    """Forwards everything; the first conditional PUT takes effect upstream, then its reply is dropped."""

    def _handle(self) -> None:
        body = self.read_body()
        status, reason, headers, data = self.forward(body, timeout=60)
        conditional = self.command == "PUT" and ("If-Match" in self.headers or "If-None-Match" in self.headers)
        with self.server.lock:
            drop = conditional and status == 200 and not getattr(self.server, "dropped", False)
            if drop:
                self.server.dropped = True  # type: ignore[attr-defined]
        if drop:
            self.close_connection = True
            self.connection.close()
            return
        self.relay(status, reason, headers, data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


@pytest.mark.parametrize("create", [True, False], ids=["IfNoneMatch", "IfMatch"])
def test_a_conditional_put_whose_reply_was_lost_counts_as_written(s3_client, moto_endpoint, create) -> None:
    """botocore retries the PUT whose reply was dropped; the retry fails its precondition against the first
    try's own write (412). Without the re-read that compares the stored bytes, ``put_if`` reports a lost race."""
    proxy = ForwardingServer(moto_endpoint, _LoseFirstConditionalReply).start()
    try:
        uri = unique_s3_uri("lost-reply")
        direct = open_store(uri, make_settings(moto_endpoint))
        etag = None if create else direct.put_if("state", b"old", None).etag  # type: ignore[union-attr]
        store = open_store(uri, make_settings(proxy.endpoint))
        written = store.put_if("state", b"new", etag)
        assert getattr(proxy, "dropped", False), "the proxy never dropped a reply"
        assert written is not None, "a put that took effect was reported as refused"
        assert direct.get("state") == b"new"
        assert written.etag == direct.get_with_info("state")[1].etag
    finally:
        proxy.stop()
