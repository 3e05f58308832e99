"""A counting reverse proxy in front of a Prefect server's API, for ``bench/first_night.py`` (issue 21).

Every HTTP request is forwarded upstream on a kept-alive connection (one per client connection) and
counted by route (``POST /task_runs/filter``; ids shown as ``{id}``) and status. A WebSocket upgrade
(Prefect 3 clients send their events, task-run state changes among them, over ``/events/in``) is tunnelled
byte for byte; the data frames the client sends are counted as events (:attr:`ApiCounts.ws_messages`).

It reuses the request plumbing of the S3 counting proxy (:mod:`tests.storage.forwarding`); that proxy
itself cannot serve here: it opens a new upstream connection per request and drops the upgrade headers.
"""

from __future__ import annotations

import collections
import http.client
import re
import socket
import threading
from dataclasses import dataclass, field

from tests.storage.forwarding import ForwardingHandler, ForwardingServer

_ID = re.compile(r"/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|/\d+(?=/|$)")


@dataclass
class ApiCounts:
    """What went through the proxy since the last :meth:`ApiProxy.reset`."""

    calls: collections.Counter = field(default_factory=collections.Counter)  # "POST /task_runs/filter" → n
    statuses: collections.Counter = field(default_factory=collections.Counter)  # 200 → n
    errors: collections.Counter = field(default_factory=collections.Counter)  # "503 POST /…" → n (5xx answers)
    websockets: int = 0
    ws_messages: int = 0

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def top(self, k: int = 4) -> str:
        return "; ".join(f"{route} {n}" for route, n in self.calls.most_common(k))


def route(method: str, path: str) -> str:
    """``POST /api/task_runs/0b1…/set_state?x=1`` → ``POST /task_runs/{id}/set_state``."""
    path = path.split("?", 1)[0]
    path = path[4:] if path.startswith("/api/") else path
    return f"{method} {_ID.sub('/{id}', path)}"


class ApiProxy(ForwardingServer):
    """Forwards to ``upstream`` (``http://host:port``) and counts; :attr:`url` is the API URL to give clients."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, _Handler)
        self.counts = ApiCounts()

    @property
    def url(self) -> str:
        return f"{self.endpoint}/api"

    def reset(self) -> ApiCounts:
        """The counts so far; starts new ones."""
        with self.lock:
            taken, self.counts = self.counts, ApiCounts()
        return taken

    def record(self, name: str, status: int) -> None:
        with self.lock:
            self.counts.calls[name] += 1
            self.counts.statuses[status] += 1
            if status >= 500:
                self.counts.errors[f"{status} {name}"] += 1

    def count_ws(self, connections: int = 0, messages: int = 0) -> None:
        with self.lock:
            self.counts.websockets += connections
            self.counts.ws_messages += messages


class _Handler(ForwardingHandler):
    server: ApiProxy
    _upstream: http.client.HTTPConnection | None = None

    def _handle(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._tunnel()
            return
        body = self.read_body()
        name = route(self.command, self.path)
        try:
            status, reason, headers, data = self._forward(body)
        except OSError as exc:  # the server is gone: the client sees a 502, the row an error
            self.server.record(name, 502)
            self.send_error(502, f"proxy: {type(exc).__name__}")
            return
        self.server.record(name, status)
        self.relay(status, reason, headers, data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """This request upstream on this connection's kept-alive upstream connection (reopened once if stale)."""
        for attempt in (0, 1):
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(*self.server.upstream, timeout=300)
            try:
                self._upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                        self._upstream.putheader(name, value)
                self._upstream.putheader("Content-Length", str(len(body)))
                self._upstream.endheaders(body or None)
                response = self._upstream.getresponse()
                return response.status, response.reason, response.getheaders(), response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._upstream.close()
                self._upstream = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def finish(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
        super().finish()

    def _tunnel(self) -> None:
        """Relay a WebSocket connection: the upgrade request, then raw bytes both ways; client data frames counted."""
        self.close_connection = True
        try:
            upstream = socket.create_connection(self.server.upstream, timeout=None)
        except OSError:
            self.send_error(502, "proxy: no upstream")
            return
        self.server.count_ws(connections=1)
        head = [f"{self.command} {self.path} {self.request_version}"] + [f"{k}: {v}" for k, v in self.headers.items()]
        upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        back = threading.Thread(target=_pipe, args=(upstream, self.connection), daemon=True)
        back.start()
        try:
            self._client_frames(upstream)
        finally:
            for sock in (upstream, self.connection):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            back.join(timeout=5)
            upstream.close()

    def _client_frames(self, upstream: socket.socket) -> None:
        """Forward the client's frames (RFC 6455 §5.2), counting text and binary ones, until it closes."""
        read = self.rfile.read
        while True:
            first = read(2)
            if len(first) < 2:
                return
            opcode, length = first[0] & 0x0F, first[1] & 0x7F
            extended = read({126: 2, 127: 8}.get(length, 0))
            if extended:
                length = int.from_bytes(extended, "big")
            mask = read(4) if first[1] & 0x80 else b""
            payload = read(length)
            try:
                upstream.sendall(first + extended + mask + payload)
            except OSError:
                return
            if opcode in (1, 2):
                self.server.count_ws(messages=1)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass
