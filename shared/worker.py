"""The standalone runtime: polls the chain's queues, runs the same steps, fires the sweep and the readiness
report on their schedules.

It applies the Functions host's rules (host.json) to the letter: a failed message becomes visible
again after the retry delay, and after MAX_DEQUEUE_COUNT deliveries it moves to `<queue>-poison`.
One rule is its own: a message in hand is held for a short lease (WORKER_LEASE_SECONDS, 45 s by default),
renewed every third of it while the step runs, so a killed worker's messages come back within a minute
(the host holds one for 10 minutes). The ledger's per-request lease keeps a redelivery from sending twice.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.cron import Schedule
from shared.dispatch import Dispatcher
from shared.errors import ExoprovError, StorageUnavailableError, first_line
from shared.logs import correlation_scope
from shared.queues import CHAIN_QUEUES, MAX_DEQUEUE_COUNT, POISON_QUEUES, POISON_SUFFIX, UNREADABLE, Storage

__all__ = [
    "IDLE_POLL_MAX",
    "IDLE_POLL_MIN",
    "POISON_POLL_MAX",
    "Job",
    "Worker",
    "poll_gap",
    "progress_line",
]

log = logging.getLogger("exoprov.worker")

IDLE_POLL_MAX = 2.0  # an empty queue backs off to this (the host: to host.json's maxPollingInterval, 10 s)
IDLE_POLL_MIN = 0.25
POISON_POLL_MAX = 8.0  # within host.json's maxPollingInterval (10 s), which the Functions host uses for every queue
IDLE_PROGRESS_SECONDS = 60.0
IDLE_COUNT_SECONDS = 0.5  # `until_idle` counts the queued messages at most this often
RENEWALS_PER_LEASE = 3  # a message in hand is renewed every third of its lease: one lost renewal is survived
EXIT_OK, EXIT_TIMEOUT = 0, 3


@dataclass(frozen=True)
class Job:
    """What the worker runs on a schedule, as the Functions timers do: the sweep, the readiness report."""

    name: str
    schedule: Schedule
    run: Callable[[], Any]


@dataclass
class Worker:
    """Polls every queue of the chain with a bounded pool; stops cleanly, finishing what it holds."""

    storage: Storage
    dispatcher: Dispatcher
    concurrency: int = 4
    retry_seconds: int = 30
    lease_seconds: int = 45  # a message in hand stays invisible this long, renewed; a killed worker's returns after it
    jobs: tuple[Job, ...] = ()
    clock: Callable[[], float] = time.monotonic
    progress: Callable[[int, int], None] | None = None  # (messages handled, messages still queued)
    progress_every: float = 2.0
    # A plain flag, not an Event: stop() runs as a signal handler, on the loop's own thread, possibly while that
    # thread holds an Event's lock (inside clear() or wait()); taking that lock again would hang the worker.
    _stopping: bool = False
    _wake: threading.Event = field(default_factory=threading.Event)  # a send, a finished step or a stop
    _loop_thread: threading.Thread | None = None
    _in_flight: set[Future[None]] = field(default_factory=set)
    # Per queue: when it is polled next, and the gap that doubles while it stays empty (as the host backs off
    # each queue trigger on its own), so an idle queue costs one call per IDLE_POLL_MAX (POISON_POLL_MAX for the
    # poison queues). Apart from that, when the messages this worker's own steps sent there become visible.
    _next_poll: dict[str, float] = field(default_factory=dict)
    _gap: dict[str, float] = field(default_factory=dict)
    _fed: dict[str, list[float]] = field(default_factory=dict)
    _poll_lock: threading.Lock = field(default_factory=threading.Lock)
    _counted_at: float = float("-inf")
    _count_due: float | None = None  # when `until_idle` may count the queues again, if it had to wait for that
    _handled_lock: threading.Lock = field(default_factory=threading.Lock)
    handled: int = 0

    def stop(self, *_: Any) -> None:
        """Ask the loop to end: nothing new is taken, what is in hand is finished. Safe as a signal handler."""
        if not self._stopping:
            self._stopping = True
            in_hand = sum(1 for future in list(self._in_flight) if not future.done())  # not yet pruned: finished ones
            log.warning("stopping: finishing %d message(s) in hand", in_hand)
        if threading.current_thread() is not self._loop_thread:
            self._wake.set()  # the loop may be asleep; on its own thread (a signal handler) it is not, and must not

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self, *, until_idle: bool = False, timeout: float | None = None) -> int:
        """Process messages until stopped, idle (with `until_idle`) or out of time (exit 3)."""
        self._loop_thread = threading.current_thread()
        stop_listening = self.storage.on_send(self._sent)
        try:
            with ThreadPoolExecutor(self.concurrency + len(self.jobs), "exoprov-worker") as pool:
                code = self._loop(pool, until_idle, timeout)
                for future in list(self._in_flight):
                    future.result()
                return code
        finally:
            stop_listening()

    def _loop(self, pool: ThreadPoolExecutor, until_idle: bool, timeout: float | None) -> int:
        started = self.clock()
        due = {job.name: _next_run(job) for job in self.jobs}
        running: dict[str, Future[None]] = {}
        last_progress = last_said = started
        last_counts = (-1, -1)
        while not self._stopping:
            self._wake.clear()  # before polling: whatever happens from here on ends the wait below at once
            if self._stopping:  # a stop between the check above and the clear: its wake-up is gone
                break
            self._in_flight = {f for f in self._in_flight if not f.done()}
            trouble = False
            try:
                took = self._fill(pool)
            except Exception as exc:  # storage unreachable: wait and poll again, never die (the timeout still holds)
                log.warning("cannot read the queues (%s); retrying in %.0f s", first_line(exc), IDLE_POLL_MAX)
                took, trouble = 0, True
            for job in self.jobs:
                busy = job.name in running and not running[job.name].done()
                if datetime.now(UTC) >= due[job.name] and not busy:  # a run still going skips its next turn
                    running[job.name] = pool.submit(_run_job, job)
                    due[job.name] = _next_run(job)
            if until_idle and not trouble and not took and not self._in_flight and self._idle():
                log.info("all queues are empty; %d message(s) handled", self.handled)
                return EXIT_OK
            if timeout is not None and self.clock() - started > timeout:
                queued = _queued_count(self._pending_unless(trouble))
                log.error("timed out after %.0f s with %s message(s) still queued", timeout, queued)
                self.stop()
                return EXIT_TIMEOUT
            if self.progress and self.clock() - last_progress >= self.progress_every:
                last_progress = self.clock()
                counts = (self.handled, self._pending_unless(trouble))
                # An idle worker says so once a minute, not every two seconds.
                if counts != last_counts or self.clock() - last_said >= IDLE_PROGRESS_SECONDS:
                    last_counts, last_said = counts, self.clock()
                    self.progress(*counts)
            if not self._stopping:  # a stop on this thread (a progress callback, a signal handler) sets no wake
                self._wake.wait(IDLE_POLL_MAX if trouble else 0.0 if took else self._until_due())
        return EXIT_OK

    def _all_queues(self) -> tuple[str, ...]:
        return (*CHAIN_QUEUES, *POISON_QUEUES)

    def _by_priority(self) -> tuple[str, ...]:
        """The order free room is offered in: failures to answer first, then the chain's later steps before its
        earlier ones, so that a backlog of new requests never starves the chains already under way."""
        return (*POISON_QUEUES, *reversed(CHAIN_QUEUES))

    def _pending(self) -> int:
        """Messages still queued, or -1 when storage cannot say (which is never "idle")."""
        try:
            return self.storage.pending(self._all_queues())
        except Exception as exc:
            log.warning("cannot count the queues (%s)", first_line(exc))
            return -1

    def _pending_unless(self, poll_failed: bool) -> int:
        """`_pending()`, or -1 at once after a failed poll: a count would only spend the storage SDK's retries (seconds)
        again."""
        return -1 if poll_failed else self._pending()

    def _idle(self) -> bool:
        """No message queued anywhere. Counting costs a call per queue, so not while one of our own messages is
        known to be on its way, and not more often than every IDLE_COUNT_SECONDS."""
        now = self.clock()
        with self._poll_lock:
            ours_on_the_way = any(when > now for whens in self._fed.values() for when in whens)
        self._count_due = None
        if ours_on_the_way:
            return False
        if now - self._counted_at < IDLE_COUNT_SECONDS:
            self._count_due = self._counted_at + IDLE_COUNT_SECONDS  # the loop wakes for it
            return False
        self._counted_at = now
        return self._pending() == 0

    def _sent(self, queue: str, seconds: float) -> None:
        """A step of this worker sent a message: poll its queue when it shows, not when the backoff says."""
        if queue in self._all_queues():
            with self._poll_lock:
                self._fed.setdefault(queue, []).append(self.clock() + seconds)
            self._wake.set()

    def _room(self) -> int:
        return self.concurrency - sum(1 for future in self._in_flight if not future.done())

    def _until_due(self) -> float:
        """How long the loop may sleep: until the next queue is due, a step ends or a send wakes it; at most
        IDLE_POLL_MAX, which also paces the scheduled jobs, the timeout and the progress line."""
        if self._room() <= 0:
            return IDLE_POLL_MAX  # a finished step wakes the loop
        now = self.clock()
        with self._poll_lock:
            soonest = min(
                [self._next_poll.get(queue, now) for queue in self._all_queues()]
                + [when for whens in self._fed.values() for when in whens]
                + ([] if self._count_due is None else [self._count_due])
            )
        return min(IDLE_POLL_MAX, max(0.0, soonest - now))

    def _fill(self, pool: ThreadPoolExecutor) -> int:
        """Take messages from every queue that is due while there is room in the pool; return how many were taken."""
        took = 0
        for queue in self._by_priority():
            room = self._room()
            if room <= 0 or self._stopping:
                break
            now = self.clock()
            with self._poll_lock:
                shown = any(when <= now for when in self._fed.get(queue, []))  # one of ours is visible by now
                if self._next_poll.get(queue, now) > now and not shown:
                    continue
            # One page, one call: the SDK's own iterator asks again after a page with fewer messages than wanted,
            # and that second call finds nothing (a short page means nothing else was visible).
            asked = min(room, 32)
            pages = (
                self.storage.queue(queue)
                .receive_messages(messages_per_page=asked, max_messages=asked, visibility_timeout=self.lease_seconds)
                .by_page()
            )
            got = 0
            for message in next(pages, []):
                future = pool.submit(self._process, queue, message)
                future.add_done_callback(lambda _: self._wake.set())
                self._in_flight.add(future)
                got += 1
            with self._poll_lock:
                gap = poll_gap(queue, self._gap.get(queue, 0.0), got=got, asked=asked, ours_due=shown)
                self._gap[queue], self._next_poll[queue] = gap, now + gap
                self._fed[queue] = [when for when in self._fed.get(queue, []) if when > now]
            took += got
        return took

    def _process(self, queue: str, message: Any) -> None:
        try:
            with _KeepInvisible(self.storage.queue(queue), queue, message, self.lease_seconds) as keeper:
                self._handle(queue, message, keeper)
        except Exception as exc:  # storage failed while settling the message: it comes back after its lease
            log.error(
                "message %s on %s could not be settled (%s); it returns after its lease, unless redelivered already",
                message.id,
                queue,
                first_line(exc),
            )

    def _handle(self, queue: str, message: Any, keeper: _KeepInvisible) -> None:
        client = self.storage.queue(queue)
        try:
            try:
                if queue.endswith(POISON_SUFFIX):
                    self.dispatcher.handle_poison(queue, message.content)
                else:
                    self.dispatcher.handle(queue, message.content, message.id)
            finally:
                settle = keeper.stop()  # the latest pop receipt: deleting or releasing needs it
        except Exception as exc:  # the retry rule decides; nothing may kill the worker
            if message.dequeue_count >= MAX_DEQUEUE_COUNT and queue.endswith(POISON_SUFFIX):
                # Not even a failed result could be sent: keep it for a person instead of looping for ever.
                log.error(
                    "message %s on %s could not be answered %d times (%s); kept on %s for a person",
                    message.id,
                    queue,
                    message.dequeue_count,
                    exc,
                    UNREADABLE,
                )
                self.storage.send(UNREADABLE, message.content)
                client.delete_message(settle)
            elif message.dequeue_count >= MAX_DEQUEUE_COUNT and not _storage_trouble(exc):
                log.error(
                    "message %s on %s failed %d times (%s); moving it to %s",
                    message.id,
                    queue,
                    message.dequeue_count,
                    exc,
                    queue + POISON_SUFFIX,
                )
                self.storage.send(queue + POISON_SUFFIX, message.content)
                client.delete_message(settle)
            else:
                log.warning(
                    "message %s on %s failed (attempt %d): %s; retrying in %d s",
                    message.id,
                    queue,
                    message.dequeue_count,
                    exc,
                    self.retry_seconds,
                    exc_info=not isinstance(exc, ExoprovError) and not type(exc).__module__.startswith("azure."),
                )
                client.update_message(settle, visibility_timeout=self.retry_seconds)
                self._sent(queue, self.retry_seconds)  # it comes back then: poll for it, as for a message we sent
            return
        client.delete_message(settle)
        with self._handled_lock:
            self.handled += 1


def _queued_count(queued: int) -> str:
    """A count of queued messages for a person: the number, or "an unknown number of" where storage could not say
    (-1)."""
    return str(queued) if queued >= 0 else "an unknown number of"


def progress_line(handled: int, queued: int) -> str:
    """The worker's progress line, as `exoprov worker` prints it."""
    return f"progress: {handled} message(s) handled, {_queued_count(queued)} message(s) queued (waiting ones included)"


def poll_gap(queue: str, last_gap: float, *, got: int, asked: int, ours_due: bool) -> float:
    """Seconds until `queue` is polled again, after a receive that asked for `asked` messages and got `got`.

    A queue that gave all that was asked may hold more: at once. One that gave less was drained by that call
    (polled again at once, it gave nothing). One that gave nothing waits twice as long as last time, but only
    briefly when a message we sent there was due: it may show a moment later than our clock says. The poison
    queues back off furthest: only another runtime fills them unannounced (our own sends wake the loop), and
    four of them polled every 2 s made a quarter of the test suite's receives.
    """
    if got >= asked:
        return 0.0
    if got or ours_due:
        return IDLE_POLL_MIN
    ceiling = POISON_POLL_MAX if queue.endswith(POISON_SUFFIX) else IDLE_POLL_MAX
    return min(ceiling, max(IDLE_POLL_MIN, 2 * last_gap))


def _next_run(job: Job) -> datetime:
    return job.schedule.next_after(datetime.now(UTC).replace(tzinfo=None)).replace(tzinfo=UTC)


def _run_job(job: Job) -> None:
    with correlation_scope():
        try:
            job.run()
        except Exception:
            log.exception("the scheduled %s failed; the next one runs on schedule", job.name)


def _storage_trouble(exc: BaseException) -> bool:
    """An outage of the storage account says nothing about the message: it never counts towards poison."""
    if isinstance(exc, StorageUnavailableError) or type(exc).__name__ in (
        "ServiceRequestError",
        "ServiceResponseError",
    ):
        return True
    status = getattr(exc, "status_code", None)
    return type(exc).__module__.startswith("azure.") and isinstance(status, int) and status >= 500


class _KeepInvisible:
    """Keeps a message in hand invisible while its step runs, as the Functions host does, so that a long step
    is not delivered a second time meanwhile (and a dead worker's message still returns after one lease).

    It renews every third of the lease, each attempt bounded to half of that, so one lost or hung renewal
    leaves time for the next; after a failure it tries again twice as soon. A renewal that fails is logged
    once per message, in one line. If the lease is lost anyway, the message is delivered again while the step
    runs: that delivery waits for the request's ledger lease (held and renewed by this step), comes back
    later and finds the step done, so the request still gets one result.
    """

    def __init__(self, client: Any, queue: str, message: Any, lease_seconds: int) -> None:
        self._client, self._queue, self._message, self._lease = client, queue, message, lease_seconds
        self._every = lease_seconds / RENEWALS_PER_LEASE
        self._attempt_seconds = max(1.0, self._every / 2)
        self._told = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="exoprov-keep-invisible", daemon=True)

    def __enter__(self) -> _KeepInvisible:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> Any:
        """Stop extending; the message with its latest pop receipt."""
        self._done.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        return self._message

    def _run(self) -> None:
        wait = self._every
        while not self._done.wait(wait):
            try:
                self._message = self._client.update_message(
                    self._message,
                    visibility_timeout=self._lease,
                    connection_timeout=self._attempt_seconds,
                    read_timeout=self._attempt_seconds,
                    retry_total=0,  # the next attempt comes soon enough; an SDK retry could outlast the lease
                )
                wait = self._every
            except Exception as exc:
                lost = getattr(exc, "status_code", None) in (400, 404)  # the pop receipt is no longer ours
                self._tell(exc, lost)
                if lost:
                    return
                wait = self._every / 2

    def _tell(self, exc: BaseException, lost: bool) -> None:
        if self._told:
            return
        self._told = True
        log.warning(
            "message %s on %s: %s (%s); a second delivery meanwhile waits for the request's ledger lease, so the "
            "request still gets one result",
            self._message.id,
            self._queue,
            "lost its lease, renewal stops" if lost else f"could not renew its {self._lease} s lease, still trying",
            first_line(exc),
        )
