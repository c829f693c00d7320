"""The port a cluster member listens on: chosen in K2E_MEMBER_PORTS, below the kernel's
ephemeral ports, skipping ports another socket holds; with none free, the member's row
is marked failed so that its gang comes down at once instead of waiting to form."""

import random
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from k2e.cluster_schemas import Distribution
from k2e.jobs.gangs import GangStore, place
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.settings import Settings
from worker.gang_watch import join
from worker.member_child import free_port

SHAPE = Distribution(workers=1, parameter_servers=1)


def held_listener(port: int) -> socket.socket | None:
    """A socket listening on ``port`` on every interface, or None when it is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("", port))
    except OSError:
        sock.close()
        return None
    sock.listen()
    return sock


@pytest.fixture
def held_pair() -> Iterator[tuple[int, socket.socket]]:
    """Two neighbouring ports of the default range, the first held by a listener."""
    first, last = Settings().member_port_range
    for port in random.Random(7).sample(range(first, last), 50):
        sock = held_listener(port)
        if sock is None:
            continue
        free = held_listener(port + 1)
        if free is not None:
            free.close()
            yield port, sock
            sock.close()
            return
        sock.close()
    pytest.fail("no two neighbouring free ports in the member range")


def test_the_default_range_is_below_the_kernels_ephemeral_ports() -> None:
    first, last = Settings().member_port_range
    assert 1024 <= first <= last
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    if ephemeral.exists():
        low = int(ephemeral.read_text().split()[0])
        assert last < low, (last, low)


def test_a_port_is_chosen_in_the_range_and_is_free() -> None:
    first, last = 21000, 21099
    port = free_port(first, last)
    assert first <= port <= last
    sock = held_listener(port)
    assert sock is not None
    sock.close()


def test_a_port_another_socket_holds_is_skipped(held_pair) -> None:
    held, _ = held_pair
    chosen = {free_port(held, held + 1, random.Random(seed)) for seed in range(20)}
    assert chosen == {held + 1}


def test_no_free_port_in_the_range_is_an_error(held_pair) -> None:
    held, _ = held_pair
    with pytest.raises(OSError, match=f"{held}-{held}"):
        free_port(held, held)


@pytest.mark.parametrize("value", ["30000-20000", "80-90", "20000-70000", "20000", "a-b"])
def test_a_bad_range_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="member_ports"):
        Settings(member_ports=value)


def test_a_member_with_no_free_port_fails_its_row(tmp_path, held_pair) -> None:
    held, _ = held_pair
    store = JobLeases(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create_schema()
    try:
        job_id = str(uuid.uuid4())
        spec = {"distribution": SHAPE.model_dump()}
        store.create(NewJob(job_id, "t", spec, "cpu", f"jobs/{job_id}", 10))
        with store.engine.begin() as conn:
            gang = place(conn, job_id, SHAPE)
        gangs = GangStore(store.engine)
        settings = Settings(
            data_dir=tmp_path, redis_url="redis://127.0.0.1:6379/0", member_ports=f"{held}-{held}"
        )
        assert join(gangs, settings, job_id, gang, "ps", 0) is None
        [ps] = [m for m in gangs.members(job_id) if m.role == "ps"]
        assert ps.state == "failed"
        roomy = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:6379/0")
        address = join(gangs, roomy, job_id, gang, "chief", 0)
        assert address is not None
        first, last = roomy.member_port_range
        assert address.startswith("127.0.0.1:")
        assert first <= int(address.rsplit(":", 1)[1]) <= last
    finally:
        store.engine.dispose()
