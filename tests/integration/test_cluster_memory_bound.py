"""The job memory bound on a cluster, with real Celery worker processes and real
TensorFlow: one of the two workers has a bound far below what any job holds there. Whichever
member it gets (the chief: its heartbeat counts its Celery and TensorFlow processes; another
member: its watch does, and marks its row), the job ends failed `out_of_memory` at its first
attempt and no member's TensorFlow process is left."""

from collections.abc import Iterator

import pytest

from tests.integration.test_clusters import assert_no_member_left
from tests.support.fault_deployment import FAST_RECOVERY, Env
from tests.support.job_polling import wait_for_job
from tests.support.postgres import fresh_postgres_database

pytestmark = pytest.mark.integration

LOW_BOUND = 64 * 1024**2  # the setting's least; a worker process with TensorFlow holds more


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with fresh_postgres_database() as url:
        deployment = Env(
            tmp_path_factory.mktemp("cluster-memory"), database_url=url, **FAST_RECOVERY
        )
        try:
            deployment.worker("cpu", node_name="roomy@%h")
            deployment.worker("cpu", node_name="tight@%h", job_memory_bytes=LOW_BOUND)
            yield deployment
        finally:
            deployment.close()


def test_a_member_past_the_memory_bound_ends_the_cluster_job_out_of_memory(env: Env) -> None:
    job = env.submit(20000, distribution={"workers": 1, "parameter_servers": 1})
    done = wait_for_job(env.client, job["id"], timeout=300)
    assert done["status"] == "failed", done
    assert done["error"]["reason"] == "out_of_memory", done["error"]
    assert done["attempts"] == 1, "never placed again"
    assert done["progress"]["global_step"] < 20000
    states = {f"{m['role']}:{m['index']}": m["state"] for m in done["cluster"]["members"]}
    message = done["error"]["message"]
    if states["ps:0"] == "out_of_memory":  # the tight worker held the parameter server
        assert message.startswith("cluster member ps:0 grew past the job memory bound")
        lines = [e["message"] for e in env.events(job["id"])]
        assert any(line.startswith("[ps:0] memory ") for line in lines)
    else:  # it held the chief: its heartbeat stopped the job
        assert message.startswith("the worker process grew to"), message
    print(f"members: {states}; error: {message}")
    assert "K2E_JOB_MEMORY_BYTES" in message
    assert_no_member_left(env)
