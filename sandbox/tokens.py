"""Tokens the sandbox issues on its managed-identity endpoint and checks on every API call.

They are HS256 JWTs signed with a per-process secret, so that the client cannot forge one and has
to go through token acquisition exactly as in Azure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

EXCHANGE_RESOURCE = "https://outlook.office365.com"
GRAPH_RESOURCE = "https://graph.microsoft.com"
DEFAULT_ROLES = {
    EXCHANGE_RESOURCE: ["Exchange.ManageAsApp"],
    GRAPH_RESOURCE: [
        "User.Read.All",
        "User.ReadUpdate.All",
        "LicenseAssignment.ReadWrite.All",
        "LicenseAssignment.Read.All",
    ],
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Signs and verifies the sandbox's tokens."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self._secret = secrets.token_bytes(32)
        self.app_id = "9d1b8c3e-5a7f-4e2b-8c1d-5a0e5a0e5a0e"

    def rotate(self) -> None:
        self._secret = secrets.token_bytes(32)

    def issue(self, resource: str, roles: list[str], lifetime: float) -> tuple[str, int]:
        now = int(time.time())
        expires = now + int(lifetime)
        claims = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": expires,
            "tid": self.tenant_id,
            "appid": self.app_id,
            "oid": self.app_id,
            "roles": roles,
            "idtyp": "app",
        }
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims).encode())
        signature = _b64(hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{signature}", expires

    def verify(self, authorization: str | None, resource: str) -> tuple[dict[str, Any] | None, str]:
        """The token's claims, or None and the reason the services would give."""
        if not authorization or not authorization.startswith("Bearer "):
            return None, "no bearer token"
        parts = authorization[7:].split(".")
        if len(parts) != 3:
            return None, "malformed token"
        expected = _b64(hmac.new(self._secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            return None, "invalid signature"
        claims: dict[str, Any] = json.loads(_unb64(parts[1]))
        if claims.get("exp", 0) < time.time():
            return None, "token expired"
        if claims.get("aud") != resource:
            return None, f"audience {claims.get('aud')!r} is not {resource!r}"
        return claims, ""
