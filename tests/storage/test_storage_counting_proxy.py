"""The counting proxy forwards S3 requests unchanged and records what each one was."""

from __future__ import annotations

from storage.store.open import open_store

from .counting_proxy import CountingProxy, by_kind, bytes_read, keys_read
from .helpers import make_settings, unique_s3_uri


def test_counting_proxy_forwards_and_records(s3_client, moto_endpoint: str) -> None:
    proxy = CountingProxy(moto_endpoint).start()
    try:
        root = unique_s3_uri("count")
        store = open_store(root, make_settings(proxy.endpoint))
        prefix = root.split("/", 3)[3]
        store.put("a.bin", b"x" * 1000)
        assert store.get("a.bin") == b"x" * 1000
        assert list(store.list()) == ["a.bin"]
        requests = proxy.reset()
    finally:
        proxy.stop()
    counts = by_kind(requests)
    assert counts.get("PUT") == 1 and counts.get("GET") == 1 and counts.get("LIST", 0) >= 1
    assert keys_read(requests, prefix) == [f"{prefix}/a.bin"]
    assert bytes_read(requests, prefix) == 1000
    assert all(r.status == 200 for r in requests)
    assert proxy.reset() == []
