"""Tenants, API keys and quotas as the API shows them."""

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from k2e.errors import FieldError, InvalidInput

Role = Literal["admin", "member"]
DEFAULT_TENANT = "default"
# Tenant names appear in folder names and in lock keys: a plain lowercase name.
TENANT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TenantName = Annotated[str, Field(pattern=TENANT_NAME_PATTERN)]


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's tenant and role."""

    tenant: str
    role: Role
    key_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _not_a_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a number is expected, not true or false")
    return value


# Integers (1.0 counts, as in JSON Schema), never booleans, within bounds.
_NoBool = BeforeValidator(_not_a_bool)
JobCount = Annotated[int, Field(ge=1, le=1_000_000), _NoBool]
ByteCount = Annotated[int, Field(ge=0, le=10**18), _NoBool]
PositiveInt32 = Annotated[int, Field(ge=1, le=2**31 - 1), _NoBool]


SlotCount = Annotated[int, Field(ge=0, le=1_000_000), _NoBool]


class Share(BaseModel):
    """A tenant's guaranteed worker slots in each queue."""

    model_config = ConfigDict(extra="forbid")

    cpu: SlotCount = Field(default=0, description="Job slots of the `cpu` queue.")
    gpu: SlotCount = Field(default=0, description="Job slots of the `gpu` queue.")

    def of(self, queue: str) -> int:
        """The share of ``queue`` (0 for a queue it does not name)."""
        return int(getattr(self, queue, 0)) if queue in ("cpu", "gpu") else 0


class Quotas(BaseModel):
    """Per-tenant limits. In a request, an absent field takes the server's default."""

    model_config = ConfigDict(extra="forbid")

    # Jobs queued + running at once; beyond it POST /convert answers 429.
    max_active_jobs: JobCount | None = None
    # Bytes of uploads and model_dirs; beyond it uploads answer 413.
    max_bytes: ByteCount | None = None
    # The largest train.max_steps a job may ask for.
    max_steps: PositiveInt32 | None = None
    # A job's run time limit when its timeout_s is absent or larger.
    max_run_s: PositiveInt32 | None = None
    max_priority: str | None = Field(
        default=None,
        max_length=32,
        description="The highest priority class (K2E_PRIORITY_CLASSES) the tenant's jobs "
        "may ask for; a submission above it is refused (422 naming `priority`).",
    )
    share: Share | None = Field(
        default=None,
        description="Guaranteed job slots of each queue: the tenant's waiting jobs go "
        "first while it holds fewer, and a slot another tenant borrowed is taken back "
        "(that job is preempted at its next checkpoint) when the tenant needs it.",
    )
    borrow: bool | None = Field(
        default=None,
        strict=True,
        description="Whether the tenant's jobs may run on slots beyond its share while "
        "they are idle (they are taken back first when their owner needs them).",
    )


def check_quotas(quotas: Quotas | None, classes: dict[str, int]) -> None:
    """InvalidInput (422) when ``max_priority`` names no priority class of the server."""
    if quotas is None or quotas.max_priority is None or quotas.max_priority in classes:
        return
    names = ", ".join(sorted(classes, key=classes.__getitem__))
    msg = f"max_priority {quotas.max_priority!r} is not a priority class of this server ({names})"
    raise InvalidInput(msg, [FieldError(("quotas", "max_priority"), msg)])


class EffectiveQuotas(BaseModel):
    max_active_jobs: int
    max_bytes: int
    max_steps: int
    max_run_s: int
    max_priority: str = "high"
    share: Share = Field(default_factory=Share)
    borrow: bool = True


class Usage(BaseModel):
    queued_jobs: int
    running_jobs: int
    upload_bytes: int
    model_dir_bytes: int

    @property
    def active_jobs(self) -> int:
        return self.queued_jobs + self.running_jobs

    @property
    def bytes(self) -> int:
        return self.upload_bytes + self.model_dir_bytes


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: TenantName
    quotas: Quotas | None = None


class Tenant(BaseModel):
    name: str
    created_at: datetime
    quotas: EffectiveQuotas
    usage: Usage | None = None


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, Field(min_length=1, max_length=128)]
    role: Role = "member"


class ApiKey(BaseModel):
    """A key as listed: never its secret."""

    id: str
    tenant: str
    role: Role
    name: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKey):
    """The answer to creating a key: the only time the secret is shown."""

    key: str
