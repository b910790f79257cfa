"""Microsoft Graph as the sandbox serves it: the user, subscribedSkus and assignLicense calls the chain uses."""

from __future__ import annotations

import re
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
USER_PATH = re.compile(r"^/v1\.0/users(?:/([^/()]+)|\('([^']+)'\))(/assignLicense)?$")


class GraphApi:
    """Serves the Graph calls of the chain for one tenant."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant

    def handle(self, method: str, path: str, body: Any, roles: list[str]) -> Reply:
        if path == "/v1.0/subscribedSkus" and method == "GET":
            return self._allowed(roles, "skus") or Reply.json(200, {"value": [_sku_json(s) for s in self.tenant.skus]})
        match = USER_PATH.match(path)
        if not match:
            return _error(404, "Request_ResourceNotFound", f"Resource not found for the segment '{path}'.")
        key = unquote(match.group(1) or match.group(2))
        if match.group(3):
            return self._allowed(roles, "license") or self._assign(key, body)
        if method == "GET":
            return self._allowed(roles, "read") or self._get(key)
        if method == "PATCH":
            return self._allowed(roles, "patch") or self._patch(key, body)
        return _error(405, "Request_BadRequest", f"{method} is not supported here.")

    def _allowed(self, roles: list[str], kind: str) -> Reply | None:
        if set(roles) & set(ROLES[kind]):
            return None
        return _error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")

    def _user(self, key: str) -> User | None:
        now = self.tenant.clock()
        for user in self.tenant.users.values():
            if key.lower() in (user.id.lower(), user.upn.lower()) and user.visible_at <= now:
                return user
        return None

    def _get(self, key: str) -> Reply:
        user = self._user(key)
        if user is None:
            return _not_found(key)
        return Reply.json(200, self._user_json(user))

    def _patch(self, key: str, body: Any) -> Reply:
        user = self._user(key)
        if user is None:
            return _not_found(key)
        if not isinstance(body, dict) or set(body) - {"usageLocation"}:
            return _error(400, "Request_BadRequest", "Only usageLocation can be changed in the sandbox.")
        with self.tenant.lock:
            user.usage_location = body["usageLocation"]
        return Reply(204)

    def _assign(self, key: str, body: Any) -> Reply:
        user = self._user(key)
        if user is None:
            return _not_found(key)
        body = body if isinstance(body, dict) else {}
        missing = [name for name in ("addLicenses", "removeLicenses") if not isinstance(body.get(name), list)]
        if missing:
            return _error(
                400,
                "Request_BadRequest",
                "One or more parameters of the operation 'assignLicense' are "
                f"missing from the request payload. The missing parameters are: {', '.join(missing)}.",
            )
        with self.tenant.lock:
            for item in body["addLicenses"]:
                sku_id = str(item.get("skuId", "")).lower()
                sku = self.tenant.sku(sku_id)
                if sku is None:
                    return _error(
                        400, "Request_BadRequest", f"License {sku_id} does not correspond to a valid company License."
                    )
                if not user.usage_location:
                    return _error(
                        400,
                        "Request_BadRequest",
                        "License assignment cannot be done for user with invalid usage location.",
                    )
                free = int(sku.get("prepaidUnits", {}).get("enabled", 0)) - int(sku.get("consumedUnits", 0))
                if sku_id not in user.licenses and free <= 0:
                    return _error(
                        400,
                        "Request_BadRequest",
                        f"Subscription with SKU {sku_id} does not have any available licenses.",
                    )
            for sku_id in (str(s).lower() for s in body["removeLicenses"]):
                assignment = user.licenses.get(sku_id)
                if assignment is None:
                    return _error(400, "Request_BadRequest", f"User does not have a corresponding license {sku_id}.")
                if assignment.inherited:
                    return _error(
                        400,
                        "Request_BadRequest",
                        "User license is inherited from a group membership and it "
                        "cannot be removed directly from the user.",
                    )
            for item in body["addLicenses"]:
                self.tenant.assign_license(user, str(item["skuId"]).lower(), list(item.get("disabledPlans") or []))
            for sku_id in body["removeLicenses"]:
                self.tenant.remove_license(user, str(sku_id).lower())
        return Reply.json(200, self._user_json(user))

    def _user_json(self, user: User) -> dict[str, Any]:
        group = "3f1c0a55-0000-4000-8000-0000000000aa"
        return {
            "id": user.id,
            "userPrincipalName": user.upn,
            "mail": user.mail,
            "usageLocation": user.usage_location,
            "accountEnabled": user.account_enabled,
            "onPremisesSyncEnabled": True if user.dir_synced else None,
            "assignedLicenses": [
                {"skuId": a.sku_id, "disabledPlans": a.disabled_plans} for a in user.licenses.values()
            ],
            "licenseAssignmentStates": [
                {
                    "skuId": a.sku_id,
                    "assignedByGroup": group if a.inherited else None,
                    "state": "Active",
                    "error": "None",
                    "disabledPlans": a.disabled_plans,
                }
                for a in user.licenses.values()
            ],
        }


def _sku_json(sku: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"tenant_{sku['skuId']}",
        "skuId": sku["skuId"],
        "skuPartNumber": sku["skuPartNumber"],
        "appliesTo": "User",
        "capabilityStatus": "Enabled",
        "consumedUnits": int(sku.get("consumedUnits", 0)),
        "prepaidUnits": {"enabled": 0, "lockedOut": 0, "suspended": 0, "warning": 0, **sku.get("prepaidUnits", {})},
        "servicePlans": [{"provisioningStatus": "Success", **plan} for plan in sku.get("servicePlans", [])],
    }


def _not_found(key: str) -> Reply:
    return _error(
        404,
        "Request_ResourceNotFound",
        f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
    )


def _error(status: int, code: str, message: str) -> Reply:
    inner = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "request-id": str(uuid.uuid4())}
    return Reply.json(status, {"error": {"code": code, "message": message, "innerError": inner}})
