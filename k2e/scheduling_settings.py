"""The settings of the scheduler (k2e.jobs.dispatch): priority classes, the default
maximum class of a tenant, preemption's cool-down and the worker registry's heartbeat.
``Settings`` (k2e.settings) extends this; read them from there."""

import re
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CLASS_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
DEFAULT_CLASS = "normal"


def parse_classes(text: str) -> dict[str, int]:
    """``"low=100,normal=200,high=300"`` as ``{"low": 100, ...}``; ValueError names what
    is wrong (a class without a value, a repeated name, no ``normal``)."""
    classes: dict[str, int] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        name = name.strip()
        if not sep or not CLASS_NAME.match(name):
            raise ValueError(f"{item.strip()!r} is not a class as name=value (e.g. high=300)")
        if name in classes:
            raise ValueError(f"the class {name!r} is given twice")
        try:
            classes[name] = int(value.strip())
        except ValueError:
            raise ValueError(f"the class {name!r} has no integer value") from None
    if DEFAULT_CLASS not in classes:
        raise ValueError(f"the classes must include {DEFAULT_CLASS!r}, every job's default")
    return classes


class SchedulingSettings(BaseSettings):
    """How the scheduler orders waiting jobs and takes a worker back from a running one."""

    model_config = SettingsConfigDict(env_prefix="K2E_", extra="ignore")

    priority_classes: str = Field(
        default="low=100,normal=200,high=300",
        description="The priority classes a job may ask for (`priority` of `POST /convert`), "
        "comma-separated `name=value`: a higher value runs first and may preempt a lower "
        "one. Must include `normal`, every job's default; admins may add classes (e.g. "
        "`urgent=400`).",
    )
    quota_max_priority: str = Field(
        default="high",
        description="Default `max_priority`: the highest class a tenant's jobs may ask for "
        "(422 beyond); a class added above it is for the tenants an admin allows.",
    )
    preempt_cooldown_s: float = Field(
        default=300.0,
        ge=0,
        description="A job is asked to yield its worker to a waiting job at most once per "
        "this many seconds (counted from its last preemption), so that nothing thrashes.",
    )
    control_poll_s: float = Field(
        default=0.25,
        gt=0,
        le=3600,
        description="Seconds between a running job's reads of its own row for a cancel, "
        "suspend or preemption request, between its lease renewals (`K2E_HEARTBEAT_S`): "
        "how soon a job hears it must stop. One small read per running job each time. "
        "At or above `K2E_HEARTBEAT_S` the row is read only at the renewals.",
    )
    worker_heartbeat_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Seconds between a worker's heartbeats in the worker registry; a worker "
        "unseen for three of them is presumed gone and its job slots no longer count.",
    )

    @field_validator("priority_classes")
    @classmethod
    def _classes(cls, value: str) -> str:
        parse_classes(value)
        return value

    @model_validator(mode="after")
    def _max_is_a_class(self) -> Self:
        if self.quota_max_priority not in self.priority_values:
            raise ValueError(
                f"quota_max_priority {self.quota_max_priority!r} is not one of the priority "
                f"classes {sorted(self.priority_values)}"
            )
        return self

    @property
    def priority_values(self) -> dict[str, int]:
        """The priority classes by name."""
        return parse_classes(self.priority_classes)

    @property
    def worker_live_s(self) -> float:
        """A worker seen this recently counts as live: three heartbeats."""
        return 3 * self.worker_heartbeat_s
