"""Exchange Online admin API client: InvokeCommand, paging by POST to nextLink, $batch, error mapping.

The wire protocol is the one the ExchangeOnlineManagement module uses (docs/wire-protocols.md, "Exchange
Online admin API"): tenant GUID in the path, an app anchor mailbox, `Prefer: odata.maxpagesize`,
`$select`, continuation by POSTing the same body to `@odata.nextLink`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from urllib3 import HTTPHeaderDict

from shared.errors import (
    CallContext,
    DualWriteError,
    ExoprovError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    ServiceUnavailableError,
    ThrottledError,
    UnknownCmdletError,
    WriteScopeError,
)
from shared.http import (
    CONCURRENCY_TEXT,
    RETRY_AFTER_CAP_SECONDS,
    Response,
    ServiceClient,
    parse_retry_after,
    status_error,
)

__all__ = [
    "APP_ANCHOR",
    "BATCH_LIMIT",
    "ROLE",
    "BatchItem",
    "CmdletResult",
    "Command",
    "ExchangeClient",
    "batch_items",
    "map_error",
]

APP_ANCHOR = "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@%s"
MAX_PAGE_SIZE = 1000
BATCH_LIMIT = 10  # what CIPP and ORADAZ use; the service maximum is unconfirmed
ROLE = "Exchange.ManageAsApp"
WRITE_SCOPE_MARKERS = (
    "write scope",
    "synchronized from your on-premises organization",
    "on-premises mastered",
)


@dataclass(frozen=True)
class Command:
    """One cmdlet call: name, parameters and the properties to return."""

    cmdlet: str
    parameters: dict[str, Any] = field(default_factory=dict)
    select: tuple[str, ...] = ()

    @property
    def write(self) -> bool:
        """Anything but a Get- changes state, so its replay must be deliberate."""
        return not self.cmdlet.startswith("Get-")

    @property
    def target(self) -> str:
        return str(self.parameters.get("Identity", ""))

    def body(self) -> dict[str, Any]:
        return {"CmdletInput": {"CmdletName": self.cmdlet, "Parameters": self.parameters}}


@dataclass(frozen=True)
class CmdletResult:
    """What a cmdlet returned: its objects (annotations dropped) and its warnings."""

    value: list[dict[str, Any]]
    warnings: list[str]

    @property
    def unchanged(self) -> bool:
        """Whether a Set- cmdlet said it changed nothing (the object already had the values)."""
        return any("have been modified" in warning for warning in self.warnings)


@dataclass(frozen=True)
class BatchItem:
    """One item of a $batch: the command and either its result or the error it ended with."""

    command: Command
    result: CmdletResult | None = None
    error: ExoprovError | None = None


class ExchangeClient:
    """Runs cmdlets in one tenant over the admin API, mapping every failure into shared.errors."""

    def __init__(self, http: ServiceClient, tenant_id: str) -> None:
        self._http = http
        self.http = http
        self.tenant_id = tenant_id
        self._root = f"{http.base_url}/adminapi/beta/{tenant_id}"
        self._headers = {
            "X-AnchorMailbox": APP_ANCHOR % tenant_id,
            "X-ResponseFormat": "json",
        }

    def invoke(self, command: Command, *, deadline: float | None = None) -> CmdletResult:
        """Run one cmdlet and return every object it yields, all pages read."""
        value: list[dict[str, Any]] = []
        warnings: list[str] = []
        for page in self._pages(command, MAX_PAGE_SIZE, deadline):
            value.extend(page.value)
            warnings.extend(page.warnings)
        return CmdletResult(value, warnings)

    def pages(
        self, command: Command, *, page_size: int = MAX_PAGE_SIZE, deadline: float | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the objects page by page; the caller must not dawdle, continuation links expire."""
        for page in self._pages(command, page_size, deadline):
            yield page.value

    def first_page(self, command: Command, *, page_size: int) -> list[dict[str, Any]]:
        """The first page only: how to read "a few" objects (a numeric ResultSize ends in a link nobody can follow)."""
        return next(self.pages(command, page_size=page_size), [])

    def batch(self, commands: Sequence[Command], *, deadline: float | None = None) -> list[BatchItem]:
        """Run up to BATCH_LIMIT cmdlets in one $batch; each item ends in a result or an error."""
        if not 0 < len(commands) <= BATCH_LIMIT:
            raise ValueError(f"a batch holds 1 to {BATCH_LIMIT} commands, not {len(commands)}")
        requests = [
            {
                "id": str(index),
                "method": "POST",
                "url": self._invoke_url(command.select),
                "headers": {"Content-Type": "application/json", **self._headers, "X-CmdletName": command.cmdlet},
                "body": command.body(),
            }
            for index, command in enumerate(commands)
        ]
        response = self._http.request(
            "POST",
            f"{self._root}/$batch",
            body={"requests": requests},
            headers={**self._headers, "Prefer": "odata.continue-on-error"},
            write=any(command.write for command in commands),
            operation=f"$batch {commands[0].cmdlet} x{len(commands)}",
            deadline=deadline,
        )
        payload = response.json()
        if not 200 <= response.status < 300 or not isinstance(payload, dict):
            raise map_error(response, write=any(c.write for c in commands))
        items = batch_items(payload, commands, response.context.correlation_id)
        for batch_item in items:
            if isinstance(batch_item.error, ThrottledError):
                self._http.hold(batch_item.error.retry_after or 1.0)
        return items

    def _pages(self, command: Command, page_size: int, deadline: float | None) -> Iterator[CmdletResult]:
        url: str | None = self._invoke_url(command.select)
        headers = {
            **self._headers,
            "X-CmdletName": command.cmdlet,
            "Prefer": f"odata.maxpagesize={min(page_size, MAX_PAGE_SIZE)}",
        }
        page_number = 0
        while url:
            page_number += 1
            response = self._http.request(
                "POST",
                url,
                body=command.body(),
                headers=headers,
                write=command.write,
                operation=f"InvokeCommand {command.cmdlet}" + (f" page {page_number}" if page_number > 1 else ""),
                target=command.target,
                deadline=deadline,
            )
            payload = response.json()
            if not 200 <= response.status < 300:
                raise map_error(response, write=command.write)
            yield _result(payload)  # a 2xx without a JSON body (a Set- that returns nothing) is an empty page
            next_link = payload.get("@odata.nextLink")
            url = next_link if isinstance(next_link, str) and next_link else None

    def _invoke_url(self, select: Sequence[str]) -> str:
        url = f"{self._root}/InvokeCommand"
        if select:
            url += "?$select=" + quote(",".join(select), safe=",")
        return url


def batch_items(payload: dict[str, Any], commands: Sequence[Command], correlation_id: str) -> list[BatchItem]:
    """One BatchItem per command from a $batch answer, matched by item id (the order is not promised)."""
    by_id = {str(item.get("id")): item for item in payload.get("responses", []) if isinstance(item, dict)}
    items = []
    for index, command in enumerate(commands):
        item = by_id.get(str(index))
        context = CallContext("exchange", command.cmdlet, command.target, correlation_id)
        if item is None:
            error: ExoprovError = OutcomeUnknownError("the $batch answer has no item for this command", context)
            items.append(BatchItem(command, error=error))
            continue
        status = int(item.get("status", 0))
        context.status = status
        body = item.get("body")
        if 200 <= status < 300:
            items.append(BatchItem(command, result=_result(body)))
            continue
        item_response = Response(status, _headers(item.get("headers")), _encode(body), context)
        items.append(BatchItem(command, error=map_error(item_response, write=command.write)))
    return items


def map_error(response: Response, *, write: bool) -> ExoprovError:
    """Turn a failed Exchange answer into the exception a caller can act on."""
    context = response.context
    status = response.status
    payload = response.json()
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {}
    exception_type, text = _details(error)
    text = text or str(error.get("message") or "").strip()
    if payload is None:
        # Not JSON: the per-tenant concurrency refusal, for one, is plain text (a NUL-filled body gives "").
        text = response.body.strip(b"\x00 \r\n\t").decode("utf-8", "replace")[:2000]
    exception_type = exception_type or response.headers.get("X-ExceptionType", "")
    diagnostics = response.headers.get("x-ms-diagnostics", "")
    if status == 401:
        return PermissionDeniedError(
            f"Exchange refused the token ({diagnostics or text or 'no reason given'}). The identity "
            f"needs the {ROLE} application role on Office 365 Exchange Online, with admin consent",
            context,
        )
    if status == 403 and diagnostics:
        return PermissionDeniedError(
            f"Exchange denied {context.operation}: {diagnostics}. Check the identity's Exchange role "
            "(Exchange Administrator) and its management scope",
            context,
        )
    if status == 403 and not response.body.strip(b"\x00 \r\n\t"):
        return UnknownCmdletError(
            f"Exchange answered 403 with an empty body to {context.operation}: the cmdlet does not exist, the "
            "identity has the Exchange.ManageAsApp role but no Exchange directory role, or its Exchange role does "
            "not include this cmdlet (assign Exchange Administrator, or a role group with Mail Recipients)",
            context,
        )
    if status == 403:
        return PermissionDeniedError(
            f"Exchange denied {context.operation}: {text or 'no reason given'}. Check the identity's Exchange role "
            "(Exchange Administrator) and its management scope",
            context,
        )
    if CONCURRENCY_TEXT in text or status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), RETRY_AFTER_CAP_SECONDS)
        return ThrottledError(text or "throttled", context, retry_after)
    if status == 404 or "ManagementObjectNotFoundException" in exception_type or "couldn't be found" in text:
        return NotFoundError(text or "not found", context)
    # Microsoft's DualWrite text says "may be transient", but when it names on-premises mastered
    # objects no retry can help: the attribute belongs to AD. Only other DualWrite failures are retried.
    if any(marker in text for marker in WRITE_SCOPE_MARKERS):
        return WriteScopeError(text, context)
    if "DualWrite" in text:
        return DualWriteError(text, context)
    if not text:
        # Exchange's own rule, whatever the status: an error with no message has been seen on writes that did
        # apply, so a write is settled by reading back, and a read is tried again.
        message = f"HTTP {status} with no error message"
        if write:
            return OutcomeUnknownError(message, context)
        return ServiceUnavailableError(message, context)
    return status_error(response, text, write=write)  # the status table Graph uses too


def _details(error: dict[str, Any]) -> tuple[str, str]:
    """The exception type and text from `error.details[].message` ("id|ExceptionType|text").

    Some real 400s carry no details: then the reason and its specific type are one level down, in
    `error.innererror.internalexception` (`innererror.type` only names the generic OData exception).
    """
    for detail in error.get("details") or []:
        message = str(detail.get("message", "")) if isinstance(detail, dict) else ""
        if not message.strip():
            continue
        parts = message.split("|", 2)
        if len(parts) == 3:
            return parts[1], parts[2].strip()
        return "", message.strip()
    inner = _key(error, "innererror")
    exception = _key(inner, "internalexception")
    text = str(_key(exception, "message") or _key(inner, "message") or "").strip()
    kind = str(_key(exception, "type") or _key(inner, "type") or "")
    return kind, text


def _key(data: Any, name: str) -> Any:
    """`data[name]` ignoring the key's case (clients have seen both innererror and innerError)."""
    if not isinstance(data, dict):
        return None
    return next((value for key, value in data.items() if key.lower() == name), None)


def _result(payload: Any) -> CmdletResult:
    payload = payload if isinstance(payload, dict) else {}
    value = payload.get("value") or []
    warnings = payload.get("@adminapi.warnings") or []
    return CmdletResult(
        [_clean(item) for item in value if isinstance(item, dict)],
        [str(w) for w in warnings],
    )


def _clean(item: dict[str, Any]) -> dict[str, Any]:
    """Drop the OData annotations (`Prop@odata.type`) that ride along with every value."""
    return {key: value for key, value in item.items() if "@" not in key}


def _headers(raw: Any) -> Mapping[str, str]:
    headers = HTTPHeaderDict()
    if isinstance(raw, dict):
        for key, value in raw.items():
            headers[str(key)] = str(value)
    return headers


def _encode(body: Any) -> bytes:
    return json.dumps(body).encode() if body is not None else b""
