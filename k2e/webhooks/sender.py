"""One delivery attempt: a POST to the checked address, named by the URL's host.

The connection goes to ``Target.address`` (checked by k2e.webhooks.targets), never to a
fresh lookup of the name; the Host header and TLS's SNI and certificate check use the
name. Redirects are not followed (a 3xx is a failed attempt), no proxy from the
environment is used, at most ``max_bytes`` of the answer are read, and a watchdog ends
an attempt that passes ``timeout_s`` however slowly the endpoint trickles bytes.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from dataclasses import dataclass

from k2e.version import __version__
from k2e.webhooks.targets import Target

USER_AGENT = f"k2e-webhooks/{__version__}"


@dataclass(frozen=True)
class Outcome:
    """What an attempt got: the status and the start of the body, or why it failed."""

    status: int | None = None
    excerpt: str | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self.address = target.address
        self.tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


def post(
    target: Target,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    max_bytes: int,
    context: ssl.SSLContext | None = None,
) -> Outcome:
    """POST ``body`` to ``target``; never raises for the network's or endpoint's faults."""
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = _PinnedHTTPS(target, timeout_s, context or ssl.create_default_context())
    else:
        conn = _PinnedHTTP(target, timeout_s)
    expired = threading.Event()
    watchdog = threading.Timer(timeout_s, _cut, args=(conn, expired))
    watchdog.start()
    try:
        conn.request(
            "POST",
            target.path,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                **headers,
            },
        )
        response = conn.getresponse()
        excerpt = response.read(max_bytes) if max_bytes else b""
        return Outcome(status=response.status, excerpt=excerpt.decode("utf-8", "replace"))
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        if expired.is_set():
            return Outcome(error=f"timed out after {timeout_s:g} s")
        return Outcome(error=f"{type(exc).__name__}: {exc}"[:500])
    finally:
        watchdog.cancel()
        conn.close()


def _cut(conn: http.client.HTTPConnection, expired: threading.Event) -> None:
    """Past the deadline: shut the socket, so that a blocked read returns at once."""
    expired.set()
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
