"""The chain's messages: the HR request (contract 1), the step envelope, and the result (contract 2)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.errors import InvalidRequestError
from shared.settings import MAILBOX_TYPES, Settings, license_allowed

MAX_MESSAGE_BYTES = 64 * 1024  # the storage queue limit; nothing larger can be a real request
MAX_JSON_DEPTH = 8
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Entra's documented UPN rules: a name of letters, digits and ' . - _ ! # ^ ~ (no leading, trailing or double
# dot; `$` too, which Graph documents for UPNs that start with it), and a domain. Anything else is refused at
# the door rather than waited on until SYNC_WAIT_MINUTES for a user that cannot exist.
UPN = re.compile(
    r"^(?!\.)(?!.*\.\.)[A-Za-z0-9'._!#^~$-]{1,64}(?<!\.)@(?=.{1,255}$)"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
SKU_PART = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
COUNTRY = re.compile(r"^[A-Za-z]{2}$")
FIELDS = {"requestId", "userPrincipalName", "mailboxType", "license", "usageLocation", "cloudManaged", "keepLicense"}
TARGET_DETAILS = {
    "User": "UserMailbox",
    "Shared": "SharedMailbox",
    "Room": "RoomMailbox",
    "Equipment": "EquipmentMailbox",
}


@dataclass(frozen=True)
class Request:
    """A validated HR request with every default applied."""

    request_id: str
    user_principal_name: str
    mailbox_type: str = "User"
    license: str = ""
    usage_location: str | None = None
    cloud_managed: bool = True
    keep_license: bool = False

    @property
    def target_details(self) -> str:
        """The RecipientTypeDetails the mailbox must read at the end."""
        return TARGET_DETAILS[self.mailbox_type]

    def to_json(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "userPrincipalName": self.user_principal_name,
            "mailboxType": self.mailbox_type,
            "license": self.license,
            "usageLocation": self.usage_location,
            "cloudManaged": self.cloud_managed,
            "keepLicense": self.keep_license,
        }


def decode_body(raw: bytes | str) -> str:
    """The message text, whether it arrived as plain JSON or as base64 of it (HR tools differ)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > MAX_MESSAGE_BYTES:
        raise InvalidRequestError("message", f"is {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    # utf-8-sig: PowerShell and .NET write a byte-order mark in front of the JSON.
    text = data.decode("utf-8-sig", "replace").strip()
    if text and not text.startswith("{"):
        try:
            decoded = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return text
        return decoded.decode("utf-8-sig", "replace").strip()
    return text


def parse_request(raw: bytes | str, settings: Settings) -> Request:
    """Validate an HR request; InvalidRequestError names the field and the rule (and keeps the requestId)."""
    try:
        return _parse_request(raw, settings)
    except InvalidRequestError as exc:
        if exc.request_id and exc.upn is None:
            exc.upn = _readable_upn(raw)
        raise


def _readable_upn(raw: bytes | str) -> str | None:
    """The request's UPN, echoed in a rejection when it is at least a well-formed one."""
    try:
        upn = json.loads(decode_body(raw)).get("userPrincipalName")
    except (ValueError, AttributeError, InvalidRequestError, RecursionError):
        return None
    return upn if isinstance(upn, str) and UPN.match(upn) else None


def _parse_request(raw: bytes | str, settings: Settings) -> Request:
    text = decode_body(raw)
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidRequestError("message", "is not JSON", recover_request_id(text)) from None
    if not isinstance(payload, dict):
        raise InvalidRequestError("message", "must be a JSON object", None)
    request_id = payload.get("requestId")
    if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
        raise InvalidRequestError("requestId", "is required: 1-128 of A-Z a-z 0-9 . _ : -", None)
    if _depth(payload) > MAX_JSON_DEPTH:
        raise InvalidRequestError("message", f"is nested deeper than {MAX_JSON_DEPTH} levels", request_id)
    unknown = sorted(set(payload) - FIELDS)
    if unknown:
        raise InvalidRequestError(unknown[0], f"is not a known field (known: {', '.join(sorted(FIELDS))})", request_id)
    upn = _string(payload, "userPrincipalName", request_id, required=True) or ""
    if not UPN.match(upn) or len(upn) > 113:
        raise InvalidRequestError("userPrincipalName", f"{upn!r} is not a valid UPN (name@domain)", request_id)
    mailbox_type = _string(payload, "mailboxType", request_id) or "User"
    by_lower = {name.lower(): name for name in MAILBOX_TYPES}
    if mailbox_type.lower() not in by_lower:
        raise InvalidRequestError("mailboxType", f"must be one of {', '.join(MAILBOX_TYPES)}", request_id)
    license_id = _license(payload, settings, request_id)
    usage_location = _string(payload, "usageLocation", request_id)
    if usage_location is not None and not COUNTRY.match(usage_location):
        raise InvalidRequestError("usageLocation", "must be an ISO 3166 alpha-2 code such as US or DE", request_id)
    return Request(
        request_id=request_id,
        user_principal_name=upn,
        mailbox_type=by_lower[mailbox_type.lower()],
        license=license_id,
        usage_location=usage_location.upper() if usage_location else None,
        cloud_managed=_bool(payload, "cloudManaged", request_id, default=True),
        keep_license=_bool(payload, "keepLicense", request_id, default=False),
    )


def recover_request_id(text: str) -> str | None:
    """A requestId from a message too broken to parse, so that its sender still hears back."""
    match = re.search(r'"requestId"\s*:\s*"([A-Za-z0-9._:-]{1,128})"', text)
    return match.group(1) if match else None


def _license(payload: dict[str, Any], settings: Settings, request_id: str) -> str:
    value = _string(payload, "license", request_id) or settings.default_license
    if not value:
        raise InvalidRequestError("license", "is required (no DEFAULT_LICENSE is set)", request_id)
    if not (GUID.match(value) or SKU_PART.match(value)):
        raise InvalidRequestError("license", "must be a SKU part number or a skuId GUID", request_id)
    value = value.lower() if GUID.match(value) else value.upper()
    if not license_allowed(value, settings.allowed_licenses):
        allowed = ", ".join(settings.allowed_licenses) or "none: ALLOWED_LICENSES is empty"
        raise InvalidRequestError(
            "license", f"{value} is not allowed (allowed: {allowed})", request_id, code="license_not_allowed"
        )
    return value


def _string(payload: dict[str, Any], name: str, request_id: str, required: bool = False) -> str | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise InvalidRequestError(name, "is required", request_id)
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(name, f"must be a string, not {type(value).__name__}", request_id)
    if len(value) > 256:
        raise InvalidRequestError(name, "is longer than 256 characters", request_id)
    return value.strip()


def _bool(payload: dict[str, Any], name: str, request_id: str, default: bool) -> bool:
    value = payload.get(name, default)
    if not isinstance(value, bool):
        raise InvalidRequestError(name, f"must be true or false, not {json.dumps(value)[:40]}", request_id)
    return value


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()], default=level)
    if isinstance(value, list):
        return max([_depth(v, level + 1) for v in value], default=level)
    return level


STEPS = ("license", "mailbox", "configure")


@dataclass
class StepMessage:
    """The envelope that carries a request from step to step, with what the chain learned so far."""

    step: str
    request: dict[str, Any]
    chain_id: str
    accepted_at: float
    wait_started_at: float
    polls: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    seq: int = 0  # its place in the chain; the ledger expects exactly one sequence number at a time
    v: int = 1

    @property
    def request_id(self) -> str:
        return str(self.request["requestId"])

    def parsed_request(self) -> Request:
        r = self.request
        return Request(
            r["requestId"],
            r["userPrincipalName"],
            r["mailboxType"],
            r["license"],
            r.get("usageLocation"),
            bool(r["cloudManaged"]),
            bool(r["keepLicense"]),
        )

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> StepMessage:
        """Parse an envelope; ValueError unless it is exactly what a step of this version wrote."""
        try:
            data = json.loads(text)
        except RecursionError:
            raise ValueError("nested too deeply to be a step message") from None
        if not isinstance(data, dict) or data.get("v") != 1 or set(data) != set(_ENVELOPE):
            raise ValueError("not a version-1 step message")
        for name, kind in _ENVELOPE.items():
            if not isinstance(data[name], kind) or isinstance(data[name], bool) is not (kind is bool):
                raise ValueError(f"step message field {name} is not {kind}")
        request = data["request"]
        if (
            data["step"] not in STEPS
            or set(request) != FIELDS
            or not isinstance(request["requestId"], str)
            or not REQUEST_ID.match(request["requestId"])
            or not isinstance(request["userPrincipalName"], str)
            or request["mailboxType"] not in TARGET_DETAILS
        ):
            raise ValueError("step message does not carry a valid request")
        return cls(**data)


_ENVELOPE: dict[str, type | tuple[type, ...]] = {
    "step": str,
    "request": dict,
    "chain_id": str,
    "accepted_at": (int, float),
    "wait_started_at": (int, float),
    "polls": int,
    "state": dict,
    "seq": int,
    "v": int,
}


@dataclass
class Result:
    """The one message every request ends with (contract 2)."""

    request_id: str
    user_principal_name: str | None
    status: str
    mailbox_type: str | None = None
    primary_smtp_address: str | None = None
    recipient_type_details: str | None = None
    is_exchange_cloud_managed: bool | None = None
    license_removed: bool = False
    error: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    completed_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @classmethod
    def failed(
        cls, request_id: str, upn: str | None, code: str, message: str, mailbox_type: str | None = None
    ) -> Result:
        return cls(request_id, upn, "failed", mailbox_type, error={"code": code, "message": message})

    def to_json(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "userPrincipalName": self.user_principal_name,
            "status": self.status,
            "mailboxType": self.mailbox_type,
            "primarySmtpAddress": self.primary_smtp_address,
            "recipientTypeDetails": self.recipient_type_details,
            "isExchangeCloudManaged": self.is_exchange_cloud_managed,
            "licenseRemoved": self.license_removed,
            "error": self.error,
            "notes": self.notes,
            "completedAt": self.completed_at,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))
