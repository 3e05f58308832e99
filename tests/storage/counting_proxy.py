"""A reverse proxy in front of an S3 endpoint that records every request at the HTTP level.

Each request becomes a :class:`Request` (kind, bucket-relative key, response bytes), so a test or a
benchmark can say exactly what a run read: how many listing pages, which objects, how many bytes.
Kinds: ``LIST`` (a GET on the bucket with ``list-type``), ``GET``, ``HEAD``, ``PUT``, ``DELETE`` and
``POST`` (multi-object delete). Used by the catalog-scale test and ``bench/catalog_scale.py``.
"""

from __future__ import annotations

import collections
import http.client
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}


@dataclass(frozen=True)
class Request:
    kind: str
    bucket: str
    key: str  # "" for bucket-level requests
    status: int
    response_bytes: int


class CountingProxy(ThreadingHTTPServer):
    """Forwards to ``upstream`` (``http://host:port``, path-style S3) and records each request."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "CountingProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingProxy

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _kind(self, key: str, query: dict) -> str:
        if self.command == "GET" and not key and ("list-type" in query or "prefix" in query or not query):
            return "LIST"
        return self.command

    def _handle(self) -> None:
        body = self._read_body()
        parts = urlsplit(self.path)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        query = parse_qs(parts.query, keep_blank_values=True)
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP and name.lower() != "content-length":
                    conn.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()
            headers = response.getheaders()
        finally:
            conn.close()
        self.server.record(Request(self._kind(key, query), bucket, key, response.status, len(data)))
        self.send_response_only(response.status, response.reason)
        for name, value in headers:
            if name.lower() in _HOP or (name.lower() == "content-length" and self.command != "HEAD"):
                continue
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle
