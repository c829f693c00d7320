"""A small server-sent events reader for the tests (and the benchmark's shape of one):
what a client of GET /jobs/{id}/events receives, with the time each event arrived."""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    id: int
    event: str
    data: Any
    received: float  # time.time() when its blank line arrived


def read_events(
    url: str,
    headers: dict[str, str],
    params: dict[str, Any] | None = None,
    until: Callable[[list[Event]], bool] | None = None,
    timeout: float = 300,
) -> tuple[list[Event], list[str]]:
    """The events of one connection until the server closes it (or ``until(events)``
    holds: the client then hangs up), and the comment lines seen."""
    events: list[Event] = []
    comments: list[str] = []
    fields: dict[str, str] = {}
    with (
        httpx.Client(timeout=httpx.Timeout(timeout, connect=10)) as client,
        client.stream("GET", url, headers=headers, params=params) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                comments.append(line)
            elif line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            elif fields:
                events.append(
                    Event(
                        int(fields["id"]), fields["event"], json.loads(fields["data"]), time.time()
                    )
                )
                fields = {}
                if until is not None and until(events):
                    break
    return events, comments
