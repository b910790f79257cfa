"""Every error exoprov raises, in one tree.

The root splits on the one question every caller asks: will the same call succeed later?

    ExoprovError
    ├── ConfigurationError          a setting is missing or malformed; fix the environment
    ├── TransientError              the same call may succeed later; retry with backoff
    │   ├── ThrottledError          429 / "concurrent requests per tenant" (carries retry_after)
    │   ├── ServiceUnavailableError 5xx or a network failure before the request was processed
    │   ├── OutcomeUnknownError     a write may or may not have happened; settle it by reading back
    │   ├── DualWriteError          Exchange could not write through to Entra ("DualWrite")
    │   ├── TokenUnavailableError   the identity endpoint failed to issue a token this time
    │   ├── RequestBusyError        another delivery is working on the same request right now
    │   ├── StorageUnavailableError the storage account (queues, ledger) did not answer
    │   │   └── JournalUnavailableError the journal could not be written, so the write was not made
    │   └── BudgetExhaustedError    waiting to retry would overrun the caller's time budget
    └── PermanentError              retrying the same call cannot help
        ├── AuthenticationError     the identity is misconfigured: no token can be had for a resource
        ├── PermissionDeniedError   401/403: the identity lacks a role, consent or RBAC scope
        │   └── UnknownCmdletError  403 with an empty body: cmdlet unknown or outside RBAC
        ├── NotFoundError           the object does not exist (yet: replication lags)
        ├── BadRequestError         the service refused a parameter or the request shape
        ├── UnexpectedAnswerError   a 2xx the client cannot follow (a nextLink to another host)
        ├── WriteScopeError         the object is mastered on-premises (B7, B18, B21, B23)
        └── LicenseError            a license cannot be assigned or removed as asked
            ├── UsageLocationError      the user has no usage location (`usage_location_missing`)
            ├── NoLicensesError         the subscription has no free units (`no_licenses_available`)
            └── LicenseInheritedError   the license comes from a group (`license_inherited`)
    InvalidRequestError         an HR request breaks its contract (`invalid_request`, `license_not_allowed`)

Every class has a `code`, a short name for the error. A provisioning result carries only a code of the
fixed list CONTRACT_CODES (docs/contracts.md, "Result message"): `result_code(exc)` is the error's own code
when the list has it, and `internal_error` otherwise (`error.message` keeps the original text). The list
is the HR system's contract: a new class never adds a code to it.

Catch `TransientError` to decide on retrying, `PermanentError` to end a unit of work, and
`ExoprovError` at a runtime boundary (CLI, function, worker) so that nothing escapes unexplained.
Which error a failed HTTP answer becomes, for Exchange and Graph alike, is `shared/http.py:status_error`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONTRACT_CODES",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExhaustedError",
    "CallContext",
    "ConfigurationError",
    "DualWriteError",
    "ExoprovError",
    "InvalidRequestError",
    "JournalUnavailableError",
    "LicenseError",
    "LicenseInheritedError",
    "NoLicensesError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PermanentError",
    "PermissionDeniedError",
    "RequestBusyError",
    "ServiceError",
    "ServiceUnavailableError",
    "StorageUnavailableError",
    "ThrottledError",
    "TokenUnavailableError",
    "TransientError",
    "UnexpectedAnswerError",
    "UnknownCmdletError",
    "UsageLocationError",
    "WriteScopeError",
    "first_line",
    "result_code",
]

# The codes a provisioning result may carry: the result contract (docs/contracts.md, "Result message").
CONTRACT_CODES = frozenset(
    {
        "invalid_request",
        "license_not_allowed",
        "user_not_found",
        "usage_location_missing",
        "no_licenses_available",
        "mailbox_timeout",
        "conversion_unverified",
        "license_inherited",
        "permission_denied",
        "internal_error",
    }
)


class ExoprovError(Exception):
    """Base of every exoprov error; `str()` is a sentence a person can act on."""

    code = "internal_error"


class ConfigurationError(ExoprovError):
    """A setting is missing or malformed; the message names it and the accepted form."""

    code = "configuration_error"

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


@dataclass
class CallContext:
    """What a person needs to find a failed call again: service, operation, target, correlation id."""

    service: str
    operation: str
    target: str = ""
    correlation_id: str = ""
    status: int | None = None

    def describe(self) -> str:
        parts = [f"{self.service} {self.operation}"]
        if self.target:
            parts.append(f"on {self.target!r}")
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.correlation_id:
            parts.append(f"client-request-id {self.correlation_id}")
        return ", ".join(parts)


class ServiceError(ExoprovError):
    """An error reported by (or on the way to) Exchange Online or Microsoft Graph."""

    def __init__(self, message: str, context: CallContext | None = None) -> None:
        self.context = context
        super().__init__(f"{message} ({context.describe()})" if context else message)


class TransientError(ServiceError):
    """The same call may succeed later."""

    code = "transient_error"


class ThrottledError(TransientError):
    """The service asked us to slow down; `retry_after` is its wish in seconds, when it gave one."""

    code = "throttled"

    def __init__(self, message: str, context: CallContext | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, context)
        self.retry_after = retry_after


class ServiceUnavailableError(TransientError):
    """A 5xx answer or a network failure that left nothing half done."""

    code = "service_unavailable"


class OutcomeUnknownError(TransientError):
    """A write was sent but its outcome is unclear (timeout, empty error); read the object back."""

    code = "outcome_unknown"


class DualWriteError(TransientError):
    """Exchange's write-through to Entra failed; Microsoft says it may pass "a couple of minutes later"."""

    code = "dual_write"


class TokenUnavailableError(TransientError):
    """The token endpoint failed (an outage, a 5xx); the credential itself is configured."""

    code = "token_unavailable"


class RequestBusyError(TransientError):
    """Another delivery holds the request's ledger entry; this message is tried again later."""

    code = "request_busy"


class StorageUnavailableError(TransientError):
    """The storage account behind the queues and the ledger did not answer; the message names it."""

    code = "storage_unavailable"


class JournalUnavailableError(StorageUnavailableError):
    """The change journal could not record an intent (so the write was not made) or be read."""

    code = "journal_unavailable"


class BudgetExhaustedError(TransientError):
    """A retry was due, but the wait (Retry-After or backoff) would end after the caller's deadline."""

    code = "time_budget_exhausted"


class PermanentError(ServiceError):
    """Retrying the same call cannot help."""

    code = "permanent_error"


class AuthenticationError(PermanentError):
    """No credential is configured that could give a token; the message says which ones exist."""

    code = "permission_denied"  # for the HR system it is the same: the identity cannot act


class PermissionDeniedError(PermanentError):
    """The identity lacks an app role, admin consent or RBAC scope for this call."""

    code = "permission_denied"


class UnknownCmdletError(PermissionDeniedError):
    """Exchange answered 403 with an empty (NUL-filled) body: unknown cmdlet, or one outside RBAC."""

    code = "permission_denied"


class NotFoundError(PermanentError):
    """The object does not exist, or has not replicated yet."""

    code = "not_found"


class BadRequestError(PermanentError):
    """The service refused a parameter or the request shape."""

    code = "bad_request"


class UnexpectedAnswerError(PermanentError):
    """The service answered in a way the client cannot follow safely, e.g. a nextLink to another host."""

    code = "unexpected_answer"


class WriteScopeError(PermanentError):
    """The object's attributes are mastered on-premises, so the cloud write was refused."""

    code = "write_scope"


class LicenseError(PermanentError):
    """Graph refused to assign or remove a license as asked."""

    code = "license_error"


class UsageLocationError(LicenseError):
    """No usage location: Graph cannot assign a license without one."""

    code = "usage_location_missing"


class NoLicensesError(LicenseError):
    """The subscription has no free units left (or the tenant has no such subscription)."""

    code = "no_licenses_available"


class LicenseInheritedError(LicenseError):
    """The license comes from a group membership and cannot be removed from the user directly."""

    code = "license_inherited"


class InvalidRequestError(ExoprovError):
    """An HR request breaks its contract; `field` names the offending field, `request_id` is kept if readable."""

    code = "invalid_request"

    def __init__(
        self,
        field: str,
        problem: str,
        request_id: str | None = None,
        code: str = "invalid_request",
        upn: str | None = None,
    ) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.request_id = request_id
        self.code = code
        self.upn = upn


def result_code(exc: ExoprovError) -> str:
    """The code a provisioning result carries for `exc`: its own code if the contract has it, else `internal_error`."""
    return exc.code if exc.code in CONTRACT_CODES else "internal_error"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (SDK errors run to pages), or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
