"""The chain's messages: the HR request and the result (docs/contracts.md), and the step envelope."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from shared.errors import InvalidRequestError
from shared.settings import MAILBOX_TYPES, Settings, license_allowed, parse_country, parse_license

__all__ = [
    "MAX_MESSAGE_BYTES",
    "REQUEST_ID",
    "ChainProgress",
    "MailboxBefore",
    "Request",
    "Result",
    "StepMessage",
    "StepMessageError",
    "decode_body",
    "parse_request",
    "parse_request_text",
    "recover_request_id",
]

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
    """The text of a queue message as a runtime hands it over (bytes or str), plain JSON or base64 of it.

    The one decode of a message: `Dispatcher.handle` and `Dispatcher.handle_poison` call it for both runtimes
    (the Functions trigger's bytes, the worker's str), and `parse_request` for a request read elsewhere.
    """
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
    """Validate an HR request as sent (plain or base64); InvalidRequestError names the field and the rule."""
    return parse_request_text(decode_body(raw), settings)


def parse_request_text(text: str, settings: Settings) -> Request:
    """Validate an HR request that `decode_body` decoded already; the error keeps the requestId when readable."""
    try:
        return _parse_request(text, settings)
    except InvalidRequestError as exc:
        if exc.request_id and exc.upn is None:
            exc.upn = _readable_upn(text)
        raise


def _readable_upn(text: str) -> str | None:
    """The request's UPN, echoed in a rejection when it is at least a well-formed one."""
    try:
        upn = json.loads(text).get("userPrincipalName")
    except (ValueError, AttributeError, RecursionError):
        return None
    return upn if isinstance(upn, str) and UPN.match(upn) else None


def _parse_request(text: str, settings: Settings) -> Request:
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
    if usage_location is not None:
        try:
            usage_location = parse_country(usage_location)
        except ValueError:
            raise InvalidRequestError(
                "usageLocation", "must be an ISO 3166 alpha-2 code such as US or DE", request_id
            ) from None
    return Request(
        request_id=request_id,
        user_principal_name=upn,
        mailbox_type=by_lower[mailbox_type.lower()],
        license=license_id,
        usage_location=usage_location or None,
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
    try:
        value = parse_license(value)
    except ValueError:
        raise InvalidRequestError("license", "must be a SKU part number or a skuId GUID", request_id) from None
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
RETRIES_PREFIX = "retries."  # the wire name of a step's retry count: retries.license, retries.mailbox ...
# Keys earlier versions wrote, retired: skuId was never read, and licensedByChain always equalled licenseAssignedAt
# being set (now `ChainProgress.licensed_by_chain`). Step messages already queued when this version starts
# still carry them: they are accepted (their type checked) and dropped.
_RETIRED_STATE_KEYS: dict[str, type] = {"skuId": str, "licensedByChain": bool}


class StepMessageError(ValueError):
    """A step message that no step of this version wrote; `field` names the offending part (`state.userId`)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class MailboxBefore:
    """What the mailbox read before the chain wrote to it: the journal's "before" of the configure step's writes."""

    cloud_managed: bool | None = None  # IsExchangeCloudManaged
    type: str | None = None  # RecipientTypeDetails

    @classmethod
    def read(cls, box: Mapping[str, Any]) -> MailboxBefore:
        """The two properties of a Get-Mailbox answer, kept only when they have the type Exchange gives them."""
        cloud_managed, kind = box.get("IsExchangeCloudManaged"), box.get("RecipientTypeDetails")
        return cls(cloud_managed if isinstance(cloud_managed, bool) else None, kind if isinstance(kind, str) else None)

    def to_json(self) -> dict[str, Any]:
        return {"cloudManaged": self.cloud_managed, "type": self.type}

    @classmethod
    def from_json(cls, value: object) -> MailboxBefore:
        name = "state.mailboxBefore"
        if not isinstance(value, dict):
            raise StepMessageError(name, f"must be an object, not {_kind(value)}")
        unknown = sorted(set(value) - {"cloudManaged", "type"})
        if unknown:
            raise StepMessageError(f"{name}.{unknown[0]}", "is not a known field (known: cloudManaged, type)")
        cloud_managed, kind = value.get("cloudManaged"), value.get("type")
        if cloud_managed is not None and not isinstance(cloud_managed, bool):
            raise StepMessageError(f"{name}.cloudManaged", f"must be true, false or null, not {_kind(cloud_managed)}")
        if kind is not None and not isinstance(kind, str):
            raise StepMessageError(f"{name}.type", f"must be a string or null, not {_kind(kind)}")
        return cls(cloud_managed, kind)


@dataclass(frozen=True)
class ChainProgress:
    """What the chain learned so far, carried from step to step in the step message's `state`.

    Steps never change it: they make a new one with `dataclasses.replace`. On the wire it is a JSON object
    with the camelCase names below; a field at its default is left out. Every time is the chain clock's
    seconds since the epoch.
    """

    user_id: str | None = None  # userId: the Entra object id; the license step sets it, later steps need it
    user_first_seen_at: float | None = None  # userFirstSeenAt: Entra's replication lag for writes counts from it
    usage_location_set_at: float | None = None  # usageLocationSetAt: when the chain set the user's usageLocation
    no_free_units_since: float | None = None  # noFreeUnitsSince: the license shortage's wait counts from it
    license_assigned_at: float | None = None  # licenseAssignedAt: when Graph accepted the chain's assignment
    lag_polls: int = 0  # lagPolls: reads so far that waited for replication (they set the backoff)
    mailbox_before: MailboxBefore | None = None  # mailboxBefore: set by the mailbox step
    written: bool = False  # written: the configure step made its Set-Mailbox writes
    license_removed_at: float | None = None  # licenseRemovedAt: when Graph accepted the removal
    retries: Mapping[str, int] = field(default_factory=dict)  # retries.<step>: transient errors retried per step

    def __post_init__(self) -> None:
        object.__setattr__(self, "retries", MappingProxyType(dict(self.retries)))

    @property
    def licensed_by_chain(self) -> bool:
        """Whether this chain assigned the license (rather than finding it assigned already)."""
        return self.license_assigned_at is not None

    def settled(self) -> ChainProgress:
        """Without the replication bookkeeping of the license step, which is over."""
        return replace(self, lag_polls=0, usage_location_set_at=None, no_free_units_since=None)

    def retried(self, step: str) -> ChainProgress:
        """With one more retry of `step` counted."""
        return replace(self, retries={**self.retries, step: self.retries.get(step, 0) + 1})

    def check_for(self, step: str) -> None:
        """Refuse progress that `step` cannot run on: every step after license needs the user's id."""
        if step in ("mailbox", "configure") and self.user_id is None:
            raise StepMessageError("state.userId", f"is required by the {step} step (the license step sets it)")

    def to_json(self) -> dict[str, Any]:
        """The wire form: the same progress always gives the same object, keys in this order."""
        data: dict[str, Any] = {}
        optional: dict[str, Any] = {
            "userFirstSeenAt": self.user_first_seen_at,
            "userId": self.user_id,
            "usageLocationSetAt": self.usage_location_set_at,
            "noFreeUnitsSince": self.no_free_units_since,
            "licenseAssignedAt": self.license_assigned_at,
            "lagPolls": self.lag_polls or None,
            "mailboxBefore": None if self.mailbox_before is None else self.mailbox_before.to_json(),
            "written": self.written or None,
            "licenseRemovedAt": self.license_removed_at,
        }
        data.update((name, value) for name, value in optional.items() if value is not None)
        data.update((RETRIES_PREFIX + step, self.retries[step]) for step in STEPS if self.retries.get(step))
        return data

    @classmethod
    def from_json(cls, data: object) -> ChainProgress:
        """Read the wire form; StepMessageError names the first unknown or ill-typed field."""
        if not isinstance(data, dict):
            raise StepMessageError("state", f"must be an object, not {_kind(data)}")
        retries: dict[str, int] = {}
        for name, value in data.items():
            if name.startswith(RETRIES_PREFIX):
                if name.removeprefix(RETRIES_PREFIX) not in STEPS:
                    raise StepMessageError(f"state.{name}", f"is not a step's retry count (steps: {', '.join(STEPS)})")
                retries[name.removeprefix(RETRIES_PREFIX)] = _state_count(data, name)
            elif name in _RETIRED_STATE_KEYS:
                kind = _RETIRED_STATE_KEYS[name]
                if not isinstance(value, kind):
                    raise StepMessageError(f"state.{name}", f"must be a {kind.__name__}, not {_kind(value)}")
            elif name not in _STATE_KEYS:
                raise StepMessageError(f"state.{name}", f"is not a known field (known: {', '.join(_STATE_KEYS)})")
        before = data.get("mailboxBefore")
        user_id = data.get("userId")
        if user_id is not None and not isinstance(user_id, str):
            raise StepMessageError("state.userId", f"must be a string, not {_kind(user_id)}")
        if user_id == "":
            raise StepMessageError("state.userId", "must not be empty")
        written = data.get("written", False)
        if not isinstance(written, bool):
            raise StepMessageError("state.written", f"must be true or false, not {_kind(written)}")
        return cls(
            user_id=user_id,
            user_first_seen_at=_state_time(data, "userFirstSeenAt"),
            usage_location_set_at=_state_time(data, "usageLocationSetAt"),
            no_free_units_since=_state_time(data, "noFreeUnitsSince"),
            license_assigned_at=_state_time(data, "licenseAssignedAt"),
            lag_polls=_state_count(data, "lagPolls"),
            mailbox_before=None if before is None else MailboxBefore.from_json(before),
            written=written,
            license_removed_at=_state_time(data, "licenseRemovedAt"),
            retries=retries,
        )


_STATE_KEYS = (
    "userFirstSeenAt",
    "userId",
    "usageLocationSetAt",
    "noFreeUnitsSince",
    "licenseAssignedAt",
    "lagPolls",
    "mailboxBefore",
    "written",
    "licenseRemovedAt",
)


def _kind(value: object) -> str:
    """A JSON value's kind, for an error message (never the value itself: it may be long)."""
    return "null" if value is None else type(value).__name__


def _state_time(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StepMessageError(f"state.{name}", f"must be a number of seconds, not {_kind(value)}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise StepMessageError(f"state.{name}", "must be a finite number of seconds")
    return seconds


def _state_count(data: dict[str, Any], name: str) -> int:
    value: object = data.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StepMessageError(f"state.{name}", f"must be a whole number, 0 or more, not {json.dumps(value)[:40]}")
    return value


@dataclass
class StepMessage:
    """The envelope that carries a request from step to step, with what the chain learned so far."""

    step: str
    request: dict[str, Any]
    chain_id: str
    accepted_at: float
    wait_started_at: float
    polls: int = 0
    state: ChainProgress = field(default_factory=ChainProgress)
    seq: int = 0  # its place in the chain; the ledger expects exactly one sequence number at a time
    v: int = 1

    def __post_init__(self) -> None:
        # A step that would write a message its next step cannot run on fails here, in the writer.
        self.state.check_for(self.step)

    @property
    def request_id(self) -> str:
        return str(self.request["requestId"])

    @property
    def user_id(self) -> str:
        """The user's Entra object id, which every step after license carries (checked when it is read)."""
        if self.state.user_id is None:
            raise StepMessageError("state.userId", f"is required by the {self.step} step")
        return self.state.user_id

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

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "request": self.request,
            "chain_id": self.chain_id,
            "accepted_at": self.accepted_at,
            "wait_started_at": self.wait_started_at,
            "polls": self.polls,
            "state": self.state.to_json(),
            "seq": self.seq,
            "v": self.v,
        }

    def dumps(self) -> str:
        """The message text; deterministic, since the ledger matches a redelivery by the digest of this text."""
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> StepMessage:
        """Parse an envelope; StepMessageError (a ValueError) unless it is exactly what a step of this version
        wrote, or an earlier version whose messages may still be queued."""
        try:
            data = json.loads(text)
        except RecursionError:
            raise StepMessageError("message", "is nested too deeply to be a step message") from None
        if not isinstance(data, dict) or data.get("v") != 1 or set(data) != set(_ENVELOPE):
            raise StepMessageError("message", "is not a version-1 step message")
        for name, kind in _ENVELOPE.items():
            if not isinstance(data[name], kind) or isinstance(data[name], bool) is not (kind is bool):
                raise StepMessageError(name, f"is not {kind}")
        request = data["request"]
        if (
            data["step"] not in STEPS
            or set(request) != FIELDS
            or not isinstance(request["requestId"], str)
            or not REQUEST_ID.match(request["requestId"])
            or not isinstance(request["userPrincipalName"], str)
            or request["mailboxType"] not in TARGET_DETAILS
        ):
            raise StepMessageError("request", "is not a valid request")
        return cls(**{**data, "state": ChainProgress.from_json(data["state"])})


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
    """The one message every request ends with (docs/contracts.md, "Result message")."""

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
