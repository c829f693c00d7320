"""A job that trains on a TF_CONFIG cluster: what the spec asks for (``Distribution``)
and what the job shows of its members (``Cluster``)."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# TF_CONFIG's task types, in the order a cluster's members are listed.
Role = Literal["chief", "worker", "ps", "evaluator"]
MemberState = Literal["placed", "ready", "running", "done", "failed", "lost"]

# Bounds of a spec's cluster; the queue's live slots and the tenant's share bound it further
# at submission.
MAX_CLUSTER_WORKERS = 64
MAX_PARAMETER_SERVERS = 16


class Distribution(BaseModel):
    """``ConvertRequest.distribution``: a TF_CONFIG cluster placed as a gang (every member
    holds a worker slot at once). Absent: the job trains on one worker."""

    model_config = ConfigDict(extra="forbid")

    workers: Annotated[int, Field(ge=1, le=MAX_CLUSTER_WORKERS)] = Field(
        default=1,
        description="Training workers, the chief among them (TF_CONFIG `chief` + `worker`).",
    )
    parameter_servers: Annotated[int, Field(ge=0, le=MAX_PARAMETER_SERVERS)] = Field(
        default=0, description="Parameter servers (TF_CONFIG `ps`)."
    )
    evaluator: bool = Field(
        default=False,
        description="One more member that evaluates the chief's checkpoints as they appear.",
    )
    strategy: str = Field(
        default="between_graph",
        max_length=64,
        description="How the workers share the model: `between_graph` (replicas with "
        "variables on the parameter servers).",
    )

    @property
    def size(self) -> int:
        """The worker slots the cluster holds."""
        return self.workers + self.parameter_servers + int(self.evaluator)

    def roles(self) -> list[tuple[Role, int]]:
        """Each member's (task type, index): the chief first, then workers, parameter
        servers, evaluator."""
        members: list[tuple[Role, int]] = [("chief", 0)]
        members += [("worker", i) for i in range(self.workers - 1)]
        members += [("ps", i) for i in range(self.parameter_servers)]
        if self.evaluator:
            members.append(("evaluator", 0))
        return members


class ClusterMember(BaseModel):
    role: Role
    index: int
    state: MemberState = Field(
        description="`placed`: its task is on its way to a worker; `ready`: it holds a slot "
        "and its port, waiting for the rest of the gang; `running`: training (or serving, "
        "for a parameter server); `done`, `failed`, `lost` (silent past its lease)."
    )
    node: str | None = Field(default=None, description="The node it runs on.")
    address: str | None = Field(default=None, description="`host:port` in its TF_CONFIG.")
    worker: str | None = Field(default=None, description="The worker process holding it.")
    beat_at: datetime | None = Field(default=None, description="Its last heartbeat.")


class Cluster(BaseModel):
    """``Job.cluster``: the shape asked for and the members of the newest placement."""

    gang: int = Field(description="How often the cluster has been placed (1 = the first time).")
    members: list[ClusterMember]
