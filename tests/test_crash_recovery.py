"""Crash recovery of the standalone worker: its short lease brings a killed worker's messages back within a minute."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.ledger import STEP_LEASE_SECONDS
from shared.queues import RESULTS
from shared.settings import Settings
from shared.worker import Worker
from tests.chain_helpers import collect_results, fast_again_after_the_license_step, fresh_clients, request, submit
from tests.conftest import ROOT, SandboxHandle

pytestmark = pytest.mark.faults

TYPES = ["User", "Shared", "Room", "Equipment"]
REQUESTS = 12
KILL_AFTER_RESULTS = 2  # the kill comes once this many requests have their result: mid-batch
RECOVERY_BAR_SECONDS = 90.0  # the bar: every request finished within this long of the kill


@pytest.fixture
def crash_env(chain_env, sandbox: SandboxHandle, monkeypatch) -> SandboxHandle:
    """The chain over Azurite and the sandbox, with deadlines that a 45 s lease cannot run into."""
    monkeypatch.setenv("MAILBOX_WAIT_MINUTES", "3")
    monkeypatch.setenv("CONVERSION_WAIT_MINUTES", "3")
    monkeypatch.setenv("SYNC_WAIT_MINUTES", "3")
    return sandbox


@pytest.mark.timeout(300)
def test_killed_worker_requests_finish_within_90_seconds(crash_env, tmp_path, monkeypatch) -> None:
    """A worker SIGKILLed mid-batch: its messages come back one lease after the kill, and with the default lease a
    restarted worker ends every request within 90 s.

    Recovery is the lease plus the work left after it (nothing else waits for the lease). The test runs with a
    lease of STEP_LEASE_SECONDS (WORKER_LEASE_SECONDS, the ledger's hold lapses as soon), measures both parts, and
    holds the default lease plus the measured rest to the 90 s bar.
    """
    sandbox = crash_env
    assert "WORKER_LEASE_SECONDS" not in os.environ
    default_lease = Settings.from_env().worker_lease_seconds
    assert 30 <= default_lease <= 60, "the bar is about the default lease of about 45 s"
    monkeypatch.setenv("WORKER_LEASE_SECONDS", str(STEP_LEASE_SECONDS))
    lease = Settings.from_env().worker_lease_seconds
    assert lease == STEP_LEASE_SECONDS < default_lease
    sandbox.knobs(mailbox_delay=0.3, conversion_lag=0.2)
    ids = [f"crash-{i}" for i in range(REQUESTS)]
    for request_id in ids:
        sandbox.add_user(upn=f"{request_id}@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    submit(clients, *(request(r, f"{r}@contoso.com", mailboxType=TYPES[i % 4]) for i, r in enumerate(ids)))
    sandbox.knobs(latency=0.4)  # every tenant call takes 0.4 s: a kill right after a call arrives lands mid-step

    started = time.monotonic()
    first = _start_worker(tmp_path / "first.log")
    try:
        _wait_for(lambda: len(_results_waiting(clients)) >= KILL_AFTER_RESULTS, 120, "no request finished")
        calls = sandbox.stats()["requestsTotal"]
        _wait_for(lambda: sandbox.stats()["requestsTotal"] > calls, 30, "the first worker stopped calling the tenant")
        killed_at = time.monotonic()  # a tenant call arrived a moment ago: a step is in hand for another 0.4 s
        os.killpg(first.pid, signal.SIGKILL)  # its own process group (start_new_session): nothing else
        first.wait(timeout=10)
    finally:
        _reap(first)
    assert len(_results_waiting(clients)) < REQUESTS, "the kill must land mid-batch"
    sandbox.knobs(latency=0.0)

    second = _start_worker(tmp_path / "second.log", "--until-idle")
    try:
        finished_at = None
        while time.monotonic() - killed_at < RECOVERY_BAR_SECONDS + 60:  # bounded; past the bar only to report
            if set(_results_waiting(clients)) >= set(ids):
                finished_at = time.monotonic()
                break
            time.sleep(0.25)
        assert second.wait(timeout=120) == 0, _tail(tmp_path / "second.log")
    finally:
        _reap(second)

    assert finished_at is not None, f"not every request finished within {RECOVERY_BAR_SECONDS + 60:.0f} s of the kill"
    recovery = finished_at - killed_at
    # What the same kill costs with the default lease: the lease, then the same work left after it.
    with_default_lease = recovery - lease + default_lease
    figures = (
        f"recovery {recovery:.1f} s after the kill with a {lease} s lease, {with_default_lease:.1f} s with the "
        f"default {default_lease} s lease, test {time.monotonic() - started:.1f} s"
    )
    print(f"crash recovery: {figures}")
    assert with_default_lease <= RECOVERY_BAR_SECONDS, figures
    # A message that was in hand comes back only when its lease ends, at least two thirds of it after the kill.
    assert recovery >= lease * 2 / 3 - 1, f"the kill must land while messages are in hand ({figures})"
    results = collect_results(clients)
    assert {r: len(results.get(r, [])) for r in ids} == dict.fromkeys(ids, 1), figures
    assert all(results[r][0]["status"] == "succeeded" for r in ids), results
    assert set(results) == set(ids)


@pytest.mark.timeout(180)
def test_a_lost_renewal_while_the_step_runs_gives_no_second_result(chain_env, sandbox, caplog, monkeypatch) -> None:
    """A message whose lease renewals fail comes back while its step runs; the request still gets one result."""
    caplog.set_level(logging.INFO, logger="exoprov")
    sandbox.add_user(upn="renewal.lost@contoso.com", usageLocation="DE")
    sandbox.knobs(latency=2.0)  # the license step takes several seconds; the lease is two
    clients = fresh_clients()
    submit(clients, request("renewal-lost", "renewal.lost@contoso.com"))
    storage = clients.storage()
    license_queue = storage.queue("provision-license")
    renew = license_queue.update_message
    failed: list[str] = []

    def flaky_renewal(message: Any, **kwargs: Any) -> Any:
        """Every renewal of the first delivery fails, as when storage does not answer."""
        if threading.current_thread().name == "exoprov-keep-invisible" and message.dequeue_count == 1:
            from azure.core.exceptions import ServiceResponseError

            failed.append(message.id)
            raise ServiceResponseError("the renewal got no answer")
        return renew(message, **kwargs)

    monkeypatch.setattr(license_queue, "update_message", flaky_renewal)
    worker = Worker(storage, clients.dispatcher(), concurrency=4, retry_seconds=0, lease_seconds=2)
    with fast_again_after_the_license_step(clients, sandbox):
        assert worker.run(until_idle=True, timeout=150) == 0

    (result,) = collect_results(clients)["renewal-lost"]
    assert result["status"] == "succeeded"
    assert sandbox.stats()["requests"]["graph POST assignLicense"] == 1
    assert failed, "no renewal was refused"
    said = [r.getMessage() for r in caplog.records if "could not renew" in r.getMessage()]
    # Once per delivery, in one line: the first delivery's renewals all fail, yet it says so once. On a loaded machine
    # the second delivery's renewal can time out too (1 s per attempt) and say so once; a keeper that logged every
    # failed renewal would say it at least five times over the seconds the step runs.
    assert 1 <= len(said) <= 2 and not any("\n" in line for line in said), said
    # The first delivery lost its pop receipt to a second one: the message was delivered again meanwhile.
    assert any("could not be settled" in r.getMessage() for r in caplog.records)


def _start_worker(log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "worker", "--no-sweep", "--timeout", "240", *args],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,  # its own process group, so that the kill reaches it and nothing else
        )


def _reap(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _wait_for(condition: Callable[[], bool], seconds: float, why: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def _results_waiting(clients: Any) -> dict[str, int]:
    """Results on the queue by requestId, left there (a peek), as the chain's own duplicate check expects."""
    counts: dict[str, int] = defaultdict(int)
    for message in clients.storage().queue(RESULTS).peek_messages(max_messages=32):
        counts[json.loads(message.content)["requestId"]] += 1
    return dict(counts)


def _tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-20:])
