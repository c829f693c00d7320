"""A Python client of the k2e API (httpx), typed with the API's own pydantic models.

from k2e.client import Client
with Client.from_env() as k2e:
    model = k2e.upload_model("seed.h5")
    data = k2e.upload_dataset("train.npz")
    job = k2e.submit({"keras_model_path": model.id, "train": {"dataset": data.id,
                                                               "max_steps": 1000}})
    for event in k2e.events(job.id):
        print(event.event, event.data)
    k2e.download_savedmodel(job.id, "export")
"""

from k2e.client.endpoint import ClientConfig, resolve_config
from k2e.client.exceptions import ApiUnreachable, ClientError, Problem, ProblemError
from k2e.client.http import Client
from k2e.client.sse import ServerSentEvent

__all__ = [
    "ApiUnreachable",
    "Client",
    "ClientConfig",
    "ClientError",
    "Problem",
    "ProblemError",
    "ServerSentEvent",
    "resolve_config",
]
