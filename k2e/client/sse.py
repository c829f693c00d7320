"""Server-sent events (the WHATWG ``text/event-stream`` format), parsed line by line."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched message. ``id`` is the last event id seen on the stream so far (the
    format carries it over to later messages that name none)."""

    event: str
    data: str
    id: str | None = None
    retry_ms: int | None = None


class SSEDecoder:
    """Feeds on lines (without their line ending); a blank line dispatches a message."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None
        self._retry: int | None = None
        self._saw_field = False

    @property
    def last_event_id(self) -> str | None:
        return self._last_id

    @property
    def retry_ms(self) -> int | None:
        """The reconnection time the server last asked for."""
        return self._retry

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            # The format ignores an id holding NUL: it could never be sent back as a header.
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        else:
            return None  # unknown fields are ignored
        self._saw_field = True
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        saw_field, data = self._saw_field, self._data
        event = self._event or "message"
        self._event, self._data, self._saw_field = "", [], False
        if not saw_field or not data:
            # No data: nothing to dispatch (an `id:` alone still moved the last event id).
            return None
        return ServerSentEvent(event, "\n".join(data), self._last_id, self._retry)


def iter_lines(chunks: Iterable[str]) -> Iterator[str]:
    """Lines of a text stream split on CRLF, LF or CR, whatever the chunk boundaries."""
    pending = ""
    for chunk in chunks:
        pending += chunk
        while True:
            cut = _line_end(pending)
            if cut is None:
                break
            end, width = cut
            # A CR at the very end of a chunk may be the first half of a CRLF.
            if pending[end] == "\r" and end + 1 == len(pending):
                break
            yield pending[:end]
            pending = pending[end + width :]
    if pending:
        yield pending.rstrip("\r")


def _line_end(text: str) -> tuple[int, int] | None:
    for index, char in enumerate(text):
        if char == "\n":
            return index, 1
        if char == "\r":
            return index, 2 if text[index + 1 : index + 2] == "\n" else 1
    return None


def iter_events(
    chunks: Iterable[str], decoder: SSEDecoder | None = None
) -> Iterator[ServerSentEvent]:
    """Messages of a text stream; pass a ``decoder`` to read its last event id afterwards."""
    decoder = decoder or SSEDecoder()
    for line in iter_lines(chunks):
        event = decoder.feed(line)
        if event is not None:
            yield event
