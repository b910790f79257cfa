"""Microsoft Graph as the sandbox serves it: the user, subscribedSkus and assignLicense calls the chain uses.

Entra is eventually consistent, and so is this: a write is visible to reads only after the replication
lag, a user that a read just returned can still be unknown to a write, and assignLicense answers with the
user's default properties, never with its licenses (tests/contracts/graph/ holds the evidence).
"""

from __future__ import annotations

import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from sandbox.exchange_api import Reply
from sandbox.tenant import Tenant, User

# Which app roles allow which call (least privilege first); any one of them suffices.
ROLES = {
    "read": ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All"),
    "patch": ("User.ReadUpdate.All", "User.ReadWrite.All", "Directory.ReadWrite.All"),
    "license": ("LicenseAssignment.ReadWrite.All", "User.ReadWrite.All", "Directory.ReadWrite.All"),
    "skus": ("Organization.Read.All", "Directory.Read.All"),
}
# users/{id or upn}, or users('{upn}') with apostrophes doubled as in any OData string literal.
USER_PATH = re.compile(r"^/v1\.0/users(?:/([^/()]+)|\('((?:[^']|'')+)'\))(/assignLicense)?$")
# What GET /users/{id} returns without $select, and what assignLicense answers with.
DEFAULT_PROPERTIES = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
GRAPH_ROOT = "https://graph.microsoft.com/v1.0"


class GraphApi:
    """Serves the Graph calls of the chain for one tenant."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self._call = threading.local()  # the caller's client-request-id, echoed in errors as Graph does

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, roles: list[str], request_id: str = ""
    ) -> Reply:
        self._call.request_id = request_id
        if path == "/v1.0/subscribedSkus" and method == "GET":
            return self._allowed(roles, "skus") or Reply.json(
                200,
                {
                    "@odata.context": f"{GRAPH_ROOT}/$metadata#subscribedSkus",
                    "value": [_sku_json(s) for s in self.tenant.skus],
                },
            )
        match = USER_PATH.match(path)
        if not match:
            return self._error(404, "Request_ResourceNotFound", f"Resource not found for the segment '{path}'.")
        key = unquote(match.group(1)) if match.group(1) else unquote(match.group(2)).replace("''", "'")
        if match.group(3):
            return self._allowed(roles, "license") or self._assign(key, body)
        if method == "GET":
            return self._allowed(roles, "read") or self._get(key, query.get("$select", [""])[0])
        if method == "PATCH":
            return self._allowed(roles, "patch") or self._patch(key, body)
        return self._error(405, "Request_BadRequest", f"{method} is not supported here.")

    def _allowed(self, roles: list[str], kind: str) -> Reply | None:
        if set(roles) & set(ROLES[kind]):
            return None
        return self._error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")

    def _user(self, key: str, *, write: bool = False) -> User | None:
        """The user a read (or, later by the replication lag, a write) can see."""
        now = self.tenant.clock()
        for user in self.tenant.users.values():
            if key.lower() in (user.id.lower(), user.upn.lower()):
                return user if (user.writable_at if write else user.visible_at) <= now else None
        return None

    def _get(self, key: str, select: str) -> Reply:
        user = self._user(key)
        if user is None:
            return self._not_found(key)
        selected = [n.strip() for n in select.split(",") if n.strip()]
        names = tuple(selected) if selected else DEFAULT_PROPERTIES
        known = self._user_json(user)
        unknown = [n for n in names if n not in known]
        if unknown:
            return self._error(
                400,
                "Request_BadRequest",
                f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.user'.",
            )
        context = f"{GRAPH_ROOT}/$metadata#users" + (f"({','.join(names)})" if select else "") + "/$entity"
        return Reply.json(200, {"@odata.context": context, **{n: known[n] for n in names}})

    def _patch(self, key: str, body: Any) -> Reply:
        user = self._user(key, write=True)
        if user is None:
            return self._not_found(key)
        if not isinstance(body, dict) or set(body) - {"usageLocation"}:
            return self._error(400, "Request_BadRequest", "Only usageLocation can be changed in the sandbox.")
        with self.tenant.lock:
            user.replicate("usageLocation", user.usage_location, self.tenant.clock(), self.tenant.replication_lag)
            user.usage_location = body["usageLocation"]
        return Reply(204)

    def _assign(self, key: str, body: Any) -> Reply:
        user = self._user(key, write=True)
        if user is None:
            return self._not_found(key)
        body = body if isinstance(body, dict) else {}
        missing = [name for name in ("addLicenses", "removeLicenses") if not isinstance(body.get(name), list)]
        if missing:
            return self._error(
                400,
                "Request_BadRequest",
                "One or more parameters of the operation 'assignLicense' are "
                f"missing from the request payload. The missing parameters are: {', '.join(missing)}.",
            )
        with self.tenant.lock:
            refused = self._refusal(user, body)
            if refused:
                return refused
            for item in body["addLicenses"]:
                self.tenant.assign_license(user, str(item["skuId"]).lower(), list(item.get("disabledPlans") or []))
            for sku_id in body["removeLicenses"]:
                self.tenant.remove_license(user, str(sku_id).lower())
        # A 200 means "accepted": the answer is the user's default properties, without its licenses.
        return Reply.json(
            200,
            {
                "@odata.context": f"{GRAPH_ROOT}/$metadata#users/$entity",
                **_pick(self._user_json(user), DEFAULT_PROPERTIES),
            },
        )

    def _refusal(self, user: User, body: dict[str, Any]) -> Reply | None:
        """Why assignLicense refuses this body, checked the way another replica sees the user."""
        now = self.tenant.clock()
        for item in body["addLicenses"]:
            sku_id = str(item.get("skuId", "")).lower() if isinstance(item, dict) else ""
            sku = self.tenant.sku(sku_id)
            if sku is None:
                return self._error(
                    400, "Request_BadRequest", f"License {sku_id} does not correspond to a valid company License."
                )
            if not user.replicated("usageLocation", user.usage_location, now):
                return self._error(
                    400, "Request_BadRequest", "License assignment cannot be done for user with invalid usage location."
                )
            free = int(sku.get("prepaidUnits", {}).get("enabled", 0)) - int(sku.get("consumedUnits", 0))
            if sku_id not in user.licenses and free <= 0:
                return self._error(
                    400, "Request_BadRequest", f"Subscription with SKU {sku_id} does not have any available licenses."
                )
        for sku_id in (str(s).lower() for s in body["removeLicenses"]):
            assignment = user.licenses.get(sku_id)
            if assignment is None:
                return self._error(400, "Request_BadRequest", "User does not have a corresponding license.")
            if assignment.inherited:
                return self._error(
                    400,
                    "Request_BadRequest",
                    "User license is inherited from a group membership and it cannot be removed directly "
                    "from the user.",
                )
        return None

    def _user_json(self, user: User) -> dict[str, Any]:
        """Every property the sandbox knows, as a read sees it now (writes still replicating are not shown)."""
        group = "3f1c0a55-0000-4000-8000-0000000000aa"
        now = self.tenant.clock()
        licenses = user.replicated("licenses", user.licenses, now).values()
        return {
            "businessPhones": [],
            "displayName": user.display_name,
            "givenName": None,
            "jobTitle": None,
            "mail": user.mail,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": None,
            "surname": None,
            "userPrincipalName": user.upn,
            "id": user.id,
            "usageLocation": user.replicated("usageLocation", user.usage_location, now),
            "accountEnabled": user.account_enabled,
            "onPremisesSyncEnabled": True if user.dir_synced else None,
            "assignedLicenses": [{"disabledPlans": a.disabled_plans, "skuId": a.sku_id} for a in licenses],
            "licenseAssignmentStates": [
                {
                    "assignedByGroup": group if a.inherited else None,
                    "disabledPlans": a.disabled_plans,
                    "error": "None",
                    "lastUpdatedDateTime": "2026-01-05T09:30:00Z",
                    "skuId": a.sku_id,
                    "state": "Active",
                }
                for a in licenses
            ],
        }

    def _not_found(self, key: str) -> Reply:
        return self._error(
            404,
            "Request_ResourceNotFound",
            f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
        )

    def _error(self, status: int, code: str, message: str) -> Reply:
        inner = {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": str(uuid.uuid4()),
            "client-request-id": getattr(self._call, "request_id", "") or str(uuid.uuid4()),
        }
        return Reply.json(status, {"error": {"code": code, "message": message, "innerError": inner}})


def _pick(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: data[name] for name in names}


def _sku_json(sku: dict[str, Any]) -> dict[str, Any]:
    return {
        "accountId": sku.get("accountId", "7a1c2f3e-0000-4000-8000-0000000000a1"),
        "accountName": sku.get("accountName", "Contoso"),
        "appliesTo": "User",
        "capabilityStatus": "Enabled",
        "consumedUnits": int(sku.get("consumedUnits", 0)),
        "id": f"7a1c2f3e-0000-4000-8000-0000000000a1_{sku['skuId']}",
        "prepaidUnits": {"enabled": 0, "lockedOut": 0, "suspended": 0, "warning": 0, **sku.get("prepaidUnits", {})},
        "servicePlans": [{"provisioningStatus": "Success", **plan} for plan in sku.get("servicePlans", [])],
        "skuId": sku["skuId"],
        "skuPartNumber": sku["skuPartNumber"],
        "subscriptionIds": [sku.get("subscriptionId", "5f0e3f1a-0000-4000-8000-0000000000b2")],
    }
