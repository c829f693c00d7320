"""Downloads at link speed: a 1 GB checkpoint as a plain tar (GET ...?format=tar) against
``os.sendfile`` of the same bytes over loopback, alternating in one run; then 8 such
downloads at once, with the API's memory sampled meanwhile.

Both sides are read by the same client: a raw socket, ``recv_into`` a 4 MB buffer,
bytes counted and discarded (no HTTP library in the way). The sendfile server is a
thread of the bench process that answers one GET with a fixed header and then
``os.sendfile`` of the whole file: the kernel's zero-copy path, the ceiling for any
HTTP server on this machine.
"""

import contextlib
import os
import selectors
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import AUTH_HEADER, Stack, read_cpu_seconds, read_rss_bytes
from bench.memory import RssSampler, checkpoint_job

MB = 1024 * 1024
BUFFER = 4 * MB
CONCURRENT = 8


def fetch(port: int, path: str, headers: tuple[str, ...] = ()) -> tuple[int, float]:
    """GET ``path`` on loopback; returns (body bytes, seconds from connect to the last byte)."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        extra = "".join(f"{h}\r\n" for h in headers)
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
        sock.sendall(request.encode())
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        head = b""
        while b"\r\n\r\n" not in head:
            n = sock.recv_into(view)
            if not n:
                raise RuntimeError(f"{path}: connection closed before the headers")
            head += bytes(view[:n])
        header, body_start = head.split(b"\r\n\r\n", 1)
        status = header.split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"{path}: HTTP {status.decode()} {body_start[:300]!r}")
        length = None
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        received = len(body_start)
        while length is None or received < length:
            n = sock.recv_into(view)
            if not n:
                break
            received += n
    return received, time.perf_counter() - started


class SendfileServer:
    """Answers each GET with a header and ``os.sendfile`` of one file, until closed; one
    thread per connection, so that concurrent downloads are served at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        size = self.path.stat().st_size
        with conn, self.path.open("rb") as f:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                request += chunk
            conn.sendall(
                f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n"
                "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n".encode()
            )
            sent = 0
            while sent < size:
                sent += os.sendfile(conn.fileno(), f.fileno(), sent, size - sent)

    def close(self) -> None:
        self.listener.close()
        self._thread.join(5)


def measure(stack: Stack, size: int, rounds: int = 3) -> dict[str, Any]:
    assert stack.api is not None
    pid = stack.api.pid
    job_id, data = checkpoint_job(stack, size)
    payload = data.stat().st_size
    path = f"/jobs/{job_id}/checkpoints/1?format=tar"
    server = SendfileServer(data)
    try:
        fetch(server.port, "/")  # the page cache warm for both
        speeds: dict[str, list[float]] = {"tar": [], "sendfile": []}
        for i in range(rounds):
            cases = ["tar", "sendfile"] if i % 2 == 0 else ["sendfile", "tar"]
            for case in cases:
                if case == "tar":
                    received, seconds = fetch(stack.port, path, (AUTH_HEADER,))
                else:
                    received, seconds = fetch(server.port, "/")
                if received < payload:
                    raise RuntimeError(f"{case}: {received} of {payload} bytes")
                speeds[case].append(payload / MB / seconds)
        # The same CONCURRENT downloads at once from the API, then from the sendfile
        # server: the second is this machine's ceiling for the first.
        together = concurrent(stack.port, path, payload, pid, (AUTH_HEADER,))
        together["sendfile"] = concurrent(server.port, "/", payload, None)
    finally:
        server.close()
    medians = {case: statistics.median(v) for case, v in speeds.items()}
    return {
        "size_bytes": payload,
        "mb_s": speeds,
        "median_mb_s": medians,
        "ratio_to_sendfile": medians["tar"] / medians["sendfile"],
        "concurrent": together,
    }


def concurrent(
    port: int, path: str, payload: int, pid: int | None, headers: tuple[str, ...] = ()
) -> dict[str, Any]:
    """CONCURRENT downloads of ``path`` at once: aggregate speed and, with ``pid``, the
    server's RSS growth.

    One client thread drives every socket (non-blocking, ``selectors``): threads of one
    Python process would contend for its GIL and measure the client, not the server."""
    extra = "".join(f"{h}\r\n" for h in headers)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    ).encode()
    buffer = memoryview(bytearray(BUFFER))
    before = read_rss_bytes(pid) if pid is not None else 0
    server_cpu = read_cpu_seconds(pid) if pid is not None else 0.0
    client_cpu = time.thread_time()
    started = time.perf_counter()
    received: dict[socket.socket, int] = {}
    finished: dict[socket.socket, float] = {}
    sampling = RssSampler(pid) if pid is not None else contextlib.nullcontext(None)
    with sampling as sampler, selectors.DefaultSelector() as selector:
        for _ in range(CONCURRENT):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(request)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            received[sock] = 0
        while len(finished) < CONCURRENT:
            for key, _ in selector.select(timeout=60):
                sock = key.fileobj  # type: ignore[assignment]
                n = sock.recv_into(buffer)
                if n:
                    received[sock] += n
                    continue
                finished[sock] = time.perf_counter() - started
                selector.unregister(sock)
                sock.close()
    elapsed = time.perf_counter() - started
    client_cpu = time.thread_time() - client_cpu
    server_cpu = read_cpu_seconds(pid) - server_cpu if pid is not None else None
    # Each response: a few hundred bytes of headers, then the tar (payload plus headers).
    short = [n for n in received.values() if n < payload]
    if short:
        raise RuntimeError(f"concurrent downloads ended short: {short} of {payload} bytes")
    return {
        "downloads": CONCURRENT,
        "seconds": elapsed,
        "aggregate_mb_s": CONCURRENT * payload / MB / elapsed,
        "slowest_s": max(finished.values()),
        # Cores used meanwhile: the server (the API; None for the sendfile thread, which
        # shares the bench's process) and this client thread, which reads every byte.
        "server_cores": server_cpu / elapsed if server_cpu is not None else None,
        "client_cores": client_cpu / elapsed,
        "rss_before": before,
        "rss_peak": sampler.peak if sampler else None,
        "growth": sampler.peak - before if sampler else None,
    }
