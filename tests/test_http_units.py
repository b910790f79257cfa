"""The request policy on a fake transport and a fake clock: every rule of shared/http.py, in milliseconds.

The transport is a plain function playing a script of answers and failures; the clock advances only when the
client sleeps, so each test states exactly how long the client waited. The sandbox over loopback stays for the
end-to-end tests (tests/test_http_policy.py).
"""

from __future__ import annotations

import base64
import email.utils
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from shared.auth import TokenProvider
from shared.errors import (
    BudgetExhaustedError,
    CallContext,
    OutcomeUnknownError,
    ServiceUnavailableError,
    ThrottledError,
    UnexpectedAnswerError,
)
from shared.http import (
    CONCURRENCY_REFUSALS_PER_CALL,
    CONCURRENCY_TEXT,
    THROTTLED,
    ConnectFailure,
    Done,
    GiveUp,
    Policy,
    RawResponse,
    ReadFailure,
    Refresh,
    Response,
    Retry,
    ServiceClient,
    Timeouts,
    TransportError,
    Tries,
    Urllib3Transport,
    backoff_ceiling,
    classify,
)

ENDPOINT = "https://outlook.office365.com"
URL = f"{ENDPOINT}/adminapi/beta/tenant/InvokeCommand"
EPOCH = 1_700_000_000.0  # the fake wall clock at fake time 0: a whole second, so HTTP dates are exact
CLAIMS = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}'
CHALLENGE = f'Bearer error="insufficient_claims", claims="{base64.urlsafe_b64encode(CLAIMS.encode()).decode()}"'
Answer = RawResponse | TransportError


class FakeClock:
    """Time that passes only when the client sleeps; `sleeps` lists every wait."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return EPOCH + self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.t += seconds


class FakeCredential:
    """Issues token-1, token-2, ...; with `caches`, a request without claims gets the last one back (azure-identity)."""

    def __init__(self, caches: bool) -> None:
        self.caches = caches
        self.issued: list[str] = []
        self.claims: list[str | None] = []

    def get_token(self, *scopes: str, claims: str | None = None) -> SimpleNamespace:
        self.claims.append(claims)
        if not (self.caches and self.issued and not claims):
            self.issued.append(f"token-{len(self.issued) + 1}")
        return SimpleNamespace(token=self.issued[-1], expires_on=time.time() + 3600)


@dataclass
class Rig:
    """A ServiceClient on a scripted transport, with what it sent, its clock and its credential."""

    http: ServiceClient
    clock: FakeClock
    credential: FakeCredential
    sent: list[Mapping[str, str]] = field(default_factory=list)  # the headers of each request that went out

    def call(self, *, write: bool = False, deadline: float | None = None, url: str = URL) -> Response:
        return self.http.request(
            "POST", url, body={"x": 1}, write=write, operation="InvokeCommand X", deadline=deadline
        )

    @property
    def tokens_sent(self) -> list[str]:
        return [headers["Authorization"].removeprefix("Bearer ") for headers in self.sent]


def rig(*answers: Answer, caches: bool = False, **policy: Any) -> Rig:
    """A client whose transport plays `answers` in order (a RawResponse is returned, a TransportError raised)."""
    script = list(answers)
    sent: list[Mapping[str, str]] = []

    def transport(method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: Timeouts, /):
        sent.append(dict(headers))
        answer = script.pop(0)
        if isinstance(answer, TransportError):
            raise answer
        return answer

    clock, credential = FakeClock(), FakeCredential(caches)
    settings = {"max_attempts": 6, "backoff_base": 1.0, **policy}
    http = ServiceClient(
        "exchange",
        ENDPOINT,
        ENDPOINT,
        "EXCHANGE_ENDPOINT",
        TokenProvider(credential),
        Policy(**settings),
        transport=transport,
        clock=clock,
    )
    return Rig(http, clock, credential, sent)


def answer(status: int, body: bytes = b"", **headers: str) -> RawResponse:
    return RawResponse(status, {name.replace("_", "-"): value for name, value in headers.items()}, body)


OK = answer(200, b'{"value": []}')
REFUSAL = answer(400, f"You have reached the {CONCURRENCY_TEXT} per tenant. Please wait and try again.".encode())


def in_seconds(seconds: float) -> str:
    """An HTTP date `seconds` after the fake wall clock's start."""
    return email.utils.formatdate(EPOCH + seconds, usegmt=True)


# -- waits ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "cap", "waited"),
    [
        ("7", 300.0, 7.0),
        ("0.25", 300.0, 0.25),
        (in_seconds(10), 300.0, 10.0),
        ("86400", 300.0, 300.0),
        ("86400", 30.0, 30.0),
        (in_seconds(-5), 300.0, 0.0),
    ],
)
def test_retry_after_is_honoured_in_seconds_or_as_an_http_date_and_capped(retry_after, cap, waited) -> None:
    """A 429's Retry-After (seconds, decimals or an HTTP date) is waited exactly, never beyond max_retry_after."""
    r = rig(answer(429, Retry_After=retry_after), OK, max_retry_after=cap)
    assert r.call().status == 200
    assert r.clock.t == waited and len(r.sent) == 2


def test_backoff_is_full_jitter_below_a_doubling_ceiling() -> None:
    """Without Retry-After each retry waits a random time between 0 and base * 2**(n-1), capped at 60 s."""
    assert [backoff_ceiling(step, 0.5) for step in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_ceiling(10, 1.0) == 60.0
    for _ in range(20):
        r = rig(*[ConnectFailure("refused")] * 4, OK, backoff_base=0.5)
        assert r.call().status == 200
        assert len(r.clock.sleeps) == 4
        assert all(0 <= wait <= backoff_ceiling(n, 0.5) for n, wait in enumerate(r.clock.sleeps, 1))
        assert r.clock.t <= 0.5 + 1 + 2 + 4


def test_junk_in_retry_after_falls_back_to_backoff() -> None:
    """A Retry-After that is neither seconds nor a date is ignored: the client backs off instead."""
    r = rig(answer(429, Retry_After="soon"), OK, backoff_base=0.5)
    assert r.call().status == 200
    assert 0 <= r.clock.t <= 0.5


def test_a_hold_from_a_batch_item_delays_the_next_call() -> None:
    """hold(s) keeps every call back for s seconds (capped at max_retry_after), before it sends anything."""
    r = rig(OK, max_retry_after=4.0)
    r.http.hold(9.0)
    assert r.call().status == 200
    assert r.clock.sleeps == [4.0]


def test_a_throttled_call_that_gives_up_still_holds_the_next_call() -> None:
    """The last attempt's Retry-After is not slept by the call that gives up, but the next call waits it out."""
    r = rig(answer(429, Retry_After="10"), OK, max_attempts=1)
    with pytest.raises(ThrottledError):
        r.call()
    assert r.clock.t == 0
    assert r.call().status == 200
    assert r.clock.sleeps == [10.0]


# -- concurrency refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 429, 503])
def test_a_concurrency_refusal_halves_in_flight_and_spends_no_attempt(status: int) -> None:
    """The per-tenant refusal, whatever its status, halves the in-flight limit and is retried on no attempt."""
    refusal = answer(status, REFUSAL.body, Retry_After="1")
    r = rig(refusal, refusal, refusal, OK, max_attempts=1, max_in_flight=8)
    assert r.call(write=True).status == 200
    assert r.http.in_flight.limit == 1  # 8 -> 4 -> 2 -> 1
    assert len(r.sent) == 4 and r.clock.sleeps == [1.0, 1.0, 1.0]


def test_concurrency_refusals_beyond_the_per_call_limit_are_throttling() -> None:
    """After CONCURRENCY_REFUSALS_PER_CALL free retries a refusal spends attempts, and the call ends throttled."""
    r = rig(*[answer(400, REFUSAL.body, Retry_After="0")] * (CONCURRENCY_REFUSALS_PER_CALL + 2), max_attempts=2)
    with pytest.raises(ThrottledError, match="still throttled after 2 attempts"):
        r.call()
    assert len(r.sent) == CONCURRENCY_REFUSALS_PER_CALL + 2 and r.clock.t == 0


# -- writes: replayed only when the service provably did not run them ------------------------------------


@pytest.mark.parametrize("failure", [ReadFailure("read timed out", "ReadTimeoutError"), TransportError("reset")])
def test_a_write_is_never_replayed_after_its_answer_is_lost(failure: TransportError) -> None:
    """A write that went out but got no complete answer raises OutcomeUnknownError, sent once, with no wait."""
    r = rig(failure, OK)
    with pytest.raises(OutcomeUnknownError, match="no complete answer from https://outlook.office365.com") as raised:
        r.call(write=True)
    assert raised.value.__cause__ is failure
    assert len(r.sent) == 1 and r.clock.t == 0


@pytest.mark.parametrize(
    "first",
    [
        ConnectFailure("connection refused"),
        answer(429, Retry_After="2"),
        answer(503, Retry_After="2"),
        REFUSAL,
    ],
    ids=["no-connection", "429", "503-with-retry-after", "concurrency-refusal"],
)
def test_a_write_is_replayed_when_the_service_did_not_run_it(first: Answer) -> None:
    """A write is sent again after no connection, a 429, a 503 with Retry-After or a concurrency refusal."""
    r = rig(first, OK, backoff_base=0.5)
    assert r.call(write=True).status == 200
    assert len(r.sent) == 2 and r.clock.t <= 2.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_to_a_write_is_returned_not_replayed(status: int) -> None:
    """A 5xx without Retry-After may hide a write that ran: it goes back to the caller (which reads back), sent once."""
    r = rig(answer(status), OK)
    assert r.call(write=True).status == status
    assert len(r.sent) == 1 and r.clock.t == 0


def test_a_read_is_retried_on_5xx_and_on_a_lost_answer() -> None:
    """A read is safe to repeat: 500, 502, 503, 504 and a read timeout are each retried until it succeeds."""
    r = rig(answer(500), answer(502), answer(503), answer(504), ReadFailure("timed out"), OK, backoff_base=0.01)
    assert r.call().status == 200
    assert len(r.sent) == 6 and len(r.clock.sleeps) == 5


def test_a_5xx_to_a_read_with_retry_after_waits_as_asked() -> None:
    """A read answered 500 with Retry-After waits exactly that long before the next attempt."""
    r = rig(answer(500, Retry_After="3"), OK)
    assert r.call().status == 200
    assert r.clock.sleeps == [3.0]


# -- 401: one refresh per call ---------------------------------------------------------------------------


def test_a_401_gets_one_refresh_with_its_claims_and_spends_no_attempt() -> None:
    """The first 401 fetches a fresh token with the challenge's claims and sends again, even on the only attempt."""
    r = rig(answer(401, WWW_Authenticate=CHALLENGE), OK, max_attempts=1)
    assert r.call().status == 200
    assert r.credential.claims == [None, CLAIMS]
    assert r.tokens_sent == ["token-1", "token-2"] and r.clock.t == 0


def test_a_second_401_is_returned() -> None:
    """A call refreshes its token once: a second 401 goes back to the caller (which maps it), not round again."""
    r = rig(answer(401, WWW_Authenticate=CHALLENGE), answer(401, WWW_Authenticate=CHALLENGE), OK)
    assert r.call().status == 401
    assert r.tokens_sent == ["token-1", "token-2"] and len(r.credential.claims) == 2


@pytest.mark.parametrize(
    ("caches", "tokens_sent", "status"),
    [(True, ["token-1"], 401), (False, ["token-1", "token-2"], 200)],
    ids=["same-token-not-resent", "new-token-resent"],
)
def test_a_401_without_claims_is_not_resent_with_the_same_cached_token(caches, tokens_sent, status) -> None:
    """Without a claims challenge the refused token is resent only if the credential gave a different one."""
    r = rig(answer(401), OK, caches=caches)
    assert r.call().status == status
    assert r.tokens_sent == tokens_sent and r.credential.claims == [None, None]


# -- deadlines --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "policy", "budget", "says"),
    [
        ([answer(429, Retry_After="5")], {}, 0.5, "5.0 s wait, beyond the time budget"),
        ([answer(503, Retry_After="5")], {}, 4.9, "5.0 s wait, beyond the time budget"),
        ([ConnectFailure("refused")], {"backoff_base": 10.0}, 0.0, "cannot reach .*no time left in the budget"),
        ([answer(502)], {"backoff_base": 10.0}, 0.0, "HTTP 502; no time left in the budget"),
    ],
    ids=["429", "503", "no-connection", "502-to-a-read"],
)
def test_a_deadline_raises_before_sleeping_past_it(answers, policy, budget, says) -> None:
    """A wait (Retry-After or backoff) that would end after the deadline raises BudgetExhaustedError at once."""
    r = rig(*answers, OK, **policy)
    with pytest.raises(BudgetExhaustedError, match=says):
        r.call(deadline=r.clock.now() + budget)
    assert r.clock.t == 0 and len(r.sent) == 1


def test_a_hold_beyond_the_deadline_raises_without_sending() -> None:
    """When another call's hold outlasts the deadline, the call raises BudgetExhaustedError and sends nothing."""
    r = rig(OK)
    r.http.hold(30)
    with pytest.raises(BudgetExhaustedError, match="30.0 s wait"):
        r.call(deadline=10.0)
    assert r.sent == [] and r.clock.t == 0


# -- the endpoint -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/adminapi/beta/x/InvokeCommand",
        "https://outlook.office365.com.evil.example/adminapi",
        "http://outlook.office365.com/adminapi",
        "https://outlook.office365.com",
    ],
)
def test_a_url_outside_the_endpoint_is_refused_without_sending(url: str) -> None:
    """A URL outside EXCHANGE_ENDPOINT raises UnexpectedAnswerError before a token is fetched or anything is sent."""
    r = rig(OK)
    with pytest.raises(UnexpectedAnswerError, match="outside EXCHANGE_ENDPOINT"):
        r.call(url=url)
    assert r.sent == [] and r.credential.claims == []


# -- attempts spent -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "write", "error", "says"),
    [
        (
            [ConnectFailure("connection refused")] * 3,
            True,
            ServiceUnavailableError,
            "cannot reach https://outlook.office365.com: connection refused after 3 attempts; check EXCHANGE_ENDPOINT",
        ),
        ([ReadFailure("timed out")] * 3, False, ServiceUnavailableError, "no complete answer .* after 3 attempts"),
        ([answer(503)] * 3, False, ServiceUnavailableError, "the service answered HTTP 503 after 3 attempts"),
        ([answer(429), answer(429), answer(502)], False, ServiceUnavailableError, "HTTP 502 after 3 attempts"),
        ([answer(502), answer(502), answer(429, Retry_After="2")], False, ThrottledError, "still throttled after 3"),
    ],
    ids=["no-connection", "lost-answers-to-a-read", "503s-to-a-read", "last-was-502", "last-was-429"],
)
def test_spent_attempts_raise_the_documented_error_with_the_last_reason(answers, write, error, says) -> None:
    """After max_attempts the call raises ThrottledError or ServiceUnavailableError, by its last attempt's reason."""
    r = rig(*answers, max_attempts=3, backoff_base=0.01)
    with pytest.raises(error, match=says) as raised:
        r.call(write=write)
    assert len(r.sent) == 3
    assert len(r.clock.sleeps) == 2  # no wait after the last attempt
    if isinstance(raised.value, ThrottledError):
        assert raised.value.retry_after == 2.0


# -- the log -----------------------------------------------------------------------------------------------------


def test_one_log_line_per_request_sent_with_its_correlation_id_and_never_the_token(caplog) -> None:
    """Each request that goes out logs one line with its status, attempt and client-request-id; no token is logged."""
    caplog.set_level(logging.INFO, logger="exoprov")
    r = rig(ConnectFailure("refused"), answer(429, Retry_After="0"), answer(401, WWW_Authenticate=CHALLENGE), OK)
    assert r.call().status == 200
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "exoprov.http" and " -> " in rec.getMessage()]
    cid = r.sent[0]["client-request-id"]
    assert [line.split(" -> ")[1].split(" in ")[0] for line in lines] == ["no connection", "429", "401", "200"]
    assert all(f"cid {cid}" in line for line in lines)
    attempts = [line.split("(")[1].split(",")[0] for line in lines]
    assert attempts == ["attempt 1", "attempt 2", "attempt 3", "attempt 3"]  # the refresh spent no attempt
    assert all(token not in rec.getMessage() for rec in caplog.records for token in r.credential.issued)


# -- the pure policy ------------------------------------------------------------------------------------------


CONTEXT = CallContext("exchange", "op")


def _response(status: int, body: bytes = b"", **headers: str) -> Response:
    raw = answer(status, body, **headers)
    return Response(raw.status, raw.headers, raw.body, CONTEXT)


@pytest.mark.parametrize(
    ("result", "write", "tries", "expected"),
    [
        (_response(200), True, Tries(), lambda o: isinstance(o, Done) and o.response.status == 200),
        (_response(404), False, Tries(), lambda o: isinstance(o, Done)),
        (ConnectFailure("x"), True, Tries(spent=2), lambda o: o == Retry("cannot reach E: x", step=3)),
        (ReadFailure("x"), False, Tries(), lambda o: o == Retry("no complete answer from E: x", step=1)),
        (ReadFailure("x"), True, Tries(), lambda o: isinstance(o, GiveUp) and isinstance(o.error, OutcomeUnknownError)),
        (_response(401, WWW_Authenticate=CHALLENGE), False, Tries(), lambda o: isinstance(o, Refresh) and o.claims),
        (_response(401), False, Tries(), lambda o: isinstance(o, Refresh) and o.claims is None),
        (_response(401), False, Tries(refreshed=True), lambda o: isinstance(o, Done)),
        (
            _response(400, REFUSAL.body),
            True,
            Tries(spent=3, refusals=5),
            lambda o: o == Retry(THROTTLED, None, 4, True, spends_attempt=False, fewer_in_flight=True),
        ),
        (
            _response(429, Retry_After="2"),
            True,
            Tries(),
            lambda o: o == Retry(THROTTLED, 2.0, 1, True),
        ),
        (_response(503, Retry_After="2"), True, Tries(), lambda o: isinstance(o, Retry) and o.throttled),
        (_response(503), True, Tries(), lambda o: isinstance(o, Done)),
        (_response(504), False, Tries(), lambda o: o == Retry("the service answered HTTP 504", None, 1)),
        (_response(501), False, Tries(), lambda o: isinstance(o, Done)),
    ],
)
def test_classify_maps_each_attempt_to_one_outcome(result, write, tries, expected: Callable[[object], bool]) -> None:
    """classify() is a pure function of the attempt's result, the kind of call and the tries so far."""
    outcome = classify(
        result, write=write, tries=tries, context=CONTEXT, endpoint="E", max_retry_after=300.0, wall=EPOCH
    )
    assert expected(outcome), outcome


def test_retries_that_spend_no_attempt_are_the_concurrency_refusals() -> None:
    """Tries.after counts an attempt for every retry but a concurrency refusal, which counts as a refusal."""
    tries = Tries().after(Retry("a")).after(Retry("b", spends_attempt=False, fewer_in_flight=True))
    assert tries == Tries(spent=1, refusals=1)


# -- the default transport -------------------------------------------------------------------------------------


def test_the_default_transport_reports_a_refused_connection_as_never_sent() -> None:
    """Urllib3Transport raises ConnectFailure (safe to replay) when nothing listens on the port."""
    with pytest.raises(ConnectFailure):
        Urllib3Transport()("GET", "http://127.0.0.1:9/", None, {}, Timeouts(1.0, 1.0))
