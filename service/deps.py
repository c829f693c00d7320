"""Dependencies the routes ask for, as ``Annotated`` aliases.

They do no I/O, so they are ``async def``: a sync dependency costs a trip through
the thread pool on every request (measured in bench/RESULTS.md).
"""

from typing import Annotated

from fastapi import Depends, Request

from k2e.settings import Settings
from service.backend import Backend


async def _backend(request: Request) -> Backend:
    return request.app.state.backend


async def _settings(request: Request) -> Settings:
    return request.app.state.backend.settings


BackendDep = Annotated[Backend, Depends(_backend)]
SettingsDep = Annotated[Settings, Depends(_settings)]
