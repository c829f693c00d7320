"""Dependencies the routes ask for, as ``Annotated`` aliases."""

from typing import Annotated

from fastapi import Depends, Request

from k2e.jobstore import JobStore
from k2e.settings import Settings
from k2e.storage import Storage
from service.broker import TaskSender


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _store(request: Request) -> JobStore:
    return request.app.state.store


def _storage(request: Request) -> Storage:
    return request.app.state.storage


def _sender(request: Request) -> TaskSender:
    return request.app.state.sender


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[JobStore, Depends(_store)]
StorageDep = Annotated[Storage, Depends(_storage)]
SenderDep = Annotated[TaskSender, Depends(_sender)]
