"""The inspection sandbox's confinement, from inside a child confined exactly as an
inspection's (k2e.vetting.sandbox.probe_confinement runs the same child launch and the
same ``confine`` function, then tries instead of inspecting)."""

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2e.settings import Settings
from k2e.vetting.sandbox import SandboxLimits, probe_confinement

pytestmark = pytest.mark.integration


@pytest.fixture
def listener() -> Iterator[tuple[str, int]]:
    """A TCP port on this machine that accepts connections (as the API's would)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield "127.0.0.1", server.getsockname()[1]


def test_the_sandbox_child_has_no_network_and_cannot_read_the_services_secrets(
    tmp_path: Path, listener: tuple[str, int]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url="redis://127.0.0.1:1/0")
    data = settings.data_dir.resolve()
    (data / "storage").mkdir(parents=True)
    key = settings.admin_key_file
    key.write_text("k2e_not-a-real-key")
    key.chmod(0o600)
    database = Path(settings.sqlalchemy_url[len("sqlite:///") :])
    database.write_bytes(b"SQLite format 3\0")  # default umask: world-readable, like the store
    upload = data / "storage" / "upload.h5"
    upload.write_bytes(b"\x89HDF\r\n\x1a\n")
    # The parent itself reaches both: what the child cannot is the confinement's doing.
    with socket.create_connection(listener, timeout=2):
        pass
    assert key.read_text()
    found = probe_confinement(
        upload, listener, [str(key), str(database)], SandboxLimits.from_settings(settings)
    )
    confined = found["confined"]
    print(f"\nconfined: {confined}; probe: {found}")
    if "no network" not in confined:
        pytest.skip(f"this machine allows no network namespace to this user: {confined}")
    assert not found["connected"], found
    if os.geteuid() != 0:
        pytest.skip(
            "not root: the child keeps the service user's file view (no mount namespace, "
            "no setuid), so reading the key file is not confined here"
        )
    assert "user nobody" in confined
    assert f"hidden {data}" in confined
    assert found["read"] == [], f"the child read {found['read']}"
