"""What the client raises: a problem+json answer as an exception, or an unreachable API."""

from typing import Any

import httpx
from pydantic import BaseModel


class FieldProblem(BaseModel):
    """One broken rule: the field (``loc``) and the rule's words (``msg``)."""

    loc: list[Any] = []
    msg: str = ""

    @property
    def field(self) -> str:
        return ".".join(str(part) for part in self.loc)


class Problem(BaseModel):
    """An RFC 9457 problem as the API answers it."""

    type: str = "about:blank"
    title: str = ""
    status: int = 0
    detail: str = ""
    errors: list[FieldProblem] = []


class ClientError(Exception):
    """Base class of what the k2e client raises."""


class ApiUnreachable(ClientError):
    """The API did not answer (connection refused, DNS, timeout)."""


class ProblemError(ClientError):
    """The API answered 4xx or 5xx; the problem's fields are attributes."""

    def __init__(self, problem: Problem, response: httpx.Response | None = None) -> None:
        super().__init__(f"{problem.status} {problem.title}: {problem.detail}")
        self.problem = problem
        self.response = response

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def title(self) -> str:
        return self.problem.title

    @property
    def detail(self) -> str:
        return self.problem.detail

    @property
    def errors(self) -> list[FieldProblem]:
        return self.problem.errors

    @property
    def retry_after(self) -> str | None:
        return self.response.headers.get("retry-after") if self.response is not None else None


def problem_of(response: httpx.Response) -> ProblemError:
    """The exception for an error answer (its body already read); a body that is not
    problem+json (a proxy's HTML page) still gives the status and the start of the text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "status" in body:
        try:
            return ProblemError(Problem.model_validate(body), response)
        except ValueError:
            pass
    problem = Problem(
        title=response.reason_phrase or "HTTP error",
        status=response.status_code,
        detail=response.text[:500],
    )
    return ProblemError(problem, response)
