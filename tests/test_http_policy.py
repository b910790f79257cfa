"""The request policy shared by Graph and Exchange, exercised against the sandbox over real HTTP."""

from __future__ import annotations

import email.utils
import logging
import time

import pytest

from shared.errors import BudgetExhaustedError, OutcomeUnknownError, ServiceUnavailableError, UnexpectedAnswerError
from shared.exchange import Command
from shared.http import decompress, parse_retry_after
from shared.settings import Settings
from shared.wiring import Clients

ORG = Command("Get-OrganizationConfig")


def test_retry_after_accepts_seconds_decimals_and_http_dates_and_is_capped() -> None:
    """Retry-After may be seconds, decimal seconds or an HTTP date; it is capped, and junk is ignored."""
    assert parse_retry_after("7", cap=300) == 7
    assert parse_retry_after("0.25", cap=300) == 0.25
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= (parse_retry_after(in_ten, cap=300) or 0) <= 10
    assert parse_retry_after("86400", cap=300) == 300
    assert parse_retry_after("soon", cap=300) is None
    assert parse_retry_after(None, cap=300) is None


def test_a_nul_body_declared_gzip_is_kept_raw() -> None:
    """The NUL-filled body Exchange labels gzip must not crash the decoder."""
    assert decompress(b"\x00" * 32, "gzip") == b"\x00" * 32


def test_throttled_calls_wait_for_retry_after_before_coming_back(clients: Clients, sandbox) -> None:
    """Under a 429 storm every call succeeds in the end and none is resent before its Retry-After."""
    sandbox.knobs(fault_429_rate=0.5, retry_after=0.1)
    exo = clients.exchange()
    for _ in range(10):
        exo.invoke(ORG)
    stats = sandbox.stats()
    assert stats["faults"]["429"] > 0
    assert stats["retryAfterViolations"] == []


def test_the_concurrency_limit_is_honoured_across_threads(env, sandbox, monkeypatch) -> None:
    """Eight threads against a limit of two are throttled, wait as told, and all finish."""
    from concurrent.futures import ThreadPoolExecutor

    sandbox.knobs(concurrency_limit=2, latency=0.05, retry_after=0.1, concurrency_retry_after=True)
    monkeypatch.setenv("HTTP_MAX_ATTEMPTS", "20")
    monkeypatch.setenv("ENFORCE_CONCURRENCY", "8")  # more than the tenant takes: the refusals must come
    exo = Clients.from_settings(Settings.from_env()).exchange()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: exo.invoke(ORG), range(24)))
    assert len(results) == 24
    stats = sandbox.stats()
    assert stats["throttled"] > 0
    assert stats["retryAfterViolations"] == []


def test_a_503_on_a_read_is_retried(clients: Clients, sandbox) -> None:
    """A read that meets 503s is retried with backoff and succeeds."""
    sandbox.knobs(fault_503_rate=0.5)
    exo = clients.exchange()
    for _ in range(6):
        assert exo.invoke(ORG).value
    assert sandbox.stats()["faults"]["503"] > 0


def test_a_write_whose_connection_drops_is_not_replayed(clients: Clients, sandbox) -> None:
    """A write that got no answer raises OutcomeUnknownError and was sent exactly once."""
    exo = clients.exchange()
    exo.invoke(ORG)
    sandbox.knobs(fault_drop_rate=1.0)
    with pytest.raises(OutcomeUnknownError):
        exo.invoke(
            Command("Set-Mailbox", {"Identity": "UserWithMailWithEXO@contoso.com", "IsExchangeCloudManaged": True})
        )
    sandbox.knobs(fault_drop_rate=0.0)
    assert sandbox.stats()["commands"]["Set-Mailbox"] == 1


def test_a_write_answered_with_a_gateway_timeout_is_not_replayed(clients: Clients, sandbox) -> None:
    """A 504 on a write may hide a write that happened: OutcomeUnknownError, sent once."""
    exo = clients.exchange()
    exo.invoke(ORG)
    sandbox.knobs(fault_504_rate=1.0)
    with pytest.raises(OutcomeUnknownError):
        exo.invoke(
            Command("Set-Mailbox", {"Identity": "UserWithMailWithEXO@contoso.com", "IsExchangeCloudManaged": True})
        )
    assert sandbox.stats()["commands"]["Set-Mailbox"] == 1


def test_a_write_that_hangs_past_the_read_timeout_is_not_replayed(env, sandbox, monkeypatch) -> None:
    """A write answered after the read timeout is ambiguous: no replay, OutcomeUnknownError."""
    monkeypatch.setenv("HTTP_READ_TIMEOUT_SECONDS", "0.3")
    exo = Clients.from_settings(Settings.from_env()).exchange()
    sandbox.knobs(fault_hang_rate=1.0, hang_seconds=0.6)
    with pytest.raises(OutcomeUnknownError, match="no complete answer"):
        exo.invoke(
            Command("Set-Mailbox", {"Identity": "UserWithMailWithEXO@contoso.com", "IsExchangeCloudManaged": True})
        )
    assert sandbox.stats()["commands"].get("Set-Mailbox", 0) <= 1


def test_a_401_gets_one_fresh_token_and_the_call_succeeds(clients: Clients, sandbox) -> None:
    """After the service stops accepting our token, one refresh with its claims challenge fixes the call."""
    exo = clients.exchange()
    exo.invoke(ORG)
    sandbox.rotate_keys()
    exo.invoke(ORG)
    assert sandbox.stats()["tokens"]["https://outlook.office365.com"] == 2
    assert clients.tokens.acquisitions["https://outlook.office365.com"] == 2


def test_tokens_are_reused_across_calls(clients: Clients, sandbox) -> None:
    """Many calls cost one token per resource."""
    exo = clients.exchange()
    for _ in range(20):
        exo.invoke(ORG)
    assert sandbox.stats()["tokens"] == {"https://outlook.office365.com": 1}


def test_an_unreachable_endpoint_names_the_setting_to_check(env, monkeypatch) -> None:
    """A refused connection ends in a ServiceUnavailableError that names EXCHANGE_ENDPOINT."""
    monkeypatch.setenv("EXCHANGE_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_MAX_ATTEMPTS", "2")
    with pytest.raises(ServiceUnavailableError, match="EXCHANGE_ENDPOINT"):
        Clients.from_settings(Settings.from_env()).exchange().invoke(ORG)


def test_a_token_never_leaves_for_another_host(clients: Clients) -> None:
    """The client refuses to send a request (and its token) outside its own endpoint."""
    http = clients.exchange()._http
    with pytest.raises(UnexpectedAnswerError, match="outside EXCHANGE_ENDPOINT"):
        http.request("POST", "https://evil.example.com/adminapi/beta/x/InvokeCommand", write=False, operation="x")


def test_a_deadline_stops_waiting_for_a_long_retry_after(clients: Clients, sandbox) -> None:
    """A Retry-After beyond the caller's deadline raises BudgetExhaustedError at once instead of sleeping past it."""
    exo = clients.exchange()
    sandbox.knobs(fault_429_rate=1.0, retry_after=5)
    started = time.monotonic()
    with pytest.raises(BudgetExhaustedError):
        exo.invoke(ORG, deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 1.5


def test_one_log_line_per_call_with_correlation_id_and_never_the_token(clients: Clients, caplog) -> None:
    """Each call logs one line with its client-request-id; no bearer token appears in any log."""
    caplog.set_level(logging.INFO, logger="exoprov")
    clients.exchange().invoke(ORG)
    calls = [r.getMessage() for r in caplog.records if r.name == "exoprov.http"]
    assert len(calls) == 1 and "Get-OrganizationConfig -> 200" in calls[0] and "cid " in calls[0]
    token = clients.tokens.get("https://outlook.office365.com").value
    assert all(token not in r.getMessage() for r in caplog.records)
