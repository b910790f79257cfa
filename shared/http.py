"""One request policy for Graph and Exchange: timeouts, Retry-After, backoff, one 401 refresh, logs.

Why a hand-written loop rather than urllib3's Retry: the policy needs to read the *body* (Exchange
signals concurrency throttling in text, whatever the status), refresh the token on a 401, share a
Retry-After across threads, and refuse to replay a write whose outcome is unknown. urllib3 still does
the pooling, timeouts and connection handling underneath.
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
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from shared.auth import TokenProvider, claims_challenge
from shared.errors import (
    BudgetExhaustedError,
    CallContext,
    OutcomeUnknownError,
    ServiceUnavailableError,
    ThrottledError,
    UnexpectedAnswerError,
)

log = logging.getLogger("exoprov.http")

CONCURRENCY_TEXT = "maximum number of concurrent requests"
RETRYABLE_READ_STATUSES = frozenset({500, 502, 503, 504})
BACKOFF_CAP_SECONDS = 60.0
CONCURRENCY_REFUSALS_PER_CALL = 30  # refusals a call may meet before it is given up (each waits and halves)
GROW_AFTER_SUCCESSES = 8  # successful calls per unit of limit before one more may be in flight


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


def parse_retry_after(value: str | None, cap: float) -> float | None:
    """Seconds to wait from a Retry-After header (seconds, decimal seconds or HTTP date), capped."""
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
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), cap)


def decompress(body: bytes, encoding: str | None) -> bytes:
    """Undo gzip/deflate, keeping the raw bytes when they are not really compressed (the NUL 403)."""
    if not body or not encoding or encoding.lower() not in ("gzip", "deflate"):
        return body
    try:
        return zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding.lower() == "gzip" else zlib.MAX_WBITS)
    except zlib.error:
        return body


@dataclass
class ServiceClient:
    """Sends requests to one service's base URL with a token for one resource, under the policy."""

    service: str
    base_url: str
    resource: str
    endpoint_setting: str
    tokens: TokenProvider
    policy: Policy = field(default_factory=Policy)

    def __post_init__(self) -> None:
        self._pool = urllib3.PoolManager(
            maxsize=self.policy.pool_size,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=self.policy.connect_timeout, read=self.policy.read_timeout),
        )
        # Shared by every thread: once the service says "wait", nobody calls it before then.
        self.in_flight = InFlightLimit(self.policy.max_in_flight)
        self._not_before = 0.0
        self._gate = threading.Lock()

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
        """Send one logical call, retrying what is safe to retry; raise transient errors when spent.

        `write` marks calls that change state: they are replayed only when the service said it did
        not run them (throttling, a refused connection); anything ambiguous raises OutcomeUnknownError.
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
        refreshed = refresh_now = False
        claims: str | None = None
        refused: str | None = None  # the token a 401 refused
        last_401: Response | None = None
        last_error = ""
        last_retry_after: float | None = None
        attempt = refusals = 0
        while attempt < self.policy.max_attempts:
            attempt += 1
            self._wait_for_gate(context, deadline)
            token = self.tokens.get(self.resource, refresh=refresh_now, claims=claims)
            if refresh_now and not claims and token.value == refused and last_401 is not None:
                # The credential handed back the token just refused (its own cache): resending it is pointless.
                return last_401
            refresh_now, claims = False, None
            started = time.monotonic()
            try:
                with self.in_flight:
                    response = self._send(method, url, payload, headers, token.value, context)
            except (NewConnectionError, ConnectTimeoutError) as exc:
                # Never reached the service: safe to try again, write or not.
                last_error = f"cannot reach {self.base_url}: {_reason(exc)}"
                self._log(method, operation, "no connection", started, attempt, context)
                self._backoff(attempt, context, deadline, last_error)
                continue
            except (ReadTimeoutError, ProtocolError, HTTPError) as exc:
                self._log(method, operation, type(exc).__name__, started, attempt, context)
                last_error = f"no complete answer from {self.base_url}: {_reason(exc)}"
                if write:
                    raise OutcomeUnknownError(last_error, context) from exc
                self._backoff(attempt, context, deadline, last_error)
                continue
            context.status = response.status
            self._log(method, operation, str(response.status), started, attempt, context)
            if response.status == 401 and not refreshed:
                # One fresh token per call: a revoked or rotated token is normal, a loop is not. With the
                # service's claims challenge azure-identity bypasses its cache; without one it may not.
                refreshed = refresh_now = True
                claims = claims_challenge(response.headers.get("WWW-Authenticate")) or None
                refused, last_401 = token.value, response
                continue
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self.policy.max_retry_after)
            if _is_concurrency_refusal(response) and refusals < CONCURRENCY_REFUSALS_PER_CALL:
                # Too many of our own calls at once: fewer in flight from now on, and this one again. It
                # spends no attempt, or a small tenant limit would fail calls that only had to queue.
                refusals += 1
                attempt -= 1
                last_error = "throttled by the service"
                self.in_flight.refused()
                self._throttle(retry_after, min(refusals, 4), context, deadline)
                continue
            if _is_throttle(response, retry_after):
                last_error = "throttled by the service"
                last_retry_after = retry_after
                self._throttle(retry_after, attempt, context, deadline)
                continue
            if response.status in RETRYABLE_READ_STATUSES and not write:
                # A read is safe to repeat; wait as long as the service asked, or back off.
                last_error = f"the service answered HTTP {response.status}"
                if retry_after is not None:
                    self._throttle(retry_after, attempt, context, deadline)
                else:
                    self._backoff(attempt, context, deadline, last_error)
                continue
            return response
        if last_error.startswith("throttled"):
            raise ThrottledError(
                f"still throttled after {self.policy.max_attempts} attempts", context, last_retry_after
            )
        raise ServiceUnavailableError(
            f"{last_error} after {self.policy.max_attempts} attempts; check {self.endpoint_setting} "
            "and the service health",
            context,
        )

    def hold(self, seconds: float) -> None:
        """Send nothing to this service for `seconds` (a Retry-After found inside a $batch item)."""
        with self._gate:
            self._not_before = max(self._not_before, time.monotonic() + min(seconds, self.policy.max_retry_after))

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
        raw = self._pool.request(
            method,
            url,
            body=payload,
            headers=all_headers,
            preload_content=False,
            decode_content=False,
            redirect=False,
        )
        try:
            data = raw.read(decode_content=False)
        finally:
            raw.release_conn()
        body = decompress(data, raw.headers.get("Content-Encoding"))
        return Response(raw.status, raw.headers, body, context)

    def _wait_for_gate(self, context: CallContext, deadline: float | None) -> None:
        with self._gate:
            wait = self._not_before - time.monotonic()
        if wait <= 0:
            return
        if deadline is not None and time.monotonic() + wait > deadline:
            raise BudgetExhaustedError(f"the service asked for a {wait:.1f} s wait, beyond the time budget", context)
        time.sleep(wait)

    def _throttle(self, retry_after: float | None, attempt: int, context: CallContext, deadline: float | None) -> None:
        wait = retry_after if retry_after is not None else self._backoff_seconds(attempt)
        with self._gate:
            self._not_before = max(self._not_before, time.monotonic() + wait)
        log.info(
            "%s throttled, waiting %.2f s (cid %s)",
            self.service,
            wait,
            context.correlation_id,
        )
        if attempt < self.policy.max_attempts:
            self._wait_for_gate(context, deadline)

    def _backoff(self, attempt: int, context: CallContext, deadline: float | None, why: str) -> None:
        if attempt >= self.policy.max_attempts:
            return
        wait = self._backoff_seconds(attempt)
        if deadline is not None and time.monotonic() + wait > deadline:
            raise BudgetExhaustedError(f"{why}; no time left in the budget to retry", context)
        time.sleep(wait)

    def _backoff_seconds(self, attempt: int) -> float:
        # Full jitter: spreads retries of many threads instead of moving the storm.
        return random.uniform(0, min(BACKOFF_CAP_SECONDS, self.policy.backoff_base * 2 ** (attempt - 1)))

    def _log(
        self, method: str, operation: str, outcome: str, started: float, attempt: int, context: CallContext
    ) -> None:
        log.info(
            "%s %s %s%s -> %s in %.0f ms (attempt %d, cid %s)",
            self.service,
            method,
            operation,
            f" [{context.target}]" if context.target else "",
            outcome,
            (time.monotonic() - started) * 1000,
            attempt,
            context.correlation_id,
        )


def _is_throttle(response: Response, retry_after: float | None) -> bool:
    if response.status == 429:
        return True
    if response.status == 503 and retry_after is not None:
        return True  # a 503 that says when to come back did not run the request: safe to replay
    return _is_concurrency_refusal(response)


def _is_concurrency_refusal(response: Response) -> bool:
    # Exchange reports its per-tenant concurrency limit in text only; its status is not on public record.
    return response.status >= 400 and CONCURRENCY_TEXT in response.body[:4096].decode("utf-8", "replace")


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
