"""The reverse-proxy plumbing the test proxies share: a threaded server in front of one S3 endpoint
and a handler that reads a request, forwards it upstream and relays the answer.

:class:`tests.storage.helpers.FaultProxy` (injects faults) and
:class:`tests.storage.counting_proxy.CountingProxy` (records requests) build on it.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

_Server = TypeVar("_Server", bound="ForwardingServer")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}


class ForwardingServer(ThreadingHTTPServer):
    """A server on a free local port whose handler forwards to ``upstream`` (``http://host:port``)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: str, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def endpoint(self) -> str:
        """The proxy's URL (what a client uses instead of the upstream's)."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self: _Server) -> _Server:
        """Serve on a background thread; returns the server."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


class ForwardingHandler(BaseHTTPRequestHandler):
    """Reads a request body (plain or chunked), forwards the request and relays the response."""

    protocol_version = "HTTP/1.1"
    server: ForwardingServer

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    def read_body(self) -> bytes:
        """The request body, de-chunked."""
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

    def forward(self, body: bytes, timeout: float) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send this request with ``body`` upstream; its status, reason, headers and body."""
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=timeout)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP and name.lower() != "content-length":
                    conn.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            return response.status, response.reason, response.getheaders(), response.read()
        finally:
            conn.close()

    def relay(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
        """Answer the client with an upstream response (hop-by-hop headers left out)."""
        self.send_response_only(status, reason)
        for name, value in headers:
            if name.lower() in _HOP or (name.lower() == "content-length" and self.command != "HEAD"):
                continue
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
