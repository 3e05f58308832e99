"""The ObjectStore contract, run against both backends (local folder and moto S3)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from storage.errors import BackendError, InvalidKey, InvalidURI, NotFound
from storage.store.base import ObjectStore
from storage.store.local import TEMP_PREFIX, LocalStore
from storage.store.open import open_store, parse_uri, pyarrow_filesystem
from storage.store.s3 import S3Store
from storage.store.settings import S3Settings

from .helpers import BUCKET


def test_put_get_exists_delete(store: ObjectStore, backend: str) -> None:
    assert not store.exists("a/b.txt")
    url = store.put("a/b.txt", b"hello")
    assert url == store.url("a/b.txt")
    assert store.exists("a/b.txt")
    assert store.get("a/b.txt") == b"hello"
    store.put("a/b.txt", b"replaced")  # overwrite is allowed for put
    assert store.get("a/b.txt") == b"replaced"
    store.put("a/empty", b"")
    assert store.get("a/empty") == b""
    store.delete("a/b.txt")
    assert not store.exists("a/b.txt")
    store.delete("a/b.txt")  # idempotent
    with pytest.raises(NotFound, match="b.txt"):
        store.get("a/b.txt")
    if backend == "s3":
        assert url.startswith(f"s3://{BUCKET}/") and url.endswith("/a/b.txt")
        assert store.local_path("a/b.txt") is None
    else:
        assert Path(url).is_absolute() and url.endswith("/a/b.txt")
        assert store.local_path("a/empty") == Path(url).with_name("empty")


def test_list_is_sorted_relative_and_prefix_filtered(store: ObjectStore) -> None:
    keys = ["b/2.txt", "a/1.txt", "a-b/x", "a/sub/deep.bin", "top.txt", "a/10.txt"]
    for key in keys:
        store.put(key, key.encode())
    assert list(store.list()) == sorted(keys)
    assert list(store.list("a/")) == ["a/1.txt", "a/10.txt", "a/sub/deep.bin"]
    assert list(store.list("a/1")) == ["a/1.txt", "a/10.txt"]
    assert list(store.list("a")) == ["a-b/x", "a/1.txt", "a/10.txt", "a/sub/deep.bin"]
    assert list(store.list("nothing/")) == []


def test_list_of_missing_root_is_empty(backend: str, root_uri: str, settings_for) -> None:
    assert list(open_store(root_uri + "/never-written", settings_for).list()) == []


def test_put_once_creates_only_once(store: ObjectStore) -> None:
    assert store.put_once("x/once.bin", b"first") is True
    assert store.put_once("x/once.bin", b"second") is False
    assert store.get("x/once.bin") == b"first"


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "a\\b", "a//b", "./a", "a/", "a/.", "nul\x00", "tab\tkey"])
def test_unsafe_keys_are_rejected(store: ObjectStore, key: str) -> None:
    for op in (
        lambda: store.get(key),
        lambda: store.put(key, b"x"),
        lambda: store.put_once(key, b"x"),
        lambda: store.exists(key),
        lambda: store.url(key),
    ):
        with pytest.raises(InvalidKey):
            op()


def test_listing_paginates_past_1000_keys(store: ObjectStore) -> None:
    keys = [f"many/{i:05d}.txt" for i in range(1105)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: store.put(k, b"."), keys))
    store.put("other/z.txt", b".")
    assert list(store.list("many/")) == keys
    assert sum(1 for _ in store.list()) == 1106
    assert store.delete_many(store.list("many/")) == 1105
    assert list(store.list()) == ["other/z.txt"]


def _race_put_once(store: ObjectStore, key: str, payloads: list[bytes]) -> list[bool]:
    """Each payload's ``put_once`` result, all writers released at once."""
    barrier = threading.Barrier(len(payloads))

    def write(payload: bytes) -> bool:
        barrier.wait()
        return store.put_once(key, payload)

    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        return list(pool.map(write, payloads))


def test_put_once_race_exactly_one_writer_wins(store: ObjectStore) -> None:
    writers = 8
    for round_ in range(4):
        key = f"race/{round_}.bin"
        payloads = [bytes([i]) * (50_000 + i) for i in range(writers)]
        won = _race_put_once(store, key, payloads)
        assert won.count(True) == 1, won
        assert store.get(key) == payloads[won.index(True)]  # the winner's bytes, intact


def test_s3_client_failures_are_backend_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An unknown profile and missing credentials each become one BackendError naming the store."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    unreachable = "http://127.0.0.1:9"  # never contacted: both fail before a request is sent
    no_profile = S3Store(BUCKET, "p", S3Settings(endpoint_url=unreachable, region="us-east-1", profile="nope"))
    with pytest.raises(BackendError, match=rf"^cannot create S3 client for s3://{BUCKET}/p: ProfileNotFound"):
        no_profile.exists("k")
    anonymous = S3Store(BUCKET, "p", S3Settings(endpoint_url=unreachable, region="us-east-1"))
    with pytest.raises(BackendError, match=rf"^S3 get of s3://{BUCKET}/p/k failed: no AWS credentials found"):
        anonymous.get("k")


def test_local_writes_leave_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    store.put("a/b", b"1")
    store.put("a/b", b"2")
    store.put_once("a/c", b"3")
    store.put_once("a/c", b"4")
    assert sorted(p.name for p in (tmp_path / "root" / "a").iterdir()) == ["b", "c"]
    # a stray temp file (a writer killed mid-write) is never listed
    (tmp_path / "root" / "a" / f"{TEMP_PREFIX}dead-b").write_bytes(b"half")
    assert list(store.list()) == ["a/b", "a/c"]


def test_local_put_once_is_never_half_written(tmp_path: Path) -> None:
    """A reader watching each file from before it is written until it appears only ever sees it whole.

    Each file is written only once the reader has looked for it and found nothing, and the next only
    once the reader has seen it: the reader watches every write, never just finished files.
    """
    store = LocalStore(tmp_path)
    data = b"z" * 8_000_000
    keys = [f"big-{i}.bin" for i in range(8)]
    looking = [threading.Event() for _ in keys]
    appeared = [threading.Event() for _ in keys]
    sizes: list[set[int]] = [set() for _ in keys]
    stop = threading.Event()

    def reader() -> None:
        for i, key in enumerate(keys):
            path = tmp_path / key
            while not stop.is_set():
                try:
                    sizes[i].add(len(path.read_bytes()))
                except FileNotFoundError:
                    looking[i].set()
                    continue
                appeared[i].set()
                break

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i, key in enumerate(keys):
            assert looking[i].wait(10), f"the reader is not watching for {key}"
            assert store.put_once(key, data)
            assert appeared[i].wait(10), f"the reader never saw {key}"
    finally:
        stop.set()
        thread.join(10)
    assert sizes == [{len(data)}] * len(keys), "a reader saw a partly written file"


def test_parse_and_open_store(tmp_path: Path, s3_settings) -> None:
    parsed = parse_uri(f"s3://{BUCKET}/a/b/")
    assert (parsed.scheme, parsed.bucket, parsed.prefix) == ("s3", BUCKET, "a/b")
    assert isinstance(open_store(f"s3://{BUCKET}", s3_settings), S3Store)
    assert open_store(f"s3://{BUCKET}/p/", s3_settings).uri == f"s3://{BUCKET}/p"
    local = open_store(f"file://{tmp_path}/x")
    assert isinstance(local, LocalStore) and local.uri == str(tmp_path / "x")
    assert open_store(tmp_path).uri == str(tmp_path)
    assert Path(open_store("relative/dir").uri).is_absolute()


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "gs://bucket/x",
        "s3://ab/x",
        "s3://Bad_Bucket/x",
        "s3:///nobucket",
        "s3://bkt-ok/a/../b",
        "s3://user:secret@bucket-name/x",
        "file://host/x",
        "s3://bucket-name/x?versionId=1",
    ],
)
def test_bad_uris_are_rejected(uri: str) -> None:
    with pytest.raises(InvalidURI) as info:
        open_store(uri)
    assert "secret@" not in str(info.value)


def test_pyarrow_filesystem_reads_what_the_store_wrote(
    store: ObjectStore, root_uri: str, settings_for, backend: str
) -> None:
    table = pa.table({"x": [1, 2, 3]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    store.put("t/data.parquet", sink.getvalue().to_pybytes())
    filesystem, base = pyarrow_filesystem(root_uri, settings_for)
    assert isinstance(filesystem, pafs.S3FileSystem if backend == "s3" else pafs.LocalFileSystem)
    assert pq.read_table(f"{base}/t/data.parquet", filesystem=filesystem).equals(table)
