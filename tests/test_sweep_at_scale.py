"""Sweeps that finish at tenant scale: a lost page, a tenant limit of one call at a time, unclear writes."""

from __future__ import annotations

import pytest

from shared.errors import ServiceUnavailableError
from shared.exchange import Command
from shared.runs import run_sweep as journaled_sweep
from shared.settings import Settings
from shared.wiring import Clients

TENANT = {"generate": {"mailboxes": 5000, "candidates": 400, "seed": 21}}


def run_sweep(*, apply: bool):
    settings = Settings.from_env()
    return journaled_sweep(Clients.from_settings(settings), apply=apply)


def test_a_sweep_of_5000_over_100_pages_survives_lost_pages_and_a_limit_of_one(env, sandbox, monkeypatch) -> None:
    """Pages of 50, two continuations lost, Exchange refusing a second call in flight: exact counts, no failure."""
    sandbox.reset(TENANT, page_size_cap=50, fault_lost_pages=[37, 120], concurrency_limit=1, latency=0.003)
    monkeypatch.setenv("ENFORCE_CONCURRENCY", "4")
    report = run_sweep(apply=True)
    assert (report.scanned, report.candidates, report.changed) == (5000, 400, 400)
    assert (report.failed, report.unknown, report.not_attempted, report.complete) == (0, 0, 0, True)
    stats = sandbox.stats()
    assert stats["faults"]["lost_page"] == 2 and stats["throttled"] > 0
    assert stats["requests"]["InvokeCommand Get-Mailbox"] > 100  # 100 pages, and the restarts
    assert run_sweep(apply=False).candidates == 0  # the tenant agrees with the report


def test_a_lost_page_restarts_the_listing_with_exact_counts(env, sandbox) -> None:
    """One continuation lost at page 7: the listing starts again and the report counts each mailbox once."""
    sandbox.reset({"generate": {"mailboxes": 1000, "candidates": 30}}, page_size_cap=100, fault_lost_pages=[6])
    report = run_sweep(apply=False)
    assert (report.scanned, report.candidates, report.complete) == (1000, 30, True)


def test_under_a_tenant_limit_of_one_the_client_slows_down_instead_of_failing(env, sandbox, monkeypatch) -> None:
    """Eight threads against a tenant that takes one call at a time: the in-flight limit drops to one, all finish."""
    from concurrent.futures import ThreadPoolExecutor

    sandbox.knobs(concurrency_limit=1, latency=0.02)
    monkeypatch.setenv("ENFORCE_CONCURRENCY", "8")
    exchange = Clients.from_settings(Settings.from_env()).exchange()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: exchange.invoke(Command("Get-OrganizationConfig")), range(40)))
    assert len(results) == 40
    assert exchange._http.in_flight.limit < 8 and sandbox.stats()["throttled"] > 0


def test_a_flip_whose_read_back_fails_is_unknown_not_failed(env, sandbox) -> None:
    """A write answered with an empty error whose read-back fails too is 'unknown'; the next run settles it."""
    sandbox.reset(
        {"generate": {"mailboxes": 200, "candidates": 20}}, fault_empty_error_rate=1.0, fault_readback_rate=1.0
    )
    report = run_sweep(apply=True)
    assert (report.changed, report.failed, report.unknown) == (0, 0, 20)
    assert len(report.unknowns) == 20 and "reading it back failed" in report.unknowns[0]["error"]
    sandbox.knobs(fault_empty_error_rate=0.0, fault_readback_rate=0.0)
    assert run_sweep(apply=False).candidates == 0  # they had flipped: the tenant is the truth


def test_a_failing_organization_config_does_not_stop_the_sweep(env, sandbox) -> None:
    """Get-OrganizationConfig is information: when it fails, the sweep still runs and says so in a note."""
    sandbox.knobs(denied_cmdlets=["Get-OrganizationConfig"])
    report = run_sweep(apply=True)
    assert report.changed == 6 and report.tenant_default_cloud_managed is None
    assert any("tenant default could not be read" in note for note in report.notes)


def test_a_first_page_that_cannot_be_had_is_an_error_not_a_restart(env, sandbox, monkeypatch) -> None:
    """Only a lost continuation restarts the listing; Exchange being down from the start ends the run."""
    monkeypatch.setenv("HTTP_MAX_ATTEMPTS", "2")
    sandbox.knobs(fault_503_rate=1.0)
    with pytest.raises(ServiceUnavailableError):
        run_sweep(apply=False)
