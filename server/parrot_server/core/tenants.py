"""Who may call the server, and what each caller owns.

A key names a `Principal`: a tenant (whose sessions, cache namespace and quotas it uses) and
whether it may use the operator routes. Tenants never see each other's sessions, and their
prompts go to separate prefix-cache namespaces unless the operator gives them the same one.
Pure Python, read once at startup.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LimitExceededError

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DEFAULT_PUBLIC_PATHS = ("/health",)


@dataclass(frozen=True)
class Tenant:
    name: str
    # Prefix-cache namespace; None is the default one (the single-key and open servers').
    cache_namespace: str | None = None
    max_sessions: int | None = None  # live sessions of this tenant (then 429); None: no cap
    max_pending: int | None = None  # unfinished native calls + /v1 and /generate requests


DEFAULT_TENANT = Tenant("default")


@dataclass(frozen=True)
class Principal:
    tenant: Tenant
    admin: bool  # may use the operator routes and act on every tenant's engine requests


OPEN = Principal(DEFAULT_TENANT, admin=True)  # a server without keys: everyone is this


def cache_key(namespace: str | None, extra_key: str | None) -> str | None:
    """The engine's cache namespace for a tenant's namespace and a request's own `extra_key`
    (SGLang's field): no pair of distinct inputs gives the same key."""
    if namespace is None and extra_key is None:
        return None
    return json.dumps([namespace, extra_key])


class TenantConfigError(ValueError):
    """The tenants file or the key flags are unusable (the message says which entry)."""


@dataclass(frozen=True)
class KeyTable:
    """Keys -> principals. Empty: the server is open (no key asked for)."""

    principals: dict[str, Principal] = field(default_factory=dict)
    public_paths: tuple[str, ...] = DEFAULT_PUBLIC_PATHS

    @property
    def open(self) -> bool:
        return not self.principals

    def lookup(self, authorization: str | None) -> Principal | None:
        """The principal of an `Authorization: Bearer <key>` header; None if none matches.
        Every key is compared in constant time, so timing does not tell which one was near."""
        given = (authorization or "").removeprefix("Bearer ").strip().encode()
        found = None
        for key, principal in self.principals.items():
            if hmac.compare_digest(given, key.encode()) and found is None:
                found = principal
        return found

    @classmethod
    def build(
        cls,
        api_key: str | None = None,
        admin_key: str | None = None,
        tenants_file: str | Path | None = None,
        public_paths: tuple[str, ...] = DEFAULT_PUBLIC_PATHS,
    ) -> KeyTable:
        """`api_key`: one key for the default tenant (also the operator's when there is no
        `admin_key`); `tenants_file`: TOML, one table per tenant (see docs/deploy.md)."""
        table: dict[str, Principal] = {}
        if api_key:
            table[api_key] = Principal(DEFAULT_TENANT, admin=admin_key is None)
        if tenants_file is not None:
            for key, tenant in _read_tenants(Path(tenants_file)).items():
                if key in table:
                    raise TenantConfigError(f"{tenants_file}: a key is given twice")
                table[key] = Principal(tenant, admin=False)
        if admin_key:
            if admin_key in table:
                raise TenantConfigError("the admin key is also a tenant's key")
            table[admin_key] = Principal(DEFAULT_TENANT, admin=True)
        for path in public_paths:
            if not path.startswith("/"):
                raise TenantConfigError(f"public path {path!r} must start with /")
        return cls(table, tuple(public_paths))


def _read_tenants(path: Path) -> dict[str, Tenant]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TenantConfigError(f"cannot read tenants file {path}: {exc}") from None
    entries = data.get("tenants")
    if not isinstance(entries, dict) or not entries:
        raise TenantConfigError(f"{path}: no [tenants.NAME] tables")
    out: dict[str, Tenant] = {}
    for name, entry in entries.items():
        where = f"{path}: [tenants.{name}]"
        if not _NAME.fullmatch(name) or name == DEFAULT_TENANT.name:
            raise TenantConfigError(f"{where}: names are 1-64 of A-Z a-z 0-9 _ . - (not default)")
        if not isinstance(entry, dict):
            raise TenantConfigError(f"{where}: must be a table")
        unknown = set(entry) - {"keys", "cache", "max_sessions", "max_pending"}
        if unknown:
            raise TenantConfigError(f"{where}: unknown keys {sorted(unknown)}")
        keys = entry.get("keys")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise TenantConfigError(f"{where}: keys must be a non-empty list of strings")
        if any(len(k) < 16 for k in keys):
            raise TenantConfigError(f"{where}: keys must be at least 16 characters")
        cache = entry.get("cache", f"tenant:{name}")
        if not isinstance(cache, str) or not cache:
            raise TenantConfigError(f"{where}: cache must be a non-empty string")
        tenant = Tenant(
            name,
            cache,
            _limit(where, "max_sessions", entry.get("max_sessions")),
            _limit(where, "max_pending", entry.get("max_pending")),
        )
        for key in keys:
            if key in out:
                raise TenantConfigError(f"{where}: a key is given twice")
            out[key] = tenant
    return out


def _limit(where: str, name: str, value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TenantConfigError(f"{where}: {name} must be an integer >= 1")
    return value


def new_key() -> str:
    """A random key (for the engine processes a server starts)."""
    return secrets.token_urlsafe(32)


class Slot:
    """One request counted against its tenant's `max_pending` until `release` (idempotent)."""

    def __init__(self, counts: Counter[str], name: str) -> None:
        self._counts, self._name, self._held = counts, name, True
        counts[name] += 1

    def release(self) -> None:
        if self._held:
            self._held = False
            self._counts[self._name] -= 1


class TenantLoad:
    """What each tenant has pending, for `Tenant.max_pending`: its unfinished native calls
    (`pending_calls`, counted by the session manager) plus its requests in flight outside
    sessions (`/v1`, `/generate`), which hold a `Slot`."""

    def __init__(self, pending_calls: Callable[[Tenant], int] = lambda _: 0) -> None:
        self.pending_calls = pending_calls
        self.requests: Counter[str] = Counter()

    def admit(self, tenant: Tenant, n: int = 1) -> None:
        """Raises `LimitExceededError` (a 429) when `n` more would pass the tenant's cap."""
        cap = tenant.max_pending
        if cap is None:
            return
        pending = self.pending_calls(tenant) + self.requests[tenant.name]
        if pending + n > cap:
            raise LimitExceededError(
                f"tenant {tenant.name!r} has {pending} calls and requests pending, at most "
                f"{cap}; retry when some have finished"
            )

    def slot(self, tenant: Tenant) -> Slot:
        self.admit(tenant)
        return Slot(self.requests, tenant.name)
