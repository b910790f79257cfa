"""The Exchange admin API as the sandbox serves it: InvokeCommand with paging, and $batch."""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.faults import Dice, Knobs, Stats
from sandbox.tenant import CmdletError, Tenant, UnknownCmdlet

MAX_PAGE_SIZE = 1000
NUL_BODY = b"\x00" * 32
ODATA_EXCEPTION = "Microsoft.Exchange.Admin.OData.Core.ODataServiceException"
DIRECT_INVOKE = "Microsoft.Exchange.Management.PSDirectInvoke.DirectInvokeCmdletExecutionException"
EXPIRED_CONTINUATION = "Expired or Invalid pagination request. Default Expiry time is 00:30:00"
MORE_RESULTS = (
    "There are more results available than are currently displayed. To view them, increase the value for the "
    "ResultSize parameter."
)
# Guid-typed properties come with two type annotations (a 2024 capture of Get-Mailbox); MailboxGuid and
# OrganizationGuid are Guid-typed too (Learn), their annotations assumed by the same rule.
GUID_PROPERTIES = frozenset(
    {
        "ExchangeGuid",
        "Guid",
        "ArchiveGuid",
        "ArchiveDatabaseGuid",
        "ExchangeObjectId",
        "DatabaseGuid",
        "MailboxGuid",
        "OrganizationGuid",
    }
)


@dataclass
class Reply:
    """An HTTP answer; `drop` closes the connection instead of answering."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


@dataclass
class _Continuation:
    records: Iterator[dict[str, Any]]
    body: Any
    select: tuple[str, ...]
    warnings: list[str]
    expires: float
    page_size: int


class ExchangeApi:
    """Serves InvokeCommand and $batch for one tenant."""

    def __init__(self, tenant: Tenant, knobs: Knobs, stats: Stats, dice: Dice) -> None:
        self.tenant = tenant
        self.knobs = knobs
        self.stats = stats
        self.dice = dice
        self._continuations: dict[str, _Continuation] = {}
        self._continuations_served = 0
        self._lock = threading.Lock()

    def invoke(self, origin: str, base: str, query: dict[str, list[str]], headers: Any, body: Any) -> Reply:
        skiptoken = query.get("$skiptoken", [""])[0]
        if skiptoken:
            with self._lock:
                self._continuations_served += 1
                lost = self._continuations_served in self.knobs.fault_lost_pages
            reply = self._next_page(origin, base, skiptoken, body)
            if lost:
                # The page was served and its link spent, but the answer never arrived: a gateway timeout.
                self.stats.count("faults", "lost_page")
                return Reply.json(504, {"error": {"code": "GatewayTimeout", "message": "Gateway Timeout"}})
            return reply
        cmdlet, params = _cmdlet_input(body)
        if cmdlet is None:
            return Reply.json(400, _error(400, "System.ArgumentException", "The request body has no CmdletInput."))
        select = _select(query)
        self._record(cmdlet, params)
        if cmdlet in self.knobs.denied_cmdlets:
            # Outside the identity's RBAC: a NUL-padded 403 whose only reason is the x-ms-diagnostics header.
            reason = f"The caller does not have a role that allows {cmdlet}."
            return Reply(403, NUL_BODY, {"x-ms-diagnostics": f'2000003;reason="{reason}"'})
        try:
            records, warnings = self.tenant.run(cmdlet, params)
        except UnknownCmdlet:
            return _nul_403()
        except CmdletError as exc:
            return Reply.json(exc.status, _error(exc.status, exc.exception_type, exc.message, exc.details))
        if not cmdlet.startswith("Get-") and self.dice.roll(self.knobs.fault_empty_error_rate):
            self.stats.count("faults", "empty_error")
            return Reply.json(500, {"error": {"code": "InternalServerError", "message": "", "details": []}})
        page_size = _page_size(headers.get("Prefer", ""), self.knobs.page_size_cap)
        limit = _result_size(params.get("ResultSize"))
        if limit is not None:
            # A numeric ResultSize is applied by the service: that many rows, a warning when there were more,
            # and a nextLink that a live capture could never follow.
            rows = iter(records)
            head = list(itertools.islice(rows, limit))
            if next(rows, None) is not None:
                value = [_project(r, select) for r in head[:page_size]]
                payload = _page_body(base, value, [*warnings, MORE_RESULTS])
                payload["@odata.nextLink"] = f"{origin}{base}/InvokeCommand?%24skiptoken={secrets.token_urlsafe(12)}"
                return Reply.json(200, payload)
            records = head
        return self._page(origin, base, iter(records), body, select, warnings, page_size)

    def batch(self, base: str, headers: Any, body: Any) -> Reply:
        if "application/json" not in headers.get("Accept", ""):
            # What ORADAZ found: without Accept: application/json, a multipart/mixed answer.
            return Reply(
                200,
                b"--batchresponse_1\r\nContent-Type: application/http\r\n\r\n--batchresponse_1--",
                {"Content-Type": "multipart/mixed; boundary=batchresponse_1"},
            )
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return Reply.json(
                400, _error(400, "System.ArgumentException", "A $batch needs a non-empty 'requests' array.")
            )
        if len(requests) > self.knobs.batch_limit:
            return Reply.json(
                400,
                _error(
                    400,
                    "System.ArgumentException",
                    f"The batch holds {len(requests)} requests; the limit is {self.knobs.batch_limit}.",
                ),
            )
        return Reply.json(200, {"responses": [self._item(base, item) for item in requests]})

    def _item(self, base: str, item: Any) -> dict[str, Any]:
        item = item if isinstance(item, dict) else {}
        item_id = str(item.get("id", ""))
        url = urlsplit(str(item.get("url", "")))
        if item.get("method", "POST") != "POST" or not url.path.endswith(base + "/InvokeCommand"):
            return {
                "id": item_id,
                "status": 400,
                "body": _error(400, "System.ArgumentException", f"Unsupported batch item URL {url.path!r}."),
            }
        cmdlet, params = _cmdlet_input(item.get("body"))
        if cmdlet is None:
            return {"id": item_id, "status": 400, "body": _error(400, "System.ArgumentException", "No CmdletInput.")}
        self._record(cmdlet, params)
        write = not cmdlet.startswith("Get-")
        if cmdlet == "Get-Mailbox" and "Identity" in params and self.dice.roll(self.knobs.fault_readback_rate):
            self.stats.count("faults", "readback")
            return {"id": item_id, "status": 503, "body": _error(503, ODATA_EXCEPTION, "Service Unavailable")}
        rate = self.knobs.fault_item_429_rate if write else self.knobs.fault_read_item_429_rate
        if self.dice.roll(rate):
            self.stats.count("faults", "item_429")
            return {
                "id": item_id,
                "status": 429,
                "headers": {} if self.knobs.omit_retry_after else {"Retry-After": str(self.knobs.retry_after)},
                "body": _error(429, "Microsoft.Exchange.Throttling", "Too many requests; try again later."),
            }
        try:
            records, warnings = self.tenant.run(cmdlet, params)
        except UnknownCmdlet:
            return {"id": item_id, "status": 403, "body": None}
        except CmdletError as exc:
            return {
                "id": item_id,
                "status": exc.status,
                "body": _error(exc.status, exc.exception_type, exc.message, exc.details),
            }
        if write and self.dice.roll(self.knobs.fault_empty_error_rate):
            self.stats.count("faults", "empty_error")
            return {"id": item_id, "status": 500, "body": {"error": {"code": "InternalServerError", "message": ""}}}
        select = _select(parse_qs(url.query))
        value = [_project(r, select) for r in itertools.islice(records, MAX_PAGE_SIZE)]
        return {"id": item_id, "status": 200, "body": _page_body(base, value, warnings)}

    def _record(self, cmdlet: str, params: dict[str, Any]) -> None:
        self.stats.count("commands", cmdlet)
        if "Identity" in params:
            self.stats.count("identities", str(params["Identity"]))
        if "Filter" in params:
            self.stats.count("filters", str(params["Filter"]))

    def _page(
        self,
        origin: str,
        base: str,
        records: Iterator[dict[str, Any]],
        body: Any,
        select: tuple[str, ...],
        warnings: list[str],
        page_size: int,
    ) -> Reply:
        value = [_project(r, select) for r in itertools.islice(records, page_size)]
        payload = _page_body(base, value, warnings)
        following = next(records, None)
        if following is not None:
            token = secrets.token_urlsafe(12)
            with self._lock:
                self._continuations[token] = _Continuation(
                    itertools.chain([following], records),
                    body,
                    select,
                    warnings,
                    time.monotonic() + self.knobs.nextlink_ttl,
                    page_size,
                )
            selected = f"$select={','.join(select)}&" if select else ""
            origin = self.knobs.nextlink_origin or origin  # a fault: a link to a host the client must not trust
            payload["@odata.nextLink"] = f"{origin}{base}/InvokeCommand?{selected}$skiptoken={token}"
        return Reply.json(200, payload)

    def _next_page(self, origin: str, base: str, token: str, body: Any) -> Reply:
        with self._lock:
            state = self._continuations.pop(token, None)
        # What a live capture saw for a replayed or expired link, and for one POSTed with another body.
        if state is None or state.expires < time.monotonic() or body != state.body:
            return _expired()
        return self._page(origin, base, state.records, body, state.select, [], state.page_size)


def _cmdlet_input(body: Any) -> tuple[str | None, dict[str, Any]]:
    cmdlet_input = body.get("CmdletInput") if isinstance(body, dict) else None
    if not isinstance(cmdlet_input, dict) or not isinstance(cmdlet_input.get("CmdletName"), str):
        return None, {}
    params = cmdlet_input.get("Parameters") or {}
    return cmdlet_input["CmdletName"], params if isinstance(params, dict) else {}


def _select(query: dict[str, list[str]]) -> tuple[str, ...]:
    raw = query.get("$select", [""])[0]
    return tuple(p for p in raw.split(",") if p)


def _page_size(prefer: str, cap: int = MAX_PAGE_SIZE) -> int:
    for part in prefer.split(","):
        name, _, value = part.strip().partition("=")
        if name == "odata.maxpagesize" and value.isdigit():
            return max(1, min(int(value), cap))
    return cap


def _result_size(value: Any) -> int | None:
    """A numeric ResultSize, or None for "Unlimited" and absent."""
    if isinstance(value, int) and not isinstance(value, bool):
        return max(value, 1)
    if isinstance(value, str) and value.isdigit():
        return max(int(value), 1)
    return None


def _project(record: dict[str, Any], select: tuple[str, ...]) -> dict[str, Any]:
    keys = select or tuple(record)
    out: dict[str, Any] = {}
    for key in keys:
        if key in record:
            value = record[key]
            if key in GUID_PROPERTIES:
                out[f"{key}@data.type"] = "System.Guid"
                out[f"{key}@odata.type"] = "#Guid"
            elif isinstance(value, list):
                out[f"{key}@odata.type"] = "#Collection(String)"
            out[key] = value
    return out


def _page_body(base: str, value: list[dict[str, Any]], warnings: list[str]) -> dict[str, Any]:
    return {
        "@odata.context": f"https://outlook.office365.com{base}/$metadata#Collection(Exchange.GenericHashTable)",
        "adminapi.warnings@odata.type": "#Collection(String)",
        "@adminapi.warnings": warnings,
        "value": value,
    }


def _error(status: int, exception_type: str, message: str, details: bool = True) -> dict[str, Any]:
    """Exchange's error envelope (tests/contracts/exchange/exchange.error.*.json).

    Usually the reason is in `details[].message` ("id|Type|text"); some 400s (a value that cannot be
    converted, an expired continuation) carry no details and hide it in `innererror.internalexception`.
    """
    code = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 429: "TooManyRequests"}.get(
        status, "InternalServerError"
    )
    generic = "Error executing cmdlet" if details else "Invalid Operation"
    if details:
        internal = {
            "message": f"Exception of type '{DIRECT_INVOKE}' was thrown.",
            "type": DIRECT_INVOKE,
            "stacktrace": "",
        }
    else:
        internal = {"message": message, "type": exception_type, "stacktrace": ""}
    error: dict[str, Any] = {"code": code, "message": generic}
    if details:
        error_id = "Ex" + secrets.token_hex(3).upper()
        error["details"] = [{"code": "Client", "target": "", "message": f"{error_id}|{exception_type}|{message}"}]
    error["innererror"] = {"message": generic, "type": ODATA_EXCEPTION, "stacktrace": "", "internalexception": internal}
    error["adminapi.warnings@odata.type"] = "#Collection(String)"
    error["@adminapi.warnings"] = []
    return {"error": error}


def _expired() -> Reply:
    return Reply.json(400, _error(400, ODATA_EXCEPTION, EXPIRED_CONTINUATION, details=False))


def _nul_403() -> Reply:
    # Measured on the real service: an unknown cmdlet gets a 403 whose "gzip" body is NUL bytes.
    return Reply(403, NUL_BODY, {"Content-Encoding": "gzip", "Content-Type": "application/json"})
