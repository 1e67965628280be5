"""A real local HTTP endpoint for webhook tests: scripted replies, signature checks, and an
outage switch (the server stops listening, then comes back on the same port)."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from connectors.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

SECRET = "test-signing-key"


@dataclass
class Reply:
    """What the server does with one request: answer `status` (after `delay_s`), or with
    `close=True` drop the connection without an answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    close: bool = False


@dataclass
class Endpoint:
    """A scripted endpoint: replies are used in order, then every request gets 200.
    Requests whose signature does not verify get 401."""

    url: str
    script: list[Reply]
    received: list[bytes] = field(default_factory=list)
    accepted: list[bytes] = field(default_factory=list)
    idempotency_keys: list[str | None] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: Any = None
    port: int = 0
    tls: tuple[Path, Path] | None = None  # certificate and key: serve https
    delay_s: float = 0.0  # every request takes this long (a slow endpoint)
    poison: set[str] = field(default_factory=set)  # action ids always answered with 500

    def accepted_ids(self) -> list[str]:
        with self.lock:
            return [json.loads(b)["action_id"] for b in self.accepted]

    def go_down(self) -> None:
        """Stops listening: connections are refused until `come_back()`."""
        self.server.shutdown()
        self.server.server_close()

    def come_back(self) -> None:
        _start(self, self.port)


def _handler(endpoint: Endpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(endpoint.delay_s)
            signed = verify(
                SECRET,
                self.headers.get(TIMESTAMP_HEADER, ""),
                self.headers.get(SIGNATURE_HEADER, ""),
                body,
                now=time.time(),
            )
            with endpoint.lock:
                endpoint.received.append(body)
                reply = endpoint.script.pop(0) if endpoint.script else Reply()
                if endpoint.poison and json.loads(body).get("action_id") in endpoint.poison:
                    reply = Reply(500)
                if not signed:
                    endpoint.bad_signatures += 1
                    reply = Reply(401)
                elif 200 <= reply.status < 300 and not reply.delay_s and not reply.close:
                    endpoint.accepted.append(body)
                    endpoint.idempotency_keys.append(self.headers.get("Idempotency-Key"))
                    endpoint.accepted_at.append(time.time())
            if reply.close:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            time.sleep(reply.delay_s)
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _start(endpoint: Endpoint, port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(endpoint))
    server.daemon_threads = True
    if endpoint.tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*endpoint.tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint.server = server
    endpoint.port = server.server_address[1]


def serve(script: list[Reply], tls: tuple[Path, Path] | None = None) -> Iterator[Endpoint]:
    endpoint = Endpoint(url="", script=list(script), tls=tls)
    _start(endpoint, 0)
    scheme = "https" if tls else "http"
    endpoint.url = f"{scheme}://127.0.0.1:{endpoint.port}/hook"
    try:
        yield endpoint
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()
