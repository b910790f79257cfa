"""A client for the sandbox's /_sandbox control endpoints, shared by the tests, the benchmarks and the demo."""

from __future__ import annotations

import json
from typing import Any

import urllib3


class SandboxControl:
    """Resets the sandbox tenant, turns its knobs and reads what it counted."""

    def __init__(self, url: str, env: dict[str, str] | None = None, pid: int = 0) -> None:
        self.url = url
        self.env = env or {}
        self.pid = pid
        self._http = urllib3.PoolManager()

    def reset(self, seed: str | dict[str, Any] = "default", **knobs: Any) -> None:
        self._call("POST", "reset", {"seed": seed, "knobs": knobs})

    def knobs(self, **knobs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "knobs", knobs)
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "stats")
        return result

    def mailboxes(self) -> list[dict[str, Any]]:
        """The tenant's truth: every mailbox with its type and cloud-management flag."""
        result: list[dict[str, Any]] = self._call("GET", "mailboxes")
        return result

    def licenses(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = self._call("GET", "licenses")
        return result

    def add_user(self, **spec: Any) -> str:
        """Create a user "on-premises"; it appears in the tenant after spec['syncDelaySeconds']."""
        result: dict[str, str] = self._call("POST", "users", spec)
        return result["id"]

    def set_consumed_units(self, sku: str, consumed: int) -> None:
        """Units of a SKU taken elsewhere in the tenant (or given back), as another admin would."""
        self._call("POST", "skus", {"sku": sku, "consumedUnits": consumed})

    def sync_mail(self, upn: str, mail: str) -> None:
        self._call("POST", "sync-mail", {"upn": upn, "mail": mail})

    def rotate_keys(self) -> None:
        self._call("POST", "rotate-keys", {})

    def authority_log(self) -> list[dict[str, Any]]:
        """Each PATCH of onPremisesSyncBehavior that changed a source of authority, in the order applied:
        {"kind": "groups"|"contacts", "id", "name", "isCloudManaged", "at"}."""
        result: list[dict[str, Any]] = self._call("GET", "authority-log")
        return result

    def directory_state(self) -> dict[str, Any]:
        """The tenant's groups (with their members' names) and contacts, with their sources of authority."""
        result: dict[str, Any] = self._call("GET", "directory-state")
        return result

    def resync(self) -> None:
        """Run a sync cycle now: every rolled-back group and contact is taken over by AD again."""
        self._call("POST", "resync", {})

    def _call(self, method: str, name: str, body: Any = None) -> Any:
        response = self._http.request(
            method,
            f"{self.url}/_sandbox/{name}",
            body=json.dumps(body) if body is not None else None,
            headers={"Content-Type": "application/json"},
            timeout=600,
        )
        if response.status != 200:
            raise RuntimeError(f"sandbox {name}: HTTP {response.status} {response.data[:300]!r}")
        return json.loads(response.data)

    def advance(self, seconds: float) -> float:
        """Move the tenant's clock on by `seconds` instead of sleeping: sync delays, mailbox creation, conversions
        and replication lags come due that much sooner. Reset sets it back to the wall clock."""
        result: dict[str, float] = self._call("POST", "advance", {"seconds": seconds})
        return result["skipped"]
