"""A cluster member's TensorFlow process, as its parent (the Celery task's process) holds
it: a fresh interpreter (``python -m worker.member_process``) with the member's TF_CONFIG,
in a process group of its own, killed by the kernel when its parent dies.

TensorFlow's gRPC servers must not outlive the member that started them: a parent killed
with SIGKILL takes its child along (Linux parent-death signal, set before ``exec``; the
child also polls its parent as a backstop), and a parent that stops its member kills the
child's whole group.
"""

import ctypes
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("k2e.worker")

PR_SET_PDEATHSIG = 1
# Loaded before any fork: the child only calls it (no loader lock between fork and exec).
_LIBC = ctypes.CDLL(None, use_errno=True)
# Ports of K2E_MEMBER_PORTS tried before a member gives up its placement.
PORT_TRIES = 200
# The folder holding the `worker` package: the child imports it from there.
_CODE_ROOT = str(Path(__file__).resolve().parents[1])


def worker_address(configured: str | None, broker_url: str) -> str:
    """The host this member puts in TF_CONFIG: the setting (K2E_WORKER_ADDRESS), else the
    local address of this node's route to the broker's host (127.0.0.1 for a broker on
    loopback)."""
    if configured:
        return configured
    parts = urlsplit(broker_url)
    host = parts.hostname or "127.0.0.1"
    if host in ("localhost", "::1") or host.startswith("127."):
        return "127.0.0.1"
    try:
        # A UDP "connect" sends nothing: it only asks the kernel for the route's source.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, parts.port or 6379))
            return str(probe.getsockname()[0])
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def free_port(first: int, last: int, rng: random.Random | None = None) -> int:
    """A TCP port in ``first..last`` (K2E_MEMBER_PORTS) free on every interface now, tried
    in a random order. TensorFlow's gRPC server binds it without SO_REUSEPORT (measured:
    it refuses a port another socket holds), so the port is let go here and bound by the
    member's process seconds later. The range lies below the kernel's ephemeral ports, so
    neither an outgoing connection nor a ``bind(("", 0))`` elsewhere takes it in between;
    another member choosing the same port then is the remaining chance, and a member whose
    port was taken fails and its gang is placed again."""
    ports = list(range(first, last + 1))
    (rng or random.SystemRandom()).shuffle(ports)
    for port in ports[:PORT_TRIES]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port among {min(PORT_TRIES, len(ports))} tried in {first}-{last}")


def _die_with_parent(parent: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return setup


class MemberChild:
    """One member's TensorFlow process. ``on_progress`` gets each JSON line it writes on
    stdout; ``on_log`` each line of its stderr (its logging, TensorFlow's)."""

    def __init__(
        self,
        plan: dict[str, Any],
        tf_config: dict[str, Any],
        on_log: Callable[[str], None],
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.plan = {**plan, "parent": os.getpid()}
        self.tf_config = tf_config
        self.on_log, self.on_progress = on_log, on_progress
        self.process: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []
        self._terminated_at: float | None = None

    def start(self) -> "MemberChild":
        env = dict(os.environ, TF_CONFIG=json.dumps(self.tf_config), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_CODE_ROOT, env.get("PYTHONPATH")]))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.member_process", json.dumps(self.plan)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - no locks taken
            process_group=0,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_progress, args=(self.process.stdout,), daemon=True),
            threading.Thread(target=self._read_logs, args=(self.process.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def terminate(self) -> None:
        """Ask it to stop at its next step (training saves a checkpoint there)."""
        if self.poll() is None and self._terminated_at is None:
            self._terminated_at = time.monotonic()
            os.kill(self.pid, signal.SIGTERM)

    def overdue(self, grace_s: float) -> bool:
        """Asked to stop more than ``grace_s`` ago and still running."""
        at = self._terminated_at
        return at is not None and self.poll() is None and time.monotonic() - at > grace_s

    def kill(self) -> int | None:
        """Kill its process group and reap it; its return code."""
        if self.process is None:
            return None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = self.process.wait()
        self.join_readers()
        return code

    def join_readers(self, timeout: float = 5.0) -> None:
        for reader in self._readers:
            reader.join(timeout)

    def _read_progress(self, stream: Any) -> None:
        for line in stream:
            try:
                report = json.loads(line)
            except ValueError:
                self.on_log(line.rstrip())
                continue
            if self.on_progress is not None:
                try:
                    self.on_progress(report)
                except Exception:  # a store write failing must not stop the reader
                    log.warning("member progress not recorded", exc_info=True)

    def _read_logs(self, stream: Any) -> None:
        for line in stream:
            if line.strip():
                try:
                    self.on_log(line.rstrip())
                except Exception:
                    log.warning("member log line not recorded", exc_info=True)
