"""The standalone worker: clean shutdown on signals, the sweep and the report on their schedules, and its polling."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from typing import Any, cast

import pytest

from shared.dispatch import Dispatcher
from shared.queues import POISON_SUFFIX, REQUESTS, STEP_QUEUES
from tests.chain_helpers import (
    collect_results,
    fast_again_after_the_license_step,
    fresh_clients,
    request,
    submit,
    unreachable_storage,
)
from tests.conftest import ROOT


def start_worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "worker", *args],
        cwd=ROOT,
        env=os.environ.copy(),
        stderr=subprocess.PIPE,
        text=True,
    )


def stopped(worker: subprocess.Popen[str]) -> str:
    """Kill the worker if it still runs (a failed assertion), and return what it wrote to stderr."""
    if worker.poll() is None:
        worker.kill()
    assert worker.stderr is not None
    text = worker.stderr.read()
    worker.stderr.close()
    return text


def license_step_in_hand(clients, sandbox) -> bool:
    """The request step is settled and the license step is running: its message is taken (on the queue but
    invisible) and it is talking to the tenant. With 1 s per tenant call it stays in hand for seconds."""
    storage = clients.storage()
    if storage.pending(("provision-requests",)) or not storage.pending(("provision-license",)):
        return False
    if list(storage.queue("provision-license").peek_messages()):
        return False  # still visible: not taken yet
    return bool(sandbox.stats()["requestsTotal"] > 0)


def test_sigterm_finishes_the_message_in_hand_then_exits(chain_env, sandbox) -> None:
    """SIGTERM while a step is in flight: the step completes, its next message is sent, the worker exits 0."""
    sandbox.add_user(upn="slowpoke@contoso.com", usageLocation="DE")
    sandbox.knobs(latency=1.0)
    clients = fresh_clients()
    submit(clients, request("sigterm", "slowpoke@contoso.com"))
    worker = start_worker("--no-sweep")
    try:
        deadline = time.monotonic() + 30
        while not license_step_in_hand(clients, sandbox):
            assert time.monotonic() < deadline, "the license step never started"
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        stderr = stopped(worker)
    assert "stopping: finishing 1 message(s) in hand" in stderr
    # The license step in hand at SIGTERM finished: the license is on, and the mailbox step is queued (delayed).
    assert sandbox.licenses()["slowpoke@contoso.com"] == ["4b9405b0-7788-4568-add1-99614e613b69"]
    storage = clients.storage()
    assert storage.pending(("provision-requests", "provision-license")) == 0
    assert storage.pending(("provision-mailbox",)) == 1


def test_the_worker_runs_the_sweep_on_its_schedule(chain_env, sandbox, monkeypatch) -> None:
    """With ENFORCE_SCHEDULE every second and ENFORCE_MODE=apply, the worker's timer flips the candidates."""
    monkeypatch.setenv("ENFORCE_SCHEDULE", "* * * * * *")
    monkeypatch.setenv("ENFORCE_MODE", "apply")
    worker = start_worker("--timeout", "4")
    try:
        assert worker.wait(timeout=30) == 3  # it had nothing else to do until the timeout
    finally:
        if worker.poll() is None:
            worker.kill()
        if worker.stderr:
            worker.stderr.close()
    assert all(
        m["cloudManaged"] for m in sandbox.mailboxes() if m["dirSynced"] and m["upn"] != "UserExcluded@contoso.com"
    )
    assert collect_results(fresh_clients()) == {}


def test_the_worker_writes_the_readiness_report_on_its_schedule(chain_env, sandbox, monkeypatch) -> None:
    """With READINESS_SCHEDULE every second, the worker stores the report as the Functions timer does, reading only."""
    monkeypatch.setenv("READINESS_SCHEDULE", "* * * * * *")
    container = fresh_clients().storage().reports_container
    for blob in container.list_blobs():
        container.delete_blob(blob.name)
    worker = start_worker("--no-sweep", "--timeout", "3")
    try:
        assert worker.wait(timeout=30) == 3
    finally:
        stderr = stopped(worker)
    assert "readiness report on * * * * * * (UTC)" in stderr
    assert {"readiness/latest.json", "readiness/latest.html"} <= {blob.name for blob in container.list_blobs()}
    assert not [name for name in sandbox.stats()["commands"] if not name.startswith("Get-")]


def test_a_step_longer_than_the_lease_is_not_delivered_again_meanwhile(chain_env, sandbox) -> None:
    """A message in hand stays invisible while its step runs (as the host does), however long the step takes."""
    from shared.worker import Worker

    sandbox.add_user(upn="slow.step@contoso.com", usageLocation="DE")
    sandbox.knobs(latency=1.2)  # the license step takes several seconds, the lease is one
    clients = fresh_clients()
    submit(clients, request("slow-step", "slow.step@contoso.com"))
    worker = Worker(clients.storage(), clients.dispatcher(), concurrency=4, retry_seconds=0, lease_seconds=1)
    with fast_again_after_the_license_step(clients, sandbox):
        assert worker.run(until_idle=True, timeout=120) == 0
    (result,) = collect_results(clients)["slow-step"]
    assert result["status"] == "succeeded"
    assert worker.handled == 4  # request, license, mailbox, configure: each delivered once
    assert sandbox.stats()["requests"]["graph POST assignLicense"] == 1


class _Relay:
    """A stand-in dispatcher: the request step sends the license step `delay` seconds later (or, with None, sends
    nothing), and the license step does nothing; each step takes `pause` seconds."""

    def __init__(self, storage: Any, delay: float | None, pause: float = 0.0) -> None:
        self.storage, self.delay, self.pause = storage, delay, pause
        self.steps: list[str] = []

    def handle(self, queue: str, text: str, message_id: str) -> None:
        self.steps.append(queue)
        time.sleep(self.pause)
        if queue == REQUESTS and self.delay is not None:
            self.storage.send(STEP_QUEUES["license"], text, delay=self.delay)

    def handle_poison(self, queue: str, text: str) -> None:
        raise AssertionError(f"nothing should reach {queue}")


def test_the_worker_does_not_count_the_queues_while_its_own_message_is_on_its_way(chain_env, monkeypatch) -> None:
    """A step that sends the next one 2 s later keeps the worker waiting for it, not counting every queue each turn."""
    from shared.worker import Worker

    clients = fresh_clients()
    storage = clients.storage()
    counts: list[int] = []
    real_pending = storage.pending

    def pending(names: tuple[str, ...]) -> int:
        counts.append(real_pending(names))
        return counts[-1]

    monkeypatch.setattr(storage, "pending", pending)
    relay = _Relay(storage, delay=2)
    submit(clients, request("relay", "relay@contoso.com"))
    worker = Worker(storage, cast(Dispatcher, relay), concurrency=2, retry_seconds=0, lease_seconds=30)
    assert worker.run(until_idle=True, timeout=60) == 0
    assert relay.steps == [REQUESTS, STEP_QUEUES["license"]]
    # One count once the license step is done (0); at most one more if the message showed a moment late.
    assert counts[-1] == 0 and len(counts) <= 2


def test_a_backlog_of_new_requests_does_not_starve_a_chain_under_way(chain_env) -> None:
    """Free room goes to the chain's later steps first: a step waiting behind new requests is taken before them."""
    from shared.worker import Worker

    clients = fresh_clients()
    storage = clients.storage()
    submit(clients, *(request(f"new-{i}", f"new{i}@contoso.com") for i in range(3)))
    storage.send(STEP_QUEUES["license"], "a step of a chain under way")
    relay = _Relay(storage, delay=0)
    worker = Worker(storage, cast(Dispatcher, relay), concurrency=1, retry_seconds=0, lease_seconds=30)
    assert worker.run(until_idle=True, timeout=60) == 0
    assert relay.steps[0] == STEP_QUEUES["license"]
    # Each new request's license step is taken before the next new request.
    assert relay.steps[1:] == [REQUESTS, STEP_QUEUES["license"]] * 3


def test_a_queue_one_receive_drained_is_not_polled_again_at_once(chain_env, monkeypatch) -> None:
    """Three requests taken by a receive that asked for four: the queue is empty, so neither the worker nor the
    SDK's paging asks it again at once; the next call comes when an idle queue is due."""
    from shared.worker import IDLE_POLL_MIN, Worker

    clients = fresh_clients()
    storage = clients.storage()
    submit(clients, *(request(f"drained-{i}", f"drained{i}@contoso.com") for i in range(3)))
    queue = storage.queue(REQUESTS)
    calls: list[float] = []  # each HTTP request a receive makes, when it goes out
    real_receive = queue.receive_messages

    def receive(**options: Any) -> Any:
        return real_receive(raw_request_hook=lambda _: calls.append(time.monotonic()), **options)

    monkeypatch.setattr(queue, "receive_messages", receive)
    relay = _Relay(storage, delay=None, pause=0.6)  # the steps outlast a poll gap: the queue is asked again
    worker = Worker(storage, cast(Dispatcher, relay), concurrency=4, retry_seconds=0, lease_seconds=30)
    assert worker.run(until_idle=True, timeout=60) == 0
    assert relay.steps == [REQUESTS] * 3 and len(calls) >= 2
    assert all(later - earlier >= IDLE_POLL_MIN - 0.02 for earlier, later in itertools.pairwise(calls))


def test_an_empty_queue_backs_off_to_2_s_and_a_poison_queue_to_8_s() -> None:
    """Each empty receive doubles the gap: a chain queue stops at 2 s, a poison queue (filled unannounced only by
    another runtime) at 8 s; a full receive polls again at once, and a message of ours that is due, soon."""
    from shared.worker import IDLE_POLL_MAX, IDLE_POLL_MIN, POISON_POLL_MAX, poll_gap

    def gaps(queue: str) -> list[float]:
        found = [0.0]
        for _ in range(7):
            found.append(poll_gap(queue, found[-1], got=0, asked=4, ours_due=False))
        return found[1:]

    assert gaps(STEP_QUEUES["license"]) == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0] and IDLE_POLL_MAX == 2.0
    poison = STEP_QUEUES["license"] + POISON_SUFFIX
    assert gaps(poison) == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0] and POISON_POLL_MAX == 8.0
    assert poll_gap(REQUESTS, 2.0, got=4, asked=4, ours_due=False) == 0.0
    assert poll_gap(REQUESTS, 2.0, got=3, asked=4, ours_due=False) == IDLE_POLL_MIN
    assert poll_gap(REQUESTS + POISON_SUFFIX, 8.0, got=0, asked=4, ours_due=True) == IDLE_POLL_MIN


def test_the_timeout_still_ends_a_worker_whose_storage_does_not_answer(env, monkeypatch, caplog) -> None:
    """Storage gone while the worker runs: the timeout still ends it with exit 3, without first counting the queues
    it just failed to read (each count would spend the storage SDK's retries, seconds past the timeout)."""
    from shared.worker import Worker

    monkeypatch.setenv("AzureWebJobsStorage", unreachable_storage()[0])
    storage = fresh_clients().storage()
    counted = _counted(storage, monkeypatch)
    worker = Worker(storage, cast(Dispatcher, _Relay(storage, 0)), concurrency=1, retry_seconds=0, lease_seconds=30)
    assert worker.run(timeout=1) == 3
    assert any("an unknown number of message(s) still queued" in r.getMessage() for r in caplog.records)
    assert counted == []


def test_a_worker_whose_poll_failed_reports_an_unknown_number_queued_without_counting(env, monkeypatch) -> None:
    """A poll unanswered: the progress line says an unknown number is queued (not -1), and the worker does not first
    count the queues it just failed to read."""
    from azure.core.exceptions import ServiceRequestError

    from shared.worker import Worker, progress_line

    storage = fresh_clients().storage()
    queue = storage.queue

    class Unanswered:
        """A queue whose receive gets no answer, at once rather than after the storage SDK's seconds of retries."""

        def __init__(self, name: str) -> None:
            self.client = queue(name)

        def receive_messages(self, **_: Any) -> Any:
            raise ServiceRequestError("storage did not answer")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.client, name)

    monkeypatch.setattr(storage, "queue", Unanswered)
    counted = _counted(storage, monkeypatch)
    said: list[str] = []

    def progress(handled: int, queued: int) -> None:
        said.append(progress_line(handled, queued))
        worker.stop()

    worker = Worker(
        storage,
        cast(Dispatcher, _Relay(storage, 0)),
        concurrency=1,
        retry_seconds=0,
        lease_seconds=30,
        progress=progress,
        progress_every=0,
    )
    assert worker.run(timeout=60) == 0
    assert said == ["progress: 0 message(s) handled, an unknown number of message(s) queued (waiting ones included)"]
    assert counted == []


def _counted(storage: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every count of the queues `storage` is asked for from now on (each answered 0, without a call)."""
    counted: list[tuple[str, ...]] = []

    def pending(queues: tuple[str, ...]) -> int:
        counted.append(queues)
        return 0

    monkeypatch.setattr(storage, "pending", pending)
    return counted
