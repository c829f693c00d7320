"""Dashboard sessions: an API key exchanged for a cookie, kept in the store.

The cookie carries a random secret; the store keeps its hash, the key it stands for, a
CSRF token and an expiry. A session resolves to the same ``Caller`` as its key, so it
sees exactly what the key sees, and it ends when it expires, when its user signs out,
or when its key is revoked.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, insert, select, update

from k2e.db import aware, utcnow
from k2e.tables import api_keys, sessions
from k2e.tenancy.bodies import Caller
from k2e.tenancy.keys import key_hash

# Cookie secrets are 256-bit URL-safe tokens; anything else is not looked up.
TOKEN_MAX_LENGTH = 128


@dataclass(frozen=True)
class Session:
    caller: Caller
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class OpenedSession:
    token: str
    session: Session


class SessionStore:
    def __init__(self, engine: Engine, ttl_s: float) -> None:
        self.engine = engine
        self.ttl = timedelta(seconds=ttl_s)

    def open(self, caller: Caller) -> OpenedSession:
        """A new session for an authenticated caller; the token goes into the cookie."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = utcnow()
        expires = now + self.ttl
        with self.engine.begin() as conn:
            # Expired sessions are swept here: sign-ins are rare, requests are not.
            conn.execute(delete(sessions).where(sessions.c.expires_at < now))
            conn.execute(
                insert(sessions).values(
                    token_hash=key_hash(token),
                    key_id=caller.key_id,
                    csrf_token=csrf,
                    created_at=now,
                    expires_at=expires,
                )
            )
        return OpenedSession(token, Session(caller, csrf, expires))

    def resolve(self, token: str) -> Session | None:
        """The live session a cookie names, or None (unknown, expired, signed out, or its
        key revoked)."""
        if not token or len(token) > TOKEN_MAX_LENGTH:
            return None
        query = (
            select(sessions, api_keys.c.tenant, api_keys.c.role, api_keys.c.revoked_at.label("kr"))
            .join(api_keys, api_keys.c.id == sessions.c.key_id)
            .where(sessions.c.token_hash == key_hash(token))
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None or row["revoked_at"] is not None or row["kr"] is not None:
            return None
        expires = aware(row["expires_at"])
        if expires is None or expires <= utcnow():
            return None
        caller = Caller(tenant=row["tenant"], role=row["role"], key_id=row["key_id"])
        return Session(caller, row["csrf_token"], expires)

    def revoke(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sessions)
                .where(sessions.c.token_hash == key_hash(token), sessions.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
