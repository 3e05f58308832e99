"""Constants and helpers shared by the storage tests (imported by ``conftest.py`` and the tests)."""

from __future__ import annotations

import collections
import random
import socket
import uuid

from storage.store.settings import S3Settings
from tests.storage.forwarding import ForwardingHandler, ForwardingServer

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

_ERRORS = {
    "503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    "409": (409, "Conflict", "ConditionalRequestConflict", "A conflicting conditional operation is in progress."),
}


class FaultProxy(ForwardingServer):
    """Forwards to ``upstream`` but, on a seeded fraction of requests, answers 503 SlowDown or
    500 InternalError, drops the connection before forwarding ("drop") or forwards and then
    drops it without answering ("drop_after": the request took effect, the reply is lost).

    ``conflict_rate`` additionally answers 409 ConditionalRequestConflict to conditional PUTs.
    """

    def __init__(self, upstream: str, *, rate: float, seed: int, conflict_rate: float = 0.0) -> None:
        super().__init__(upstream, _ProxyHandler)
        self.rate = rate
        self.conflict_rate = conflict_rate
        self.rng = random.Random(seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self.enabled = True

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


class _ProxyHandler(ForwardingHandler):
    server: FaultProxy

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _handle(self) -> None:
        body = self.read_body()
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
        status, reason, headers, data = self.forward(body, timeout=60)
        if fault == "drop_after":
            return self._drop()
        self.relay(status, reason, headers, data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle
