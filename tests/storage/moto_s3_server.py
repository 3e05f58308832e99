"""Run moto's S3 server on 127.0.0.1 in its own process (started by ``conftest.py``).

Usage: ``python moto_s3_server.py PORT`` (0 = any free port; the bound port is printed). Identical
to ``moto_server`` except for one thing:
conditional PUTs (``If-None-Match``/``If-Match``) are serialised. moto checks the condition and
then stores the object in two steps, so two racing ``IfNoneMatch="*"`` writers could both
succeed, whereas real S3 evaluates the condition atomically. The lock restores S3's guarantee
so the write-once tests exercise *our* handling of 412/409, not moto's race.
"""

from __future__ import annotations

import logging
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


class SerialiseConditionalWrites:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        conditional = environ.get("REQUEST_METHOD") == "PUT" and (
            "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MATCH" in environ
        )
        if not conditional:
            return self.app(environ, start_response)
        with self.lock:
            return list(self.app(environ, start_response))


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = int(sys.argv[1])
    app = SerialiseConditionalWrites(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    print(f"moto S3 listening on 127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
