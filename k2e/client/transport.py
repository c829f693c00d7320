"""The HTTP layer under the client: one httpx.Client, the key, and errors as exceptions."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from k2e.client.exceptions import ApiUnreachable, problem_of
from k2e.version import __version__

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# Uploads are inspected before the API answers (up to K2E_INSPECT_TIMEOUT_S, 30 s): reads
# wait longer than that.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


class Session:
    """Sends requests with the key and turns failures into the client's exceptions."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        headers["User-Agent"] = f"k2e-client/{__version__}"
        self.url = url.rstrip("/")
        if http is None:
            http = httpx.Client(
                base_url=self.url, headers=headers, timeout=timeout, transport=transport
            )
        else:
            http.headers.update(headers)
        self.http = http

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"cannot reach the k2e API at {self.url}: {exc}") from exc
        if response.is_error:
            raise problem_of(response)
        return response

    def get_as(self, model: type[M], path: str, **kwargs: Any) -> M:
        return model.model_validate(self.request("GET", path, **kwargs).json())

    def call_as(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(self.request(method, path, **kwargs).json())

    def get_list(self, item: type[T], path: str, **kwargs: Any) -> list[T]:
        return TypeAdapter(list[item]).validate_python(  # type: ignore[valid-type]
            self.request("GET", path, **kwargs).json()
        )

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed answer; an error answer is read whole and raised."""
        try:
            with self.http.stream(method, path, **kwargs) as response:
                if response.is_error:
                    response.read()
                    raise problem_of(response)
                yield response
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"cannot reach the k2e API at {self.url}: {exc}") from exc
