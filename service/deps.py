"""Dependencies the routes ask for, as ``Annotated`` aliases.

They do no I/O, so they are ``async def``: a sync dependency costs a trip through
the thread pool on every request (measured in bench/RESULTS.md).
"""

from typing import Annotated

from fastapi import Depends, Request

from k2e.jobstore import JobStore
from k2e.settings import Settings
from k2e.storage import Storage
from service.broker import TaskSender


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _store(request: Request) -> JobStore:
    return request.app.state.store


async def _storage(request: Request) -> Storage:
    return request.app.state.storage


async def _sender(request: Request) -> TaskSender:
    return request.app.state.sender


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[JobStore, Depends(_store)]
StorageDep = Annotated[Storage, Depends(_storage)]
SenderDep = Annotated[TaskSender, Depends(_sender)]
