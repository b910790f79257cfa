"""Access tokens per resource through azure-identity, cached until shortly before they expire."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.errors import AuthenticationError, ConfigurationError, TokenUnavailableError, first_line
from shared.settings import Settings

__all__ = [
    "AUTHORITY_ROLES",
    "GRAPH_APP_ROLES",
    "Token",
    "TokenCredential",
    "TokenProvider",
    "build_credential",
    "claims_challenge",
    "token_failure",
]

log = logging.getLogger("exoprov.auth")

# Refresh this long before expiry, so that a token never runs out in the middle of a page loop.
REFRESH_MARGIN_SECONDS = 300.0

# The Microsoft Graph application roles the identity needs: the least privileged role for each Graph call of
# shared/graph.py (docs/wire-protocols.md, "Microsoft Graph"). `exoprov doctor` checks the Graph token for them.
# infra/app/permissions.bicep grants them and README "Identity and permissions" lists them; neither can import
# this, so tests/test_infra.py holds both to it.
GRAPH_APP_ROLES = (
    "User.Read.All",  # GET /users/{id}: the synced user and its licenses
    "User.ReadUpdate.All",  # PATCH usageLocation when the user has none (not User.ReadWrite.All: no user is created)
    "LicenseAssignment.ReadWrite.All",  # assignLicense: add and remove the Exchange license
    # GET /subscribedSkus: service plans and free units. Graph's least privileged role for it; the ReadWrite role
    # above is not among the roles that call accepts (docs/wire-protocols.md, "GET /subscribedSkus").
    "LicenseAssignment.Read.All",
    "GroupMember.Read.All",  # the readiness report: synced groups and their member groups
    "OrgContact.Read.All",  # the readiness report: synced org contacts
)
# Reading and moving a source of authority (onPremisesSyncBehavior), per kind of ENFORCE_OBJECTS: granted by the
# deployment only for the kinds it enforces. Graph has no Read.All variant of them.
AUTHORITY_ROLES = {
    "groups": "Group-OnPremisesSyncBehavior.ReadWrite.All",
    "contacts": "Contacts-OnPremisesSyncBehavior.ReadWrite.All",
}


class TokenCredential(Protocol):
    """The part of azure-core's TokenCredential protocol we use."""

    def get_token(self, *scopes: str, claims: str | None = None) -> Any: ...


@dataclass(frozen=True)
class Token:
    """A bearer token, its expiry and its decoded claims; `repr` never shows the token."""

    value: str = field(repr=False)
    expires_on: float
    claims: dict[str, Any]

    @property
    def roles(self) -> list[str]:
        """The app roles granted to the identity (the `roles` claim)."""
        roles = self.claims.get("roles", [])
        return [str(role) for role in roles] if isinstance(roles, list) else []

    @property
    def tenant_id(self) -> str | None:
        """The tenant the token was issued in (the `tid` claim)."""
        tid = self.claims.get("tid")
        return str(tid) if tid else None


def decode_claims(token: str) -> dict[str, Any]:
    """Read a JWT's payload without verifying it; an opaque token yields no claims."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def claims_challenge(www_authenticate: str | None) -> str | None:
    """The decoded `claims` of a 401's WWW-Authenticate challenge (continuous access evaluation), if any."""
    if not www_authenticate:
        return None
    match = re.search(r'claims="([^"]+)"', www_authenticate)
    if not match:
        return None
    encoded = match.group(1)
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def build_credential(settings: Settings) -> TokenCredential:
    """The credential the settings describe: certificate when one is configured, else the standard chain."""
    if settings.certificate_path:
        if not (settings.tenant_id and settings.client_id):
            raise ConfigurationError(
                "AZURE_CLIENT_CERTIFICATE_PATH",
                "certificate auth also needs AZURE_TENANT_ID and AZURE_CLIENT_ID (the app registration)",
            )
        from azure.identity import CertificateCredential

        try:
            return CertificateCredential(
                settings.tenant_id,
                settings.client_id,
                settings.certificate_path,
                password=settings.certificate_password,
                authority=settings.cloud.authority_host,
            )
        except (ValueError, TypeError) as exc:  # cryptography's reasons; they never contain the password
            raise ConfigurationError(
                "AZURE_CLIENT_CERTIFICATE_PATH",
                f"cannot load {settings.certificate_path}: {first_line(exc)} (expected a PEM with its "
                "private key, or PKCS#12; check AZURE_CLIENT_CERTIFICATE_PASSWORD)",
            ) from exc
    from azure.identity import DefaultAzureCredential

    # Managed identity (App Service protocol or IMDS) first in Azure, developer logins on a laptop.
    return DefaultAzureCredential(
        managed_identity_client_id=settings.client_id,
        authority=settings.cloud.authority_host,
        exclude_interactive_browser_credential=True,
        exclude_shared_token_cache_credential=True,
        exclude_visual_studio_code_credential=True,
    )


class TokenProvider:
    """One credential per process; one cached token per resource, shared by every thread."""

    def __init__(self, credential: TokenCredential) -> None:
        self._credential = credential
        self._tokens: dict[str, Token] = {}
        self._lock = threading.Lock()
        self.acquisitions: Counter[str] = Counter()

    def get(self, resource: str, *, refresh: bool = False, claims: str | None = None) -> Token:
        """A valid token for the resource; `refresh` drops the cached one (after a 401).

        `claims` is the service's claims challenge; passing it also makes azure-identity skip its own cache.
        """
        with self._lock:
            cached = self._tokens.get(resource)
            if cached and not refresh and cached.expires_on - time.time() > REFRESH_MARGIN_SECONDS:
                return cached
            token = self._acquire(resource, claims)
            self._tokens[resource] = token
            return token

    def _acquire(self, resource: str, claims: str | None) -> Token:
        started = time.monotonic()
        try:
            if claims:
                raw = self._credential.get_token(f"{resource}/.default", claims=claims)
            else:
                raw = self._credential.get_token(f"{resource}/.default")
        except Exception as exc:  # azure-identity raises several unrelated types
            log.warning("token for %s failed after %.0f ms: %s", resource, _ms(started), first_line(exc))
            raise token_failure(resource, exc) from exc
        self.acquisitions[resource] += 1
        token = Token(raw.token, float(raw.expires_on), decode_claims(raw.token))
        log.info(
            "token for %s acquired in %.0f ms, expires in %.0f s, roles=%s",
            resource,
            _ms(started),
            token.expires_on - time.time(),
            ",".join(token.roles) or "-",
        )
        return token


# azure-identity puts what the token endpoint answered only in its message text: the App Service managed
# identity (through MSAL) reports "(invalid_scope) <status>, <message>", and DefaultAzureCredential raises one
# ClientAuthenticationError summarising every credential, with no status attribute to read.
_ENDPOINT_STATUS = re.compile(r"\(invalid_scope\) (\d{3}),")
_NETWORK_TEXT = re.compile(r"Max retries exceeded|Connection refused|Connection reset|timed out", re.IGNORECASE)
TOKEN_HINT = (
    "In Azure, check that the app has a managed identity (and AZURE_CLIENT_ID names it, for a user-assigned "
    "one); on a laptop, run 'az login'; on a job server, set AZURE_CLIENT_CERTIFICATE_PATH"
)


def token_failure(resource: str, exc: BaseException) -> AuthenticationError | TokenUnavailableError:
    """Classify a failed token request: an endpoint outage passes (transient), a misconfiguration does not."""
    text = str(exc)
    statuses = {int(status) for status in _ENDPOINT_STATUS.findall(text)}
    response_status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(response_status, int):
        statuses.add(response_status)
    network = type(exc).__name__ in ("ServiceRequestError", "ServiceResponseError") or bool(_NETWORK_TEXT.search(text))
    reason = next((line.strip() for line in text.splitlines() if "(invalid_scope)" in line), first_line(exc))
    if network or any(status >= 500 or status == 429 for status in statuses):
        return TokenUnavailableError(f"could not get a token for {resource}: {reason.rstrip('.')}. {TOKEN_HINT}")
    return AuthenticationError(f"no credential can give a token for {resource}: {reason.rstrip('.')}. {TOKEN_HINT}")


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000
