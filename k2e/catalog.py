"""The uploads each tenant owns: models and datasets, listed, found by id, deleted.

The files and their info.json live under the tenant's storage folder (k2e.storage);
this table is what lists, ownership and quota usage read.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Engine, delete, insert, select

from k2e.cursors import CursorCodec
from k2e.db import utcnow
from k2e.errors import Conflict, NotFound
from k2e.jobs.tallies import UPLOADED, tally
from k2e.schemas import DatasetInfo, JobStatus, ModelInfo
from k2e.tables import jobs, uploads
from k2e.tenancy.quota import lock_tenant, release_bytes
from k2e.tenancy.scope import Scope, tenant_of

Kind = Literal["model", "dataset"]
MAX_PAGE = 200
# Jobs that may still read their uploads: a suspended job does when it is resumed.
USING = (
    JobStatus.queued.value,
    JobStatus.running.value,
    JobStatus.cancelling.value,
    JobStatus.suspended.value,
)


class Catalog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cursors = CursorCodec(engine)

    def add(
        self, kind: Kind, tenant: str, info: ModelInfo | DatasetInfo, reservation: int | None = None
    ) -> None:
        """Keep an upload; its row takes over the bytes ``reservation`` held (in the same
        transaction, so they are never counted twice or not at all)."""
        with self.engine.begin() as conn:
            if reservation is not None:
                lock_tenant(conn, tenant)  # NotFound once the tenant is deleted
                release_bytes(conn, reservation)
            conn.execute(
                insert(uploads).values(
                    id=info.id,
                    kind=kind,
                    tenant=tenant,
                    created_at=utcnow(),
                    size=info.size,
                    info=info.model_dump(mode="json"),
                )
            )
            tally(conn, UPLOADED, kind, value=float(info.size))

    def owner(self, kind: Kind, upload_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(uploads.c.tenant).where(uploads.c.id == upload_id, uploads.c.kind == kind)
            ).scalar_one_or_none()

    def info(self, kind: Kind, upload_id: str, scope: Scope) -> dict:
        """An upload's info (ModelInfo or DatasetInfo as JSON); one outside ``scope``
        (another tenant's) is not found."""
        tenant = tenant_of(scope)
        query = select(uploads.c.info).where(uploads.c.id == upload_id, uploads.c.kind == kind)
        if tenant is not None:
            query = query.where(uploads.c.tenant == tenant)
        with self.engine.connect() as conn:
            info = conn.execute(query).scalar_one_or_none()
        if info is None:
            # Another tenant's id answers exactly as an unknown one.
            raise NotFound(f"no {kind} with id {upload_id[:64]!r}")
        return info

    def list(
        self, kind: Kind, scope: Scope, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[dict], str | None]:
        """The infos in ``scope``, newest first, and the cursor of the next page (None at
        the end)."""
        tenant = tenant_of(scope)
        limit = max(1, min(limit, MAX_PAGE))
        query = (
            select(uploads.c.seq, uploads.c.info)
            .where(uploads.c.kind == kind)
            .order_by(uploads.c.seq.desc())
            .limit(limit + 1)
        )
        if tenant is not None:
            query = query.where(uploads.c.tenant == tenant)
        if cursor is not None:
            query = query.where(uploads.c.seq < self.cursors.decode(kind, tenant, cursor))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        next_cursor = None
        if len(rows) > limit:
            next_cursor = self.cursors.encode(kind, tenant, rows[limit - 1].seq)
        return [row.info for row in rows[:limit]], next_cursor

    def remove(self, kind: Kind, upload_id: str, scope: Scope) -> None:
        """Forget an upload (one outside ``scope`` is not found); Conflict while a queued,
        running or suspended job uses it."""
        self.info(kind, upload_id, scope)
        with self.engine.begin() as conn:
            user = conn.execute(
                select(jobs.c.id)
                .where(jobs.c.status.in_(USING), jobs.c.uploads.contains(upload_id))
                .limit(1)
            ).scalar_one_or_none()
            if user is not None:
                raise Conflict(f"{kind} {upload_id} is used by job {user}, which has not ended")
            conn.execute(delete(uploads).where(uploads.c.id == upload_id))


def recorded_sha256(catalog: Catalog, model_ref: str | None, tenant: str) -> str | None:
    """The sha256 POST /models recorded for ``model_ref`` (a model id of ``tenant``), or
    None (a path, another tenant's id, an unknown one): the worker then inspects the file."""
    if model_ref is None:
        return None
    try:
        value = catalog.info("model", model_ref, Scope.of(tenant)).get("sha256")
    except NotFound:
        return None
    return value if isinstance(value, str) and value else None
