"""One HTTP client for Graph and Exchange, built in layers as httpx builds its own.

    ServiceClient.request   one logical call: refuses a URL outside the endpoint, then runs the attempt loop
      ├── BearerAuth        authentication: the cached token, and at most one refresh per call after a 401
      │                     (with the service's claims challenge)
      ├── classify()        the retry policy: what one attempt's answer or failure means, as a small typed
      │                     Decision (Done, Retry, Refresh, GiveUp); a pure function, no waits and no I/O
      ├── the loop          applies each Decision: counts attempts, waits (shared gate, backoff), raises when spent
      ├── InFlightLimit     how many calls may be in flight at once (halved on a concurrency refusal, regrown)
      ├── Clock             now(), sleep(), wall(): every wait and deadline goes through it (tests: a fake clock)
      └── Transport         (method, url, body, headers, timeouts) -> RawResponse, or raises a TransportError:
                            ConnectFailure (never reached the service) or ReadFailure (may have run).
                            Urllib3Transport by default; a plain function in tests.

    status_error()          the error a failed answer becomes by its status: one table for Exchange and Graph
                            (a 5xx to a write is OutcomeUnknownError: read the object back)

Why a hand-written policy rather than urllib3's Retry: it needs to read the *body* (Exchange signals
concurrency throttling in text, whatever the status), refresh the token on a 401, share a Retry-After
across threads, and refuse to replay a write whose outcome is unknown. urllib3 still does the pooling,
timeouts and connection handling underneath, in Urllib3Transport.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

import urllib3
from urllib3 import HTTPHeaderDict
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from shared.auth import TokenProvider, claims_challenge
from shared.errors import (
    BadRequestError,
    BudgetExhaustedError,
    CallContext,
    NotFoundError,
    OutcomeUnknownError,
    PermanentError,
    PermissionDeniedError,
    ServiceError,
    ServiceUnavailableError,
    ThrottledError,
    UnexpectedAnswerError,
)

__all__ = [
    "CONCURRENCY_REFUSALS_PER_CALL",
    "CONCURRENCY_TEXT",
    "RETRY_AFTER_CAP_SECONDS",
    "STATUS_ERRORS",
    "THROTTLED",
    "Clock",
    "ConnectFailure",
    "Decision",
    "Done",
    "GiveUp",
    "Policy",
    "RawResponse",
    "ReadFailure",
    "Refresh",
    "Response",
    "Retry",
    "ServiceClient",
    "SystemClock",
    "Timeouts",
    "Transport",
    "TransportError",
    "Tries",
    "Urllib3Transport",
    "backoff_ceiling",
    "classify",
    "decompress",
    "parse_retry_after",
    "status_error",
]

log = logging.getLogger("exoprov.http")

CONCURRENCY_TEXT = "maximum number of concurrent requests"
RETRYABLE_READ_STATUSES = frozenset({500, 502, 503, 504})
BACKOFF_CAP_SECONDS = 60.0
CONCURRENCY_REFUSALS_PER_CALL = 30  # refusals a call may meet before it is given up (each waits and halves)
GROW_AFTER_SUCCESSES = 8  # successful calls per unit of limit before one more may be in flight
THROTTLED = "throttled by the service"


# -- the transport: one HTTP exchange, nothing more -------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    """How long a transport may wait to connect, and then for each read of the answer."""

    connect: float
    read: float


@dataclass(frozen=True)
class RawResponse:
    """What a transport hands back: status, headers and the body (already decompressed)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class TransportError(Exception):
    """A request that got no HTTP answer. It never leaves ServiceClient.request: classify() turns it into a Decision.

    Raise a subclass: ConnectFailure when the service provably never saw the request, ReadFailure when it may
    have run it. A bare TransportError is treated as a ReadFailure (nothing proves the request was not run).
    """

    label = "no answer"  # what the call's log line says instead of a status

    def __init__(self, reason: str, label: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if label:
            self.label = label


class ConnectFailure(TransportError):
    """No connection was made (refused, unresolvable, connect timeout): the request was never sent."""

    label = "no connection"


class ReadFailure(TransportError):
    """The request went out but no complete answer came back (read timeout, reset): the service may have run it."""


class Transport(Protocol):
    """Sends one request and returns its answer; raises ConnectFailure or ReadFailure when there is none.

    No retries, no redirects, no authentication: the layers above decide all of that.
    """

    def __call__(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: Timeouts, /
    ) -> RawResponse: ...


class Urllib3Transport:
    """The default transport: a urllib3 pool (no retries, no redirects), gzip/deflate undone by decompress()."""

    def __init__(self, pool_size: int = 8) -> None:
        self._pool = urllib3.PoolManager(maxsize=pool_size, block=False, retries=False)

    def __call__(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: Timeouts, /
    ) -> RawResponse:
        try:
            raw = self._pool.request(
                method,
                url,
                body=body,
                headers=dict(headers),
                preload_content=False,
                decode_content=False,
                redirect=False,
                timeout=urllib3.Timeout(connect=timeout.connect, read=timeout.read),
            )
            try:
                data = raw.read(decode_content=False)
            finally:
                raw.release_conn()
        except (NewConnectionError, ConnectTimeoutError) as exc:
            raise ConnectFailure(_reason(exc)) from exc
        except (ReadTimeoutError, ProtocolError, HTTPError) as exc:
            raise ReadFailure(_reason(exc), type(exc).__name__) from exc
        return RawResponse(raw.status, raw.headers, decompress(data, raw.headers.get("Content-Encoding")))


def decompress(body: bytes, encoding: str | None) -> bytes:
    """Undo gzip/deflate, keeping the raw bytes when they are not really compressed (the NUL 403)."""
    if not body or not encoding or encoding.lower() not in ("gzip", "deflate"):
        return body
    try:
        return zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding.lower() == "gzip" else zlib.MAX_WBITS)
    except zlib.error:
        return body


# -- the clock: every wait goes through it ----------------------------------------------------------------


class Clock(Protocol):
    """Time as the client sees it: `now` for waits and deadlines, `sleep` to wait, `wall` for HTTP dates."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def wall(self) -> float: ...


class SystemClock:
    """The real clock: time.monotonic (the scale of every `deadline`), time.sleep, time.time."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wall(self) -> float:
        return time.time()


# -- what an answer is --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """A finished HTTP exchange: status, headers and the raw (decompressed when possible) body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    context: CallContext

    def json(self) -> Any:
        """The body as JSON, or None when it is empty or not JSON (e.g. the NUL-filled 403)."""
        text = self.body.strip(b"\x00 \r\n\t")
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None


def parse_retry_after(value: str | None, cap: float, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds, decimal seconds or HTTP date), capped.

    `now` is the wall-clock time (epoch seconds) an HTTP date is measured from; time.time() by default.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), cap)


# What a failed answer's status means when its body says nothing more specific; the same for Exchange and Graph.
# A 5xx is not in it: what a 5xx means depends on whether the call was a write (status_error).
STATUS_ERRORS: Mapping[int, type[ServiceError]] = {
    400: BadRequestError,
    401: PermissionDeniedError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: ThrottledError,
}
RETRY_AFTER_CAP_SECONDS = 300.0  # a Retry-After longer than this is read as this (Policy.max_retry_after's default)


def status_error(response: Response, message: str, *, write: bool) -> ServiceError:
    """The error a failed answer becomes by its status alone, for Exchange and Graph alike.

    Each client first looks for what the body says (a usage location, a write scope, a concurrency refusal) and
    calls this for the rest: STATUS_ERRORS; a 5xx to a read is ServiceUnavailableError; a 5xx to a write is
    OutcomeUnknownError, because the service may have run the write before it failed, so the caller reads the
    object back rather than take it as not done (classify() returns such an answer instead of replaying it);
    any other status is PermanentError. A ThrottledError carries the answer's Retry-After.
    """
    context = response.context
    if response.status >= 500:
        return OutcomeUnknownError(message, context) if write else ServiceUnavailableError(message, context)
    error = STATUS_ERRORS.get(response.status, PermanentError)
    if error is ThrottledError:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), RETRY_AFTER_CAP_SECONDS)
        return ThrottledError(message, context, retry_after)
    return error(message, context)


def _is_throttle(response: Response, retry_after: float | None) -> bool:
    if response.status == 429:
        return True
    if response.status == 503 and retry_after is not None:
        return True  # a 503 that says when to come back did not run the request: safe to replay
    return _is_concurrency_refusal(response)


def _is_concurrency_refusal(response: Response) -> bool:
    # Exchange reports its per-tenant concurrency limit in text only; its status is not on public record.
    return response.status >= 400 and CONCURRENCY_TEXT in response.body[:4096].decode("utf-8", "replace")


# -- the retry policy: one attempt in, one decision out -----------------------------------------------------


@dataclass(frozen=True)
class Tries:
    """Where a call stands: attempts spent, concurrency refusals met, and whether its one refresh is used."""

    spent: int = 0
    refusals: int = 0
    refreshed: bool = False

    def after(self, retry: Retry) -> Tries:
        return replace(self, spent=self.spent + retry.spends_attempt, refusals=self.refusals + retry.fewer_in_flight)


@dataclass(frozen=True)
class Done:
    """Hand this answer to the caller, whatever its status: the caller maps it (2xx, 4xx, a 5xx to a write)."""

    response: Response


@dataclass(frozen=True)
class Retry:
    """Send again after a wait.

    `wait` is what the service asked for (Retry-After, already capped); None means back off with full
    jitter, up to backoff_ceiling(`step`). A throttled retry, or any wait the service asked for, is
    *shared*: it holds every call to the service (the gate), not only this one. `reason` is what the
    call fails with if this was its last attempt.
    """

    reason: str
    wait: float | None = None
    step: int = 1
    throttled: bool = False
    spends_attempt: bool = True
    fewer_in_flight: bool = False  # a concurrency refusal: halve the in-flight limit

    @property
    def shared(self) -> bool:
        return self.throttled or self.wait is not None


@dataclass(frozen=True)
class Refresh:
    """The first 401 of the call: get a fresh token (with the claims challenge, if any) and send again.

    `response` is that 401, returned as it is when no fresh token can be had.
    """

    response: Response
    claims: str | None


@dataclass(frozen=True)
class GiveUp:
    """Stop now and raise `error` (a write whose answer was lost: replaying it could run it twice)."""

    error: ServiceError


Decision = Done | Retry | Refresh | GiveUp


def classify(
    result: Response | TransportError,
    *,
    write: bool,
    tries: Tries,
    context: CallContext,
    endpoint: str,
    max_retry_after: float,
    wall: float,
) -> Decision:
    """What one attempt's answer (or failure) means for the call; pure: no waits, no I/O, no shared state.

    The rules, in order:
    - no connection (ConnectFailure): the service never saw it, so Retry, write or not;
    - no complete answer (any other TransportError): Retry a read; GiveUp with OutcomeUnknownError on a write;
    - the first 401 of the call: Refresh (it spends no attempt); a second 401 is Done;
    - a concurrency refusal (its text, whatever the status): Retry that halves the in-flight limit and spends
      no attempt, up to CONCURRENCY_REFUSALS_PER_CALL times; after that it counts as throttling;
    - throttling (429, 503 with Retry-After): Retry after Retry-After, write or not (the service did not run it);
    - 500/502/503/504 to a read: Retry (after Retry-After if given); to a write it is Done (the caller reads back);
    - anything else is Done.
    `wall` is the wall-clock time an HTTP-date Retry-After is measured from.
    """
    attempt = tries.spent + 1
    if isinstance(result, ConnectFailure):
        return Retry(f"cannot reach {endpoint}: {result.reason}", step=attempt)
    if isinstance(result, TransportError):
        reason = f"no complete answer from {endpoint}: {result.reason}"
        if write:
            return GiveUp(OutcomeUnknownError(reason, context))
        return Retry(reason, step=attempt)
    response = result
    if response.status == 401 and not tries.refreshed:
        # One fresh token per call: a revoked or rotated token is normal, a loop is not.
        return Refresh(response, claims_challenge(response.headers.get("WWW-Authenticate")) or None)
    retry_after = parse_retry_after(response.headers.get("Retry-After"), max_retry_after, now=wall)
    if _is_concurrency_refusal(response) and tries.refusals < CONCURRENCY_REFUSALS_PER_CALL:
        # Too many of our own calls at once: fewer in flight from now on, and this one again. It spends no
        # attempt, or a small tenant limit would fail calls that only had to queue.
        step = min(tries.refusals + 1, 4)
        return Retry(THROTTLED, retry_after, step, throttled=True, spends_attempt=False, fewer_in_flight=True)
    if _is_throttle(response, retry_after):
        return Retry(THROTTLED, retry_after, attempt, throttled=True)
    if response.status in RETRYABLE_READ_STATUSES and not write:
        # A read is safe to repeat; wait as long as the service asked, or back off.
        return Retry(f"the service answered HTTP {response.status}", retry_after, attempt)
    return Done(response)


def backoff_ceiling(step: int, base: float) -> float:
    """The longest backoff before retry number `step` (1, 2, ...): base * 2**(step-1), at most BACKOFF_CAP_SECONDS."""
    return min(BACKOFF_CAP_SECONDS, base * 2.0 ** (step - 1))


# -- authentication --------------------------------------------------------------------------------------------


class BearerAuth:
    """The authentication layer: the cached bearer token for one resource, refreshed after a 401."""

    def __init__(self, tokens: TokenProvider, resource: str) -> None:
        self._tokens = tokens
        self._resource = resource

    def token(self) -> str:
        """The current token (the provider's cache, renewed shortly before it expires)."""
        return self._tokens.get(self._resource).value

    def refresh(self, refused: str, claims: str | None) -> bool:
        """Get a fresh token after `refused` drew a 401; False when sending again cannot help.

        With the service's claims challenge azure-identity bypasses its own cache, so the call goes out again.
        Without one it may hand back the very token just refused: resending that would only draw the same 401.
        """
        fresh = self._tokens.get(self._resource, refresh=True, claims=claims)
        return bool(claims) or fresh.value != refused


# -- how many calls at once ----------------------------------------------------------------------------------


class InFlightLimit:
    """How many calls may be in flight to a service at once: halved on a concurrency refusal, regrown slowly.

    Additive increase, multiplicative decrease (as TCP does): a tenant whose limit is 1 gets one call at a
    time after the first refusal, and a transient squeeze does not slow the rest of the run for ever.
    """

    def __init__(self, most: int) -> None:
        self.most = most  # 0: no limit
        self.limit = most
        self._in_flight = 0
        self._successes = 0
        self._cond = threading.Condition()

    def __enter__(self) -> None:
        if not self.most:
            return
        with self._cond:
            while self._in_flight >= self.limit:
                self._cond.wait()
            self._in_flight += 1

    def __exit__(self, *exc: object) -> None:
        if not self.most:
            return
        with self._cond:
            self._in_flight -= 1
            self._successes += exc[0] is None
            if self.limit < self.most and self._successes >= GROW_AFTER_SUCCESSES * self.limit:
                self.limit += 1
                self._successes = 0
                log.info("in-flight limit back up to %d", self.limit)
            self._cond.notify_all()

    def refused(self) -> None:
        """The service refused a call for concurrency: halve what we send at once (never below one)."""
        if not self.most:
            return
        with self._cond:
            lower = max(1, self.limit // 2)
            if lower < self.limit:
                log.warning("the service refused concurrent calls; in-flight limit %d -> %d", self.limit, lower)
            self.limit = lower
            self._successes = 0


# -- the client ------------------------------------------------------------------------------------------------


@dataclass
class Policy:
    """The tunable parts of the policy; defaults suit production, tests shorten the waits."""

    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    max_attempts: int = 6
    max_retry_after: float = 300.0
    backoff_base: float = 1.0
    pool_size: int = 8
    max_in_flight: int = 0  # calls at once to the service from this process; 0 = no limit


@dataclass
class ServiceClient:
    """Sends requests to one service's base URL with a token for one resource, under the policy.

    `transport` defaults to a Urllib3Transport with the policy's pool size, `clock` to the system clock.
    """

    service: str
    base_url: str
    resource: str
    endpoint_setting: str
    tokens: TokenProvider
    policy: Policy = field(default_factory=Policy)
    transport: Transport | None = field(default=None, kw_only=True, repr=False)
    clock: Clock = field(default_factory=SystemClock, kw_only=True, repr=False)

    def __post_init__(self) -> None:
        self._transport: Transport = self.transport or Urllib3Transport(self.policy.pool_size)
        self._timeouts = Timeouts(self.policy.connect_timeout, self.policy.read_timeout)
        self._auth = BearerAuth(self.tokens, self.resource)
        # Shared by every thread: once the service says "wait", nobody calls it before then.
        self.in_flight = InFlightLimit(self.policy.max_in_flight)
        self._not_before = 0.0
        self._gate = threading.Lock()
        self._counting = threading.Lock()
        self.sent = 0  # requests that went out (attempts, retries included): what a report says it cost

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        write: bool,
        operation: str,
        target: str = "",
        deadline: float | None = None,
    ) -> Response:
        """Send one logical call, retrying what is safe to retry (see classify), and return the answer.

        `write` marks calls that change state: they are replayed only when the service provably did not run
        them (no connection was made, throttling). `deadline` is a `clock.now()` (time.monotonic) instant.

        Returns the Response whatever its status once no retry applies: 2xx, a 4xx, a second 401 (or a first
        one when the credential had no other token to offer), a 5xx to a write. The caller maps it.

        Raises:
            UnexpectedAnswerError: `url` is outside `base_url`; nothing is sent (the token goes nowhere else).
            OutcomeUnknownError: a write went out but no complete answer came back; it is not replayed.
            BudgetExhaustedError: the next wait (Retry-After, another call's hold, or backoff) would end after
                `deadline`; raised before sleeping.
            ThrottledError: policy.max_attempts attempts spent and the last was throttled (429, 503 with
                Retry-After, or more than CONCURRENCY_REFUSALS_PER_CALL concurrency refusals); carries the
                last Retry-After.
            ServiceUnavailableError: policy.max_attempts attempts spent on no connection, lost answers to a
                read, or 5xx answers to a read; the message gives the last reason and names the endpoint setting.
            TokenUnavailableError, AuthenticationError: from the token provider, getting or refreshing a token.
        A 401 refresh and a concurrency refusal spend no attempt.
        """
        context = CallContext(self.service, operation, target, str(uuid.uuid4()))
        if not url.startswith(self.base_url + "/"):
            # A token for this resource must never travel anywhere but this service's endpoint.
            raise UnexpectedAnswerError(
                f"refusing to call {_origin(url)}: it is outside {self.endpoint_setting}={self.base_url}, and "
                f"exoprov sends its {self.service} token nowhere else (a link the service returned points elsewhere; "
                f"if the service really moved, set {self.endpoint_setting})",
                context,
            )
        payload = json.dumps(body).encode() if body is not None else None
        tries = Tries()
        while True:
            self._wait_for_gate(context, deadline)
            token = self._auth.token()
            result = self._attempt(method, url, payload, headers, token, context, tries.spent + 1, operation)
            decision = classify(
                result,
                write=write,
                tries=tries,
                context=context,
                endpoint=self.base_url,
                max_retry_after=self.policy.max_retry_after,
                wall=self.clock.wall(),
            )
            match decision:
                case Done(response):
                    return response
                case GiveUp(error):
                    raise error from (result if isinstance(result, TransportError) else None)
                case Refresh(response, claims):
                    if not self._auth.refresh(token, claims):
                        return response  # the credential handed back the token just refused (its own cache)
                    tries = replace(tries, refreshed=True)
                case Retry():
                    tries = self._retry(decision, tries, context, deadline)

    def hold(self, seconds: float) -> None:
        """Send nothing to this service for `seconds` (a Retry-After found inside a $batch item)."""
        self._hold_until(self.clock.now() + min(seconds, self.policy.max_retry_after))

    def _attempt(
        self,
        method: str,
        url: str,
        payload: bytes | None,
        headers: Mapping[str, str] | None,
        token: str,
        context: CallContext,
        attempt: int,
        operation: str,
    ) -> Response | TransportError:
        """One trip through the transport, under the in-flight limit, logged in one line."""
        started = self.clock.now()
        with self._counting:  # several threads send at once: a plain += could lose one
            self.sent += 1
        result: Response | TransportError
        try:
            with self.in_flight:
                result = self._send(method, url, payload, headers, token, context)
        except TransportError as failure:
            result = failure
        outcome = str(result.status) if isinstance(result, Response) else result.label
        log.info(
            "%s %s %s%s -> %s in %.0f ms (attempt %d, cid %s)",
            self.service,
            method,
            operation,
            f" [{context.target}]" if context.target else "",
            outcome,
            (self.clock.now() - started) * 1000,
            attempt,
            context.correlation_id,
        )
        return result

    def _send(
        self,
        method: str,
        url: str,
        payload: bytes | None,
        headers: Mapping[str, str] | None,
        token: str,
        context: CallContext,
    ) -> Response:
        all_headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Accept-Encoding": "gzip",
            "client-request-id": context.correlation_id,
            "return-client-request-id": "true",
            **(headers or {}),
        }
        if payload is not None:
            all_headers["Content-Type"] = "application/json"
        raw = self._transport(method, url, payload, all_headers, self._timeouts)
        context.status = raw.status
        answer_headers = raw.headers if isinstance(raw.headers, HTTPHeaderDict) else HTTPHeaderDict(raw.headers)
        return Response(raw.status, answer_headers, raw.body, context)

    def _retry(self, retry: Retry, tries: Tries, context: CallContext, deadline: float | None) -> Tries:
        """Apply a Retry: halve the in-flight limit, hold or wait, count the attempt; raise when none are left."""
        if retry.fewer_in_flight:
            self.in_flight.refused()
        # Full jitter below the ceiling: spreads retries of many threads instead of moving the storm.
        wait = (
            retry.wait
            if retry.wait is not None
            else random.uniform(0, backoff_ceiling(retry.step, self.policy.backoff_base))
        )
        if retry.shared:
            self._hold_until(self.clock.now() + wait)  # the gate, at the top of the next attempt, waits
            log.info("%s throttled, waiting %.2f s (cid %s)", self.service, wait, context.correlation_id)
        tries = tries.after(retry)
        if tries.spent >= self.policy.max_attempts:
            raise self._spent(retry, context)
        if not retry.shared:
            self._sleep_within(wait, deadline, f"{retry.reason}; no time left in the budget to retry", context)
        return tries

    def _spent(self, last: Retry, context: CallContext) -> ServiceError:
        """The error of a call whose attempts are all spent, after `last` asked for one more."""
        attempts = self.policy.max_attempts
        if last.throttled:
            return ThrottledError(f"still throttled after {attempts} attempts", context, last.wait)
        return ServiceUnavailableError(
            f"{last.reason} after {attempts} attempts; check {self.endpoint_setting} and the service health",
            context,
        )

    def _hold_until(self, instant: float) -> None:
        with self._gate:
            self._not_before = max(self._not_before, instant)

    def _wait_for_gate(self, context: CallContext, deadline: float | None) -> None:
        with self._gate:
            wait = self._not_before - self.clock.now()
        if wait > 0:
            why = f"the service asked for a {wait:.1f} s wait, beyond the time budget"
            self._sleep_within(wait, deadline, why, context)

    def _sleep_within(self, wait: float, deadline: float | None, why: str, context: CallContext) -> None:
        """Wait `wait` seconds, or raise BudgetExhaustedError(`why`) at once if that would end past `deadline`."""
        if deadline is not None and self.clock.now() + wait > deadline:
            raise BudgetExhaustedError(why, context)
        self.clock.sleep(wait)


def _origin(url: str) -> str:
    """Scheme, host and port of a URL: enough to name it in an error without echoing a query or a password."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}"


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    return text.split(": ", 1)[-1] if "Failed to establish" in text else text
