"""API keys for the suite: every test app is provisioned with TEST_ADMIN_KEY (set as
K2E_ADMIN_KEY by tests/conftest.py, so that child processes inherit it too)."""

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from k2e.tenancy.bodies import DEFAULT_TENANT

TEST_ADMIN_KEY = "k2e_suite-admin-key-not-a-secret-0123456789"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ADMIN = bearer(TEST_ADMIN_KEY)


def admin_client(app: FastAPI, **kwargs: Any) -> TestClient:
    """A TestClient that signs every request with the suite's admin key."""
    return TestClient(app, headers=ADMIN, **kwargs)


def new_tenant(client: TestClient, name: str, **quotas: int) -> str:
    """Create a tenant (as admin) and return a member key of it."""
    body: dict[str, Any] = {"name": name}
    if quotas:
        body["quotas"] = quotas
    created = client.post("/tenants", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    key = client.post(f"/tenants/{name}/keys", json={"name": f"{name} member"}, headers=ADMIN)
    assert key.status_code == 201, key.text
    return key.json()["key"]


def admin_files(storage_root: Path) -> Path:
    """The folder of the admin key's tenant (the default tenant) under the storage root:
    what its uploads and jobs use, and where its relative paths resolve."""
    return storage_root / "tenants" / DEFAULT_TENANT
