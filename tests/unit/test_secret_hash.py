"""Stores written by an earlier k2e keep working: an API key and a session cookie token
whose hashes were stored as the SHA-256 (hex) of their UTF-8 bytes still sign in."""

from datetime import timedelta
from pathlib import Path

import sqlalchemy

from k2e.db import utcnow
from k2e.tables import api_keys, metadata, sessions
from k2e.tenancy.bodies import Caller
from k2e.tenancy.keys import key_hash, key_id, matches
from k2e.tenancy.sessions import SessionStore

KEY = "k2e_abc"
KEY_SHA256 = "c96cb2f6a18bd6258990981ae56e9c876e329930308c5c3340dbb96e39becb51"
# A lone surrogate: the hash keeps it rather than failing on it.
TOKEN = "tok\udcff"
TOKEN_SHA256 = "b81df5477591ba1aa241a7316674a770b6c3fd7499377a600d1d7a9ae0ecbd9e"


def test_key_hashes_and_ids_are_the_stored_ones() -> None:
    assert key_hash(KEY) == KEY_SHA256
    assert key_id(KEY) == KEY_SHA256[:16]
    assert matches(KEY, KEY_SHA256)
    assert key_hash(TOKEN) == TOKEN_SHA256


def test_a_session_stored_earlier_still_resolves_and_revokes(tmp_path: Path) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'k2e.db'}")
    metadata.create_all(engine)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.insert(api_keys).values(
                id=KEY_SHA256[:16],
                key_hash=KEY_SHA256,
                tenant="acme",
                role="member",
                name="old",
                created_at=now,
            )
        )
        conn.execute(
            sqlalchemy.insert(sessions).values(
                token_hash=TOKEN_SHA256,
                key_id=KEY_SHA256[:16],
                csrf_token="csrf",
                created_at=now,
                expires_at=now + timedelta(hours=1),
            )
        )
    store = SessionStore(engine, ttl_s=3600)
    session = store.resolve(TOKEN)
    assert session is not None
    assert session.caller == Caller(tenant="acme", role="member", key_id=KEY_SHA256[:16])
    store.revoke(TOKEN)
    assert store.resolve(TOKEN) is None
