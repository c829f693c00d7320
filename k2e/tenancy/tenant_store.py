"""Tenants and API keys in the store, what each tenant uses, and deleting a tenant.

The first start with no key in the store creates an admin key (``bootstrap``); every
other key is made by an admin through the API. Only a key's hash is kept.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from k2e.db import aware, utcnow
from k2e.errors import Conflict, NotFound
from k2e.schemas import JobStatus
from k2e.tables import (
    api_keys,
    events,
    jobs,
    sessions,
    tenants,
    upload_reservations,
    uploads,
    webhook_deliveries,
    webhooks,
)
from k2e.tenancy import keys, quota
from k2e.tenancy.bodies import (
    DEFAULT_TENANT,
    ApiKey,
    ApiKeyCreated,
    Caller,
    EffectiveQuotas,
    Quotas,
    Role,
    Tenant,
    Usage,
)
from k2e.tenancy.scope import Scope, tenant_of

log = logging.getLogger("k2e.tenancy")
# last_used_at is written at most this often per key: authentication stays a read.
LAST_USED_RESOLUTION = timedelta(seconds=60)
ACTIVE = (JobStatus.queued.value, JobStatus.running.value, JobStatus.cancelling.value)


class TenantStore:
    def __init__(self, engine: Engine, default_quotas: EffectiveQuotas) -> None:
        self.engine = engine
        self.default_quotas = default_quotas

    # tenants -------------------------------------------------------------

    def create_tenant(self, name: str, quotas: Quotas | None = None) -> Tenant:
        overrides = (quotas or Quotas()).model_dump(exclude_none=True)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(tenants).values(name=name, created_at=utcnow(), quotas=overrides)
                )
        except IntegrityError:
            raise Conflict(f"a tenant named {name!r} already exists") from None
        return self.get_tenant(name)

    def ensure_tenant(self, name: str) -> None:
        try:
            self.create_tenant(name)
        except Conflict:
            pass

    def get_tenant(self, name: str, with_usage: bool = False) -> Tenant:
        with self.engine.connect() as conn:
            row = conn.execute(select(tenants).where(tenants.c.name == name)).mappings().first()
        if row is None:
            raise NotFound(f"no tenant named {name!r}")
        return self._tenant(row, with_usage)

    def list_tenants(self) -> list[Tenant]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(tenants).order_by(tenants.c.seq)).mappings().all()
        return [self._tenant(row, with_usage=True) for row in rows]

    def quotas(self, name: str) -> EffectiveQuotas:
        with self.engine.connect() as conn:
            overrides = conn.execute(
                select(tenants.c.quotas).where(tenants.c.name == name)
            ).scalar_one_or_none()
        return self._effective(overrides or {})

    def _effective(self, overrides: dict[str, Any]) -> EffectiveQuotas:
        # Validated: a stored share is a plain object.
        return EffectiveQuotas.model_validate({**self.default_quotas.model_dump(), **overrides})

    def _tenant(self, row: RowMapping, with_usage: bool) -> Tenant:
        return Tenant(
            name=row["name"],
            created_at=aware(row["created_at"]),
            quotas=self._effective(row["quotas"] or {}),
            usage=self.usage(row["name"]) if with_usage else None,
        )

    def usage(self, tenant: str) -> Usage:
        """Jobs queued and running, bytes of uploads and of finished jobs' model_dirs."""
        with self.engine.connect() as conn:
            counts: dict[str, int] = dict(
                conn.execute(
                    select(jobs.c.status, func.count())
                    .where(jobs.c.tenant == tenant, jobs.c.status.in_(ACTIVE))
                    .group_by(jobs.c.status)
                ).all()
            )
            upload_bytes = conn.execute(
                select(func.coalesce(func.sum(uploads.c.size), 0)).where(uploads.c.tenant == tenant)
            ).scalar_one()
            dir_bytes = conn.execute(
                select(func.coalesce(func.sum(jobs.c.disk_bytes), 0)).where(jobs.c.tenant == tenant)
            ).scalar_one()
        return Usage(
            queued_jobs=counts.get(JobStatus.queued.value, 0),
            running_jobs=counts.get(JobStatus.running.value, 0)
            + counts.get(JobStatus.cancelling.value, 0),
            upload_bytes=int(upload_bytes),
            model_dir_bytes=int(dir_bytes),
        )

    def bytes_in_use(self, tenant: str) -> int:
        """What the storage quota counts now: usage plus uploads being inspected."""
        with self.engine.connect() as conn:
            return quota.bytes_in_use(conn, tenant, utcnow())

    def reserve_bytes(self, tenant: str, size: int, field: str) -> int:
        """Hold ``size`` bytes of the tenant's storage quota for an upload being inspected
        (UploadTooLarge when they do not fit); ``Catalog.add`` or ``release_bytes`` ends it."""
        return quota.reserve_bytes(self.engine, tenant, size, self.quotas(tenant).max_bytes, field)

    def release_bytes(self, reservation: int) -> None:
        with self.engine.begin() as conn:
            quota.release_bytes(conn, reservation)

    def delete_tenant(self, name: str) -> list[str]:
        """Forget a tenant and every row it owns (keys and their sessions, uploads, jobs
        and their events, webhooks and their deliveries); returns its keys' ids. Conflict
        while it has a job queued or running. Its files are the caller's to remove."""
        with self.engine.begin() as conn:
            quota.lock_tenant(conn, name)  # NotFound; and no upload or job starts meanwhile
            active = quota.active_jobs(conn, name)
            if active:
                raise Conflict(
                    f"tenant {name!r} has {active} jobs queued or running: cancel them and "
                    "wait for them to end before deleting it"
                )
            key_ids = list(
                conn.execute(select(api_keys.c.id).where(api_keys.c.tenant == name)).scalars()
            )
            its_jobs = select(jobs.c.id).where(jobs.c.tenant == name)
            conn.execute(delete(sessions).where(sessions.c.key_id.in_(key_ids)))
            conn.execute(delete(api_keys).where(api_keys.c.tenant == name))
            conn.execute(delete(events).where(events.c.job_id.in_(its_jobs)))
            conn.execute(delete(jobs).where(jobs.c.tenant == name))
            conn.execute(delete(uploads).where(uploads.c.tenant == name))
            conn.execute(delete(upload_reservations).where(upload_reservations.c.tenant == name))
            conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.tenant == name))
            conn.execute(delete(webhooks).where(webhooks.c.tenant == name))
            conn.execute(delete(tenants).where(tenants.c.name == name))
        log.info("deleted tenant %s and its %d keys", name, len(key_ids))
        return key_ids

    # keys ----------------------------------------------------------------

    def create_key(
        self, tenant: str, name: str, role: Role, secret: str | None = None
    ) -> ApiKeyCreated:
        """A new key for an existing tenant; ``secret`` provisions a given key instead."""
        self.get_tenant(tenant)
        key = secret if secret is not None else keys.new_key()
        now = utcnow()
        row = {
            "id": keys.key_id(key),
            "key_hash": keys.key_hash(key),
            "tenant": tenant,
            "role": role,
            "name": name,
            "created_at": now,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(api_keys).values(**row))
        except IntegrityError:
            raise Conflict("that key already exists") from None
        return ApiKeyCreated(
            id=row["id"], tenant=tenant, role=role, name=name, created_at=now, key=key
        )

    def list_keys(self, scope: Scope) -> list[ApiKey]:
        """The keys of ``scope``'s tenant (``ANY_TENANT``: every key), oldest first."""
        tenant = tenant_of(scope)
        query = select(api_keys).order_by(api_keys.c.seq)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_key(row) for row in rows]

    def revoke_key(self, key_id: str) -> ApiKey:
        with self.engine.begin() as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        if row is None:
            raise NotFound(f"no key with id {key_id!r}")
        return _key(row)

    def authenticate(self, key: str) -> Caller | None:
        """The caller a key stands for, or None (unknown, wrong or revoked key)."""
        if len(key) < keys.MIN_LENGTH or len(key) > 512:
            return None
        key_id = keys.key_id(key)
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        if row is None or not keys.matches(key, row["key_hash"]) or row["revoked_at"]:
            return None
        now = utcnow()
        last = aware(row["last_used_at"])
        if last is None or now - last > LAST_USED_RESOLUTION:
            with self.engine.begin() as conn:
                conn.execute(
                    update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now)
                )
        return Caller(tenant=row["tenant"], role=row["role"], key_id=key_id)

    def bootstrap(self, admin_key: str | None) -> str | None:
        """Make sure an admin can sign in; returns a key it generated (None otherwise).

        With ``admin_key`` (K2E_ADMIN_KEY), that key is provisioned as an admin of the
        default tenant unless the store knows it already. Without, a store holding no key
        gets a new admin key.
        """
        self.ensure_tenant(DEFAULT_TENANT)
        if admin_key is not None:
            try:
                self.create_key(DEFAULT_TENANT, "admin (K2E_ADMIN_KEY)", "admin", admin_key)
            except Conflict:
                pass  # provisioned by an earlier start
            return None
        with self.engine.connect() as conn:
            if conn.execute(select(func.count()).select_from(api_keys)).scalar_one():
                return None
        created = self.create_key(DEFAULT_TENANT, "admin (first start)", "admin")
        return created.key


def _key(row: RowMapping) -> ApiKey:
    return ApiKey(
        id=row["id"],
        tenant=row["tenant"],
        role=row["role"],
        name=row["name"],
        created_at=aware(row["created_at"]),
        last_used_at=aware(row["last_used_at"]),
        revoked_at=aware(row["revoked_at"]),
    )
