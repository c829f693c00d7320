"""Every request's ``X-Request-ID`` and, with tracing on, its span.

The id is the client's when it is short and plain (k2e.logs.REQUEST_ID), else a new one;
it is on every response, on every line the request logs, and, for a submission, stored
with the job so that its worker's lines carry it too (service/submission.py). An ASGI
middleware of its own, outside the others, so that the fast path's answers
(service/fastpath.py) and problem responses carry it as well.
"""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from k2e import logs, tracing

HEADER = b"x-request-id"


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == HEADER), None)
        request_id = logs.request_id_from(given.decode("latin-1") if given else None)
        header = (HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        method = scope["method"]
        with (
            logs.bound(request_id=request_id),
            tracing.span(method, method=method, request_id=request_id) as span,
        ):
            await self.app(scope, receive, send_with_id)
            route = scope.get("route")
            if span is not None and route is not None:
                # The route's template, not the path: one span name per operation.
                span.update_name(f"{method} {getattr(route, 'path', '')}")
