"""Constants and helpers shared by the storage tests (imported by ``conftest.py`` and the tests)."""

from __future__ import annotations

import collections
import http.client
import random
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from storage.settings import S3Settings

BUCKET = "sstar-test"
ACCESS_KEY = "sstar-test-access"
SECRET_KEY = "sstar-TEST-secret-do-not-leak-0123456789"


def make_settings(endpoint: str, **overrides) -> S3Settings:
    return S3Settings(
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        **overrides,
    )


def unique_s3_uri(name: str = "t") -> str:
    return f"s3://{BUCKET}/{name}-{uuid.uuid4().hex[:12]}"


# -- fault-injecting reverse proxy ---------------------------------------------------------------

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
_ERRORS = {
    "503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    "409": (409, "Conflict", "ConditionalRequestConflict", "A conflicting conditional operation is in progress."),
}


class FaultProxy(ThreadingHTTPServer):
    """Forwards to ``upstream`` but, on a seeded fraction of requests, answers 503 SlowDown or
    500 InternalError, drops the connection before forwarding ("drop") or forwards and then
    drops it without answering ("drop_after": the request took effect, the reply is lost).

    ``conflict_rate`` additionally answers 409 ConditionalRequestConflict to conditional PUTs.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: str, *, rate: float, seed: int, conflict_rate: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.rate = rate
        self.conflict_rate = conflict_rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.enabled = True
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)

    def decide(self, method: str, headers) -> str | None:
        with self.lock:
            self.counts["requests"] += 1
            if not self.enabled:
                return None
            draw = self.rng.random()
            kind = self.rng.choice(("503", "500", "drop", "drop_after"))
            conflict = self.rng.random()
            if method == "PUT" and "If-None-Match" in headers and conflict < self.conflict_rate:
                kind = "409"
            elif draw >= self.rate:
                return None
            self.counts[kind] += 1
            if "aws-sdk-cpp" in headers.get("User-Agent", ""):  # pyarrow's S3 client
                self.counts["pyarrow:" + kind] += 1
            return kind


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultProxy

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

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _handle(self) -> None:
        body = self._read_body()
        fault = self.server.decide(self.command, self.headers)
        if fault == "drop":
            return self._drop()
        if fault in _ERRORS:
            status, reason, code, message = _ERRORS[fault]
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>"
            ).encode()
            self.send_response_only(status, reason)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(xml)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(xml)
            return
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=60)
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
        if fault == "drop_after":
            return self._drop()
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
