"""Microsoft Graph client for the chain: users, usageLocation, subscribed SKUs, licenses.

Licensing is direct (not group-based): a license inherited from a group cannot be removed from the
user, which the shared-mailbox flow needs (docs/wire-protocols.md, "Licenses").
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shared.auth import GRAPH_APP_ROLES
from shared.errors import (
    ExoprovError,
    LicenseInheritedError,
    NoLicensesError,
    PermanentError,
    PermissionDeniedError,
    UsageLocationError,
)
from shared.http import Response, ServiceClient, status_error

__all__ = ["USER_SELECT", "error_message", "GraphClient", "GraphUser", "map_graph_error", "Sku"]

USER_SELECT = (
    "id",
    "userPrincipalName",
    "mail",
    "usageLocation",
    "accountEnabled",
    "onPremisesSyncEnabled",
    "assignedLicenses",
    "licenseAssignmentStates",
)
SKU_CACHE_SECONDS = 300.0
EXCHANGE_PLAN_PREFIX = "EXCHANGE_S_"  # EXCHANGE_S_STANDARD, _ENTERPRISE, _DESKLESS; not _FOUNDATION (Company)


@dataclass(frozen=True)
class GraphUser:
    """The properties of an Entra user the chain needs."""

    id: str
    user_principal_name: str
    mail: str | None
    usage_location: str | None
    dir_synced: bool
    licenses: dict[str, str | None]  # skuId -> the group it is inherited from, or None when direct

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GraphUser:
        licenses: dict[str, str | None] = {
            str(item["skuId"]).lower(): None for item in data.get("assignedLicenses") or [] if item.get("skuId")
        }
        for state in data.get("licenseAssignmentStates") or []:
            sku = str(state.get("skuId", "")).lower()
            if sku in licenses and state.get("assignedByGroup"):
                licenses[sku] = str(state["assignedByGroup"])
        return cls(
            id=str(data["id"]),
            user_principal_name=str(data.get("userPrincipalName", "")),
            mail=data.get("mail") or None,
            usage_location=data.get("usageLocation") or None,
            dir_synced=data.get("onPremisesSyncEnabled") is True,
            licenses=licenses,
        )


@dataclass(frozen=True)
class Sku:
    """A subscribed SKU: its ids, free units and the plans to disable for an Exchange-only assignment."""

    sku_id: str
    part_number: str
    free_units: int
    exchange_plans: tuple[str, ...]
    other_user_plans: tuple[str, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sku:
        plans = [p for p in data.get("servicePlans") or [] if p.get("appliesTo") == "User"]
        exchange = tuple(
            str(p["servicePlanId"]) for p in plans if str(p.get("servicePlanName", "")).startswith(EXCHANGE_PLAN_PREFIX)
        )
        others = tuple(str(p["servicePlanId"]) for p in plans if str(p["servicePlanId"]) not in exchange)
        enabled = int((data.get("prepaidUnits") or {}).get("enabled", 0))
        return cls(
            str(data["skuId"]).lower(),
            str(data.get("skuPartNumber", "")),
            enabled - int(data.get("consumedUnits", 0)),
            exchange,
            others,
        )


class GraphClient:
    """The Graph calls of the chain, each mapped into shared.errors."""

    def __init__(self, http: ServiceClient) -> None:
        self._http = http
        self.http = http  # the directory reads (shared/directory.py) share its pool and its throttling hold
        self._root = f"{http.base_url}/v1.0"
        self._skus: tuple[float, list[Sku]] | None = None
        self._lock = threading.Lock()

    def get_user(self, upn_or_id: str) -> GraphUser | None:
        """The user, or None while it does not exist (not synced yet, or not replicated)."""
        response = self._http.request(
            "GET",
            f"{self._user_url(upn_or_id)}?$select={','.join(USER_SELECT)}",
            write=False,
            operation="GET user",
            target=upn_or_id,
        )
        if response.status == 404:
            return None
        return GraphUser.from_json(self._payload(response, write=False))

    def set_usage_location(self, user_id: str, country: str) -> None:
        """PATCH the usage location (only called when the user has none)."""
        response = self._http.request(
            "PATCH",
            self._user_url(user_id),
            body={"usageLocation": country},
            write=True,
            operation="PATCH user usageLocation",
            target=user_id,
        )
        self._payload(response, write=True)

    def skus(self) -> list[Sku]:
        """The tenant's subscribed SKUs, cached for a few minutes (each read costs 3 resource units)."""
        with self._lock:
            if self._skus and time.monotonic() - self._skus[0] < SKU_CACHE_SECONDS:
                return self._skus[1]
        response = self._http.request(
            "GET", f"{self._root}/subscribedSkus", write=False, operation="GET subscribedSkus"
        )
        skus = [Sku.from_json(item) for item in self._payload(response, write=False).get("value", [])]
        with self._lock:
            self._skus = (time.monotonic(), skus)
        return skus

    def forget_skus(self) -> None:
        """Drop the SKU cache, so the next free-unit check reads fresh counts."""
        with self._lock:
            self._skus = None

    def find_sku(self, part_or_id: str) -> Sku:
        """The subscribed SKU for a part number or skuId."""
        wanted = part_or_id.lower()
        for sku in self.skus():
            if wanted in (sku.sku_id, sku.part_number.lower()):
                return sku
        raise NoLicensesError(f"the tenant has no subscription for {part_or_id}")

    def assign_exchange_license(self, user_id: str, sku: Sku) -> None:
        """Assign the SKU with only its Exchange plan enabled; returning means Graph *accepted* it.

        The answer carries the user's default properties only, never its licenses: confirm the outcome
        with get_user, which may lag behind (docs/wire-protocols.md, "assignLicense").
        """
        if not sku.exchange_plans:
            raise PermanentError(f"{sku.part_number} has no Exchange Online service plan")
        body = {
            "addLicenses": [{"skuId": sku.sku_id, "disabledPlans": list(sku.other_user_plans)}],
            "removeLicenses": [],
        }
        self._assign(user_id, body, f"assignLicense +{sku.part_number}")

    def remove_license(self, user_id: str, sku: Sku) -> None:
        """Remove the SKU from the user; returning means Graph accepted it (confirm with get_user)."""
        self._assign(user_id, {"addLicenses": [], "removeLicenses": [sku.sku_id]}, f"assignLicense -{sku.part_number}")

    def _assign(self, user_id: str, body: dict[str, Any], operation: str) -> None:
        # Both arrays always go out: Graph refuses a payload that lacks either (sdk-powershell #3361).
        response = self._http.request(
            "POST",
            f"{self._user_url(user_id)}/assignLicense",
            body=body,
            write=True,
            operation=operation,
            target=user_id,
        )
        self._payload(response, write=True)

    def _user_url(self, upn_or_id: str) -> str:
        if upn_or_id.startswith("$"):
            # Graph's form for UPNs starting with $: an OData string literal, so an apostrophe is doubled.
            literal = upn_or_id.replace("'", "''")
            return f"{self._root}/users('{quote(literal, safe='')}')"
        return f"{self._root}/users/{quote(upn_or_id, safe='@')}"

    def _payload(self, response: Response, *, write: bool) -> dict[str, Any]:
        """The JSON object of any 2xx answer ({} when it has no body, as a 204 has); `write`: the call changes state."""
        payload = response.json()
        if 200 <= response.status < 300:
            if isinstance(payload, dict):
                return payload
            if payload is None:
                return {}
        raise map_graph_error(response, payload, write=write)


def error_message(payload: Any, status: int) -> str:
    """What a failed Graph answer says: `error.message`, or the bare status when it says nothing."""
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {}
    return str(error.get("message") or f"HTTP {status}")


def map_graph_error(response: Response, payload: Any, *, write: bool, role: str | None = None) -> ExoprovError:
    """Turn a failed Graph answer into the exception the chain acts on (match on substrings, not codes); a
    refusal names `role` when the call needs just that one.

    What the message does not settle goes by the status table Exchange uses too (`status_error`): a 5xx to a
    write (`write`) is an OutcomeUnknownError, since Graph may have applied it before failing.
    """
    message = error_message(payload, response.status)
    context = response.context
    if "invalid usage location" in message:
        return UsageLocationError(message, context)
    if "does not have any available licenses" in message or "Not enough licenses" in message:
        return NoLicensesError(message, context)
    if "inherited from a group membership" in message:
        return LicenseInheritedError(message, context)
    if response.status in (401, 403):
        needed = f"role {role}" if role else f"roles {', '.join(GRAPH_APP_ROLES[:-1])} and {GRAPH_APP_ROLES[-1]}"
        return PermissionDeniedError(
            f"Graph denied {context.operation}: {message}. The identity needs the Graph application {needed}",
            context,
        )
    return status_error(response, message, write=write)
