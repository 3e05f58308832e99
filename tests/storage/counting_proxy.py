"""A reverse proxy in front of an S3 endpoint that records every request at the HTTP level.

Each request becomes a :class:`Request` (kind, bucket-relative key, response bytes), so a test or a
benchmark can say exactly what a run read: how many listing pages, which objects, how many bytes.
Kinds: ``LIST`` (a GET on the bucket with ``list-type``), ``GET``, ``HEAD``, ``PUT``, ``DELETE`` and
``POST`` (multi-object delete). Used by the catalog-scale test and ``bench/catalog_scale.py``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from tests.storage.forwarding import ForwardingHandler, ForwardingServer


@dataclass(frozen=True)
class Request:
    kind: str
    bucket: str
    key: str  # "" for bucket-level requests
    status: int
    response_bytes: int


class CountingProxy(ForwardingServer):
    """Forwards to ``upstream`` (``http://host:port``, path-style S3) and records each request."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, _Handler)
        self.requests: list[Request] = []

    def reset(self) -> list[Request]:
        """The requests recorded so far; starts a new count."""
        with self.lock:
            taken, self.requests = self.requests, []
        return taken

    def record(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)


def by_kind(requests: list[Request]) -> dict[str, int]:
    """Request counts per kind."""
    return dict(collections.Counter(r.kind for r in requests))


def bytes_read(requests: list[Request], key_prefix: str, suffixes: tuple[str, ...] = ()) -> int:
    """Bytes of object GET responses whose key starts with ``key_prefix`` (and ends with one of ``suffixes``)."""
    return sum(
        r.response_bytes
        for r in requests
        if r.kind == "GET" and r.key.startswith(key_prefix) and (not suffixes or r.key.lower().endswith(suffixes))
    )


def keys_read(requests: list[Request], key_prefix: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Keys of the object GETs under ``key_prefix`` (ending with one of ``suffixes``), in request order
    (repeats kept)."""
    return [
        r.key
        for r in requests
        if r.kind == "GET" and r.key.startswith(key_prefix) and (not suffixes or r.key.lower().endswith(suffixes))
    ]


class _Handler(ForwardingHandler):
    server: CountingProxy

    def _kind(self, key: str, query: dict) -> str:
        if self.command == "GET" and not key and ("list-type" in query or "prefix" in query or not query):
            return "LIST"
        return self.command

    def _handle(self) -> None:
        body = self.read_body()
        parts = urlsplit(self.path)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        query = parse_qs(parts.query, keep_blank_values=True)
        status, reason, headers, data = self.forward(body, timeout=120)
        self.server.record(Request(self._kind(key, query), bucket, key, status, len(data)))
        self.relay(status, reason, headers, data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle
