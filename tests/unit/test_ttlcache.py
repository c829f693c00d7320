"""The API's credential caches (service/ttlcache.py, service/auth.py): a "not found" is
cached as an answer, an entry lives ttl_s, and the forget paths drop only what they name."""

from datetime import UTC, datetime

from k2e.tenancy.bodies import Caller
from k2e.tenancy.sessions import Session
from service import ttlcache
from service.auth import KeyCache, SessionCache

ALICE = Caller(tenant="acme", role="member", key_id="a" * 16)
BOB = Caller(tenant="acme", role="admin", key_id="b" * 16)


def _session(caller: Caller) -> Session:
    return Session(caller, "csrf", datetime(2100, 1, 1, tzinfo=UTC))


def test_found_and_not_found_answers_are_cached_until_they_expire() -> None:
    cache = KeyCache(60)
    assert cache.get("h1") == (False, None)
    cache.put("h1", ALICE)
    cache.put("h2", None)
    assert cache.get("h1") == (True, ALICE)
    assert cache.get("h2") == (True, None)
    expired = KeyCache(-1)
    expired.put("h1", ALICE)
    assert expired.get("h1") == (False, None)


def test_forgetting_a_key_drops_only_its_callers() -> None:
    cache = KeyCache(60)
    cache.put("h1", ALICE)
    cache.put("h2", BOB)
    cache.put("h3", None)
    cache.forget_key(ALICE.key_id)
    assert cache.get("h1") == (False, None)
    assert cache.get("h2") == (True, BOB)
    assert cache.get("h3") == (True, None)


def test_sign_out_and_deleted_keys_drop_their_sessions() -> None:
    cache = SessionCache(60)
    cache.put("t1", _session(ALICE))
    cache.put("t2", _session(BOB))
    cache.put("t3", None)
    cache.forget("t2")
    assert cache.get("t2") == (False, None)
    cache.put("t2", _session(BOB))
    cache.forget_keys({ALICE.key_id, "c" * 16})
    assert cache.get("t1") == (False, None)
    assert cache.get("t2") == (True, _session(BOB))
    assert cache.get("t3") == (True, None)


def test_a_full_cache_starts_again() -> None:
    cache = KeyCache(60)
    for i in range(ttlcache.MAX_ENTRIES):
        cache.put(f"h{i}", ALICE)
    assert cache.get("h0") == (True, ALICE)
    cache.put("new", BOB)
    assert cache.get("h0") == (False, None)
    assert cache.get("new") == (True, BOB)
