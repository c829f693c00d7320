"""The client's event following: the SSE parser, Last-Event-ID resume against a real HTTP
server that drops connections, and the polling fallback for an API without the stream."""

import json
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from k2e.client import ApiUnreachable, Client, ProblemError
from k2e.client.following import FollowOptions
from k2e.client.sse import SSEDecoder, iter_events, iter_lines
from k2e.compat import UTC

FAST = FollowOptions(reconnect_delay_s=0.01, max_reconnects=3, poll_interval_s=0.01)


# --- the parser ----------------------------------------------------------------------------------


def test_lines_split_on_crlf_lf_and_cr_across_chunk_boundaries() -> None:
    chunks = ["a\r", "\nb\n", "c\rd", "\r\n\r", "\n", "tail"]
    assert list(iter_lines(chunks)) == ["a", "b", "c", "d", "", "tail"]


def test_messages_with_ids_comments_multiline_data_and_retry() -> None:
    stream = (
        ": keep-alive\n\n"
        'id: 1\nevent: status\ndata: {"status": "queued"}\n\n'
        "event: log\ndata: first line\ndata: second line\n\n"  # no id: the last one holds
        "retry: 250\nid: 7\nunknown: ignored\ndata:no-space\n\n"
        "id: 9\n\n"  # an id alone dispatches nothing but moves the last event id
    )
    decoder = SSEDecoder()
    # One character at a time: nothing depends on how the network cuts the stream.
    events = list(iter_events(iter(stream), decoder))
    assert [(e.id, e.event, e.data) for e in events] == [
        ("1", "status", '{"status": "queued"}'),
        ("1", "log", "first line\nsecond line"),
        ("7", "message", "no-space"),
    ]
    assert events[2].retry_ms == 250
    assert decoder.last_event_id == "9"


def test_an_unfinished_message_is_never_dispatched() -> None:
    events = list(iter_events(['id: 1\ndata: {}\n\nid: 2\ndata: {"half":']))
    assert [e.id for e in events] == ["1"]


# --- following over MockTransport ---------------------------------------------------------------


def _sse(*events: tuple[int, str, dict[str, Any]]) -> bytes:
    return "".join(
        f"id: {i}\nevent: {kind}\ndata: {json.dumps(data)}\n\n" for i, kind, data in events
    ).encode()


NOW = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
JOB = {
    "id": "j1",
    "status": "succeeded",
    "created_at": NOW,
    "spec": {},
    "progress": {"global_step": 20, "max_steps": 20},
    "metrics": {"train": [{"step": 10, "loss": 0.5}, {"step": 20, "loss": 0.25}], "eval": {}},
    "queue": "cpu",
    "model_dir": "jobs/j1",
}


def test_wait_returns_the_end_events_job_and_skips_unknown_event_kinds() -> None:
    body = _sse((1, "status", {"status": "running"}), (2, "future-kind", {}), (3, "end", JOB))

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept"] == "text/event-stream"
        assert request.headers["authorization"] == "Bearer k"
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    with Client("http://k2e.test", "k", transport=httpx.MockTransport(handler)) as client:
        assert [e.event for e in client.events("j1")] == ["status", "end"]
        job = client.wait("j1")
    assert job.status == "succeeded"
    assert job.progress.global_step == 20


def test_an_unknown_job_is_a_problem_not_a_fallback() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        problem = {
            "type": "about:blank",
            "title": "Not found",
            "status": 404,
            "detail": "no job with id 'nope'",
            "errors": [],
        }
        return httpx.Response(404, json=problem)

    with Client("http://k2e.test", "k", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ProblemError) as raised:
            list(client.events("nope"))
    assert raised.value.status == 404
    assert raised.value.detail == "no job with id 'nope'"


def test_without_the_events_route_the_client_polls_and_makes_the_same_events() -> None:
    polls = {"n": 0}
    running = {
        **JOB,
        "status": "running",
        "progress": {"global_step": 10, "max_steps": 20, "steps_per_sec": 50.0, "eta_s": 0.2},
        "metrics": {"train": JOB["metrics"]["train"][:1], "eval": {}},
    }
    done = {**JOB, "metrics": {**JOB["metrics"], "eval": {"acc_1": 0.75}}}
    log = [
        {"seq": 1, "at": NOW, "kind": "running", "message": "started"},
        {"seq": 2, "at": NOW, "kind": "log", "message": "loss = 0.5"},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/jobs/j1/events":
            return httpx.Response(
                404, json={"title": "Not Found", "status": 404, "detail": "Not Found"}
            )
        if path == "/jobs/j1":
            polls["n"] += 1
            return httpx.Response(200, json=running if polls["n"] <= 2 else done)
        if path == "/jobs/j1/logs":
            since = int(request.url.params["since"])
            items = [e for e in log if e["seq"] > since]
            return httpx.Response(200, json={"items": items, "next_since": 2})
        return httpx.Response(500)

    with Client("http://k2e.test", "k", transport=httpx.MockTransport(handler)) as client:
        events = list(client.events("j1", options=FAST))
    kinds = [e.event for e in events]
    assert kinds[:4] == ["status", "log", "progress", "loss"]
    assert events[0].data["status"] == "running"
    assert events[2].data["global_step"] == 10
    assert [e.data for e in events if e.event == "loss"] == [
        {"step": 10, "loss": 0.5},
        {"step": 20, "loss": 0.25},
    ]
    assert [e.data for e in events if e.event == "eval"] == [{"metrics": {"acc_1": 0.75}}]
    assert kinds[-1] == "end"
    assert events[-1].job().status == "succeeded"
    # The job's final status shows once, and no event repeats.
    assert [e.data["status"] for e in events if e.event == "status"] == ["running", "succeeded"]


# --- resuming against a real HTTP server --------------------------------------------------------


class _StreamServer(ThreadingHTTPServer):
    """Serves a job's events, dropping each connection after a scripted number of them."""

    daemon_threads = True

    def __init__(self, events: list[tuple[int, str, dict[str, Any]]], cuts: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.events = events
        self.cuts = cuts  # per connection: how many events to send before dropping it
        self.seen_last_ids: list[str | None] = []


class _Handler(BaseHTTPRequestHandler):
    server: _StreamServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        last = self.headers.get("Last-Event-ID")
        self.server.seen_last_ids.append(last)
        after = int(last) if last else 0
        pending = [e for e in self.server.events if e[0] > after]
        cut = self.server.cuts.pop(0) if self.server.cuts else len(pending)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")  # no length: the body ends when we close
        self.end_headers()
        self.wfile.write(b": keep-alive\n\n")
        for event in pending[:cut]:
            self.wfile.write(_sse(event))
            self.wfile.flush()
        if cut < len(pending):
            # Half of the next message, then the connection drops mid-event.
            self.wfile.write(_sse(pending[cut])[:15])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def stream_server(request: pytest.FixtureRequest) -> Iterator[_StreamServer]:
    events, cuts = request.param
    server = _StreamServer(events, cuts)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


EVENTS = [
    (1, "status", {"status": "running", "at": NOW, "message": ""}),
    (2, "progress", {"global_step": 5, "max_steps": 20, "steps_per_sec": 10.0, "eta_s": 1.5}),
    (3, "loss", {"step": 5, "loss": 0.9}),
    (4, "log", {"message": "multi\nline", "at": NOW}),
    (5, "progress", {"global_step": 20, "max_steps": 20, "steps_per_sec": 12.0, "eta_s": 0.0}),
    (6, "end", JOB),
]


@pytest.mark.parametrize("stream_server", [(EVENTS, [2, 0, 3])], indirect=True)
def test_a_dropped_stream_resumes_after_the_last_event_id_and_loses_nothing(
    stream_server: _StreamServer,
) -> None:
    url = f"http://127.0.0.1:{stream_server.server_address[1]}"
    reconnects: list[int | None] = []
    options = FollowOptions(reconnect_delay_s=0.01, on_reconnect=reconnects.append)
    with Client(url, "k") as client:
        events = list(client.events("j1", options=options))
    assert [e.id for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[3].data["message"] == "multi\nline"
    assert events[-1].job().id == "j1"
    # First connection: no header; then each reconnect names the last event received
    # (the second connection sent nothing, so the third resumes from the same id).
    assert stream_server.seen_last_ids == [None, "2", "2", "5"]
    assert reconnects == [2, 2, 5]


@pytest.mark.parametrize("stream_server", [(EVENTS, [])], indirect=True)
def test_following_from_a_given_id_sends_it_and_gets_only_later_events(
    stream_server: _StreamServer,
) -> None:
    url = f"http://127.0.0.1:{stream_server.server_address[1]}"
    with Client(url, "k") as client:
        events = list(client.events("j1", last_event_id=4))
    assert [e.id for e in events] == [5, 6]
    assert stream_server.seen_last_ids == ["4"]


@pytest.mark.parametrize("stream_server", [(EVENTS[:3], [3, 3, 3, 3, 3])], indirect=True)
def test_a_stream_that_never_ends_gives_up_after_the_reconnect_budget(
    stream_server: _StreamServer,
) -> None:
    url = f"http://127.0.0.1:{stream_server.server_address[1]}"
    got: list[int | None] = []

    def follow() -> None:
        with Client(url, "k") as client:
            got.extend(event.id for event in client.events("j1", options=FAST))

    with pytest.raises(ApiUnreachable, match="kept failing"):
        follow()
    assert got == [1, 2, 3]
    assert len(stream_server.seen_last_ids) == FAST.max_reconnects + 1


# --- a suspended job ------------------------------------------------------------------------------


def _suspend_api(current: dict[str, Any], body: bytes, calls: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/jobs/j1/events":
            return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        if request.url.path == "/jobs/j1":
            return httpx.Response(200, json=current)
        if request.method == "POST":
            return httpx.Response(202, json=current)
        return httpx.Response(500)

    return httpx.MockTransport(handler)


def test_a_follower_stops_at_a_suspend_and_returns_the_suspended_job() -> None:
    """Nothing comes until someone resumes it: wait() returns rather than hangs."""
    suspended = {**JOB, "status": "suspended", "progress": {"global_step": 10, "max_steps": 20}}
    body = _sse(
        (1, "status", {"status": "running"}),
        (2, "status", {"status": "suspended", "message": "suspended at step 10"}),
    )
    calls: list[str] = []
    with Client("http://k2e.test", "k", transport=_suspend_api(suspended, body, calls)) as client:
        events = list(client.events("j1", options=FAST))
        job = client.wait("j1")
    assert [e.event for e in events] == ["status", "status", "end"]
    assert events[-1].id is None
    assert job.status == "suspended"
    assert job.progress.global_step == 10


def test_a_suspend_earlier_in_the_history_does_not_stop_the_follower() -> None:
    """Followed from the start, a job suspended once and resumed goes on to its end."""
    body = _sse(
        (1, "status", {"status": "suspended"}),
        (2, "status", {"status": "queued"}),
        (3, "status", {"status": "succeeded"}),
        (4, "end", JOB),
    )
    calls: list[str] = []
    with Client("http://k2e.test", "k", transport=_suspend_api(JOB, body, calls)) as client:
        job = client.wait("j1")
    assert job.status == "succeeded"
    assert calls.count("GET /jobs/j1") == 1  # asked once, at the suspended event


def test_the_client_suspends_and_resumes() -> None:
    calls: list[str] = []
    suspended = {**JOB, "status": "suspended"}
    with Client("http://k2e.test", "k", transport=_suspend_api(suspended, b"", calls)) as client:
        assert client.suspend("j1").status == "suspended"
        client.resume("j1")
    assert calls == ["POST /jobs/j1/suspend", "POST /jobs/j1/resume"]
