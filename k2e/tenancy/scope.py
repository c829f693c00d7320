"""Whose rows a read may see: one tenant's, or any tenant's.

Every store read that could cross tenants takes a ``Scope`` and has no default: a call
that forgets it fails (TypeError) instead of reading every tenant's rows. "Any tenant"
is spelled out (``ANY_TENANT``: admins, the worker, the reconciler); a member's reads
are ``Scope.of(its tenant)``, where another tenant's row is not found.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    """One tenant (``only``), or any tenant (``only`` None: ``ANY_TENANT``)."""

    only: str | None

    @staticmethod
    def of(tenant: str) -> Scope:
        """Only ``tenant``'s rows. None is refused: it must not widen the scope to every
        tenant by mistake."""
        if not isinstance(tenant, str):
            raise TypeError(f"a scope names a tenant, not {tenant!r}")
        return Scope(tenant)

    @property
    def is_any(self) -> bool:
        return self.only is None


ANY_TENANT = Scope(None)


def tenant_of(scope: Scope) -> str | None:
    """The tenant ``scope`` confines a query to, None for any tenant. Anything but a Scope
    (a bare tenant name, or None) is refused: TypeError."""
    if not isinstance(scope, Scope):
        raise TypeError(f"expected a Scope (Scope.of(tenant) or ANY_TENANT), not {scope!r}")
    return scope.only
