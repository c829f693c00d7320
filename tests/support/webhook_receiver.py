"""A real webhook endpoint on loopback for the tests: it checks every request's
``K2E-Signature`` (as docs/api.md tells receivers to), answers the first attempts of each
event with a failure, and counts the events it accepted once each (by ``K2E-Event-Id``)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from k2e.webhooks.signing import verify


def offline_resolver(host: str, port: int) -> list[str]:
    """A resolver for apps whose tests must not look names up (a lookup is a packet to
    the machine's DNS server): every name fails to resolve, as in a network without DNS."""
    raise OSError(f"{host}: no DNS lookups in the tests")


@dataclass
class Receiver:
    secret: str = ""
    fail_first: int = 0  # answer 500 to this many attempts of each event
    answer: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    reply: bytes = b"ok"
    port: int = 0
    attempts: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_signatures: int = 0
    requests: int = 0
    raw: list[tuple[dict[str, str], bytes]] = field(default_factory=list)  # every request
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/k2e?src=test"

    def effective(self) -> Counter[str]:
        """Event types accepted, each event once however often it was sent."""
        return Counter(event["type"] for event in self.accepted.values())

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count:
            assert time.monotonic() < deadline, f"accepted {len(self.accepted)} of {count}"
            time.sleep(0.05)

    def handle(self, request: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        body = request.rfile.read(int(request.headers.get("Content-Length", "0")))
        with self.lock:
            self.requests += 1
            self.raw.append((dict(request.headers.items()), body))
            if not verify(self.secret, body, request.headers.get("K2E-Signature", "")):
                self.bad_signatures += 1
                return 400, b"bad signature"
            event_id = request.headers["K2E-Event-Id"]
            self.attempts[event_id] += 1
            if self.attempts[event_id] <= self.fail_first:
                return 500, b"try again"
            if 200 <= self.answer < 300:
                self.accepted.setdefault(event_id, json.loads(body))
        time.sleep(self.delay_s)
        return self.answer, self.reply


@contextmanager
def running_receiver(receiver: Receiver, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """Serve ``receiver`` on a free loopback port (over TLS with ``tls``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            status, reply = receiver.handle(self)
            self.send_response(status)
            for name, value in receiver.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            try:
                self.wfile.write(reply)
            except OSError:
                pass  # the sender stopped reading (its bound, or its deadline)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def self_signed(folder: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A certificate for ``name`` alone: the server's TLS context, and a client context
    that trusts that certificate (and nothing else)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client
