"""Writing sources of authority: PATCH onPremisesSyncBehavior in `$batch`es of 20, level by level, each
journaled before it is sent and read back after.

A level starts only when the one before it has ended, and an object whose prerequisites (a sweep: its member
groups; an undo: the groups holding it) did not end `applied` in this run is held back. Once a batch has gone
out, anything short of a clear answer per item is settled by reading the objects back: a 2xx whose read-back
still shows the old value is read again a few times (Entra replicas lag), and a write whose outcome is unclear
is sent again only when it provably did not apply. PATCH sets a value, so sending it twice does no harm.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from shared.authority.objects import Kind, SyncedObject
from shared.authority.read import read_states
from shared.authority.report import KindReport
from shared.directory import GRAPH_BATCH_LIMIT, GraphCall, GraphDirectory
from shared.errors import (
    BudgetExhaustedError,
    JournalUnavailableError,
    PermanentError,
    PermissionDeniedError,
    ThrottledError,
    UnexpectedAnswerError,
    first_line,
)
from shared.journal import Entry, Session
from shared.logs import audit
from shared.run_control import BUDGET_NOTE, Progress, StopSignal
from shared.settings import Settings

__all__ = ["READ_BACK_GRACE", "READ_BACK_WAITS", "AuthorityWriter", "write_levels"]

log = logging.getLogger("exoprov.authority")

# Third-party tools re-read a converted object up to six times, two seconds apart, before they call it unconfirmed.
READ_BACK_WAITS = (2.0, 4.0, 8.0)
READ_BACK_GRACE = 60.0  # seconds a read-back may run past the time budget (the budget leaves 300 s to the timeout)


def write_levels(
    directory: GraphDirectory,
    kind: Kind,
    report: KindReport,
    settings: Settings,
    levels: Sequence[Sequence[SyncedObject]],
    after: dict[str, tuple[str, ...]],
    why: str,
    *,
    value: bool,
    apply: bool,
    brake_note: str,
    session: Session,
    deadline: float,
    cancel: threading.Event,
    progress: Progress | None = None,
) -> str | None:
    """A kind's candidates, level by level, into the report; then the brake (`brake_note` follows the count) or,
    in apply mode, the writes (AuthorityWriter.run). Returns the writer's journal error, if any."""
    report.candidates = sum(len(level) for level in levels)
    report.levels = len(levels)
    report.candidate_list = [{**o.to_json(), "level": depth} for depth, level in enumerate(levels) for o in level]
    limit = settings.enforce_max_changes
    if limit and report.candidates > limit:
        report.brake_engaged = True
        report.notes.append(f"{report.candidates} {kind.name} {brake_note.format(limit=limit)}")
        return None
    if not (apply and levels):
        return None
    writer = AuthorityWriter(
        directory,
        kind,
        report,
        settings,
        value=value,
        session=session,
        deadline=deadline,
        cancel=cancel,
        progress=progress,
    )
    writer.run(levels, after, why)
    return writer.journal_error


class AuthorityWriter:
    """Sets isCloudManaged to `value` on objects of one kind, at most ENFORCE_CONCURRENCY batches in flight."""

    def __init__(
        self,
        directory: GraphDirectory,
        kind: Kind,
        report: KindReport,
        settings: Settings,
        *,
        value: bool,
        session: Session,
        deadline: float,
        cancel: threading.Event,
        progress: Progress | None = None,
    ) -> None:
        self._directory = directory
        self._kind = kind
        self._report = report
        self._value = value
        self._session = session
        self._deadline = deadline
        self._cancel = cancel
        self._concurrency = settings.enforce_concurrency
        self._attempts = settings.http_max_attempts
        self._progress = progress
        self._lock = threading.Lock()
        self._stop = StopSignal(cancel, deadline)
        self._done = 0
        self._ended: dict[str, str] = {}  # outcome by object id: applied, failed, unknown, not attempted
        self._intents: dict[str, Entry] = {}
        self._names: dict[str, str] = {}
        self.journal_error: str | None = None

    def run(self, levels: Sequence[Sequence[SyncedObject]], after: dict[str, tuple[str, ...]], why: str) -> None:
        """Write level by level; an object goes only when every id `after` names for it ended `applied`, and is
        held back otherwise, `why` saying what those ids are to it ("its member group", "the group holding it")."""
        self._names = {o.id: o.name for level in levels for o in level}
        with ThreadPoolExecutor(self._concurrency, f"exoprov-{self._kind.name}") as pool:
            for depth, level in enumerate(levels):
                ready = [o for o in level if self._prerequisites_done(o, after.get(o.id, ()), why)]
                chunks = [ready[i : i + GRAPH_BATCH_LIMIT] for i in range(0, len(ready), GRAPH_BATCH_LIMIT)]
                log.info("%s level %d: %d to write in %d batch(es)", self._kind.name, depth, len(ready), len(chunks))
                # Each batch runs in a copy of this context, so its log lines carry the run's correlation id.
                for future in [pool.submit(contextvars.copy_context().run, self._chunk, c) for c in chunks]:
                    future.result()
        self._stop.settle(self._report)

    def _prerequisites_done(self, o: SyncedObject, first: tuple[str, ...], why: str) -> bool:
        unfinished = [c for c in first if self._ended.get(c) != "applied"]
        if not unfinished:
            return True
        names = ", ".join(sorted(f"{self._names.get(c, c)} ({self._ended.get(c, 'not written')})" for c in unfinished))
        self._report.hold({**o.to_json(), "reason": f"{why} did not end applied in this run: {names}"})
        self._skip([o], outcome="held back")  # a candidate never written: counted as not attempted
        return False

    def _chunk(self, chunk: list[SyncedObject]) -> None:
        """Journal one batch's intents, then write it until each object is settled or the attempts run out.

        Whatever goes wrong after the intents are durable, every one of them ends with an outcome."""
        if self._stop.check():
            self._skip(chunk)
            return
        entries = {
            o.id: self._session.entry(self._kind.action, o.id, o.mail or o.name, not self._value, self._value)
            for o in chunk
        }
        try:
            self._session.intend(entries.values())
        except JournalUnavailableError as exc:
            log.error("%s; no more %s are changed", exc, self._kind.name)
            self._stop.set(f"stopped: {exc}; nothing is changed without a journal entry")
            with self._lock:
                self.journal_error = self.journal_error or str(exc)
            self._skip(chunk, journaled=False)
            return
        with self._lock:
            self._intents.update(entries)
        try:
            self._attempt_all(chunk)
        except Exception as exc:
            # A bug or an error nobody foresaw: the writes may have gone out, so their outcome is unknown.
            log.exception("writing %d %s failed unexpectedly", len(chunk), self._kind.name)
            self._stop.set(f"stopped: {first_line(exc)}")
            for o in chunk:
                if o.id in self._intents:
                    self._settle(o, "unknown", f"the run failed while writing it: {first_line(exc)}")

    def _attempt_all(self, chunk: list[SyncedObject]) -> None:
        pending = list(chunk)
        for attempt in range(1, self._attempts + 1):
            if attempt > 1 and self._stop.check():
                for o in pending:
                    self._settle(o, "failed", "it did not apply (throttled, or read back unchanged); the run stopped")
                return
            pending = self._write(pending, last=attempt == self._attempts)
            if not pending:
                return
        for o in pending:
            self._settle(o, "failed", f"the write did not apply after {self._attempts} attempts (HTTP_MAX_ATTEMPTS)")

    def _write(self, chunk: list[SyncedObject], *, last: bool) -> list[SyncedObject]:
        """Send one $batch; settle what can be settled and return the objects to write again."""
        body = {"isCloudManaged": self._value}
        role = self._kind.state_role
        calls = [GraphCall(o.id, self._kind.state_url(o.id), role, method="PATCH", body=body) for o in chunk]
        answers = self._directory.batch(calls, self._deadline, partial=True)
        written, unclear, again = [], [], []
        for o in chunk:
            answer = answers[o.id]
            error = answer.error
            if error is None:
                written.append(o)
            elif isinstance(error, BudgetExhaustedError):
                self._stop.set(BUDGET_NOTE)
                if answer.sent:  # sent before and throttled: not applied
                    self._settle(o, "failed", "throttled, and the time budget ran out before it could be sent again")
                else:
                    self._skip([o])
            elif isinstance(error, ThrottledError) and not last:
                again.append(o)  # a throttled item was not applied
            elif isinstance(error, ThrottledError) or (
                isinstance(error, PermanentError) and not isinstance(error, UnexpectedAnswerError)
            ):
                if isinstance(error, PermissionDeniedError):
                    self._stop.set(f"stopped: {error}")
                self._settle(o, "failed", str(error))  # refused: not applied
            else:
                unclear.append(o)  # a 5xx, no answer, an answer that makes no sense: it may have applied
        return again + self._confirm(written, unclear)

    def _confirm(self, written: list[SyncedObject], unclear: list[SyncedObject]) -> list[SyncedObject]:
        """Read back what was written (waiting out replication) and what is unclear; return what did not apply."""
        if not written and not unclear:
            return []
        shows = self._read([o.id for o in written + unclear])
        lagging = [o for o in written if shows[o.id] is not self._value]
        waited = 0.0
        for wait in READ_BACK_WAITS:
            pause = min(wait, max(0.0, self._deadline - time.monotonic()))
            if not lagging or pause <= 0 or self._cancel.wait(pause):
                break
            waited += pause
            shows.update(self._read([o.id for o in lagging]))
            lagging = [o for o in lagging if shows[o.id] is not self._value]
        again = []
        for o in written + unclear:
            value = shows[o.id]
            if value is self._value:
                self._settle(o, "applied")
            elif isinstance(value, str):
                self._settle(o, "unknown", f"the write's outcome could not be read back: {value}")
            elif o in written:
                self._settle(
                    o,
                    "unknown",
                    f"Graph accepted the write, but it still read isCloudManaged {value} {waited:g} s later; "
                    "`exoprov undo` takes it back if it turns out converted",
                )
            else:
                log.info("read-back shows %s unchanged; writing again", o.label)
                again.append(o)
        return again

    def _read(self, ids: list[str]) -> dict[str, bool | str]:
        """The states of `ids`, or for each the reason it could not be read (a refusal stops the run). A read-back
        may run READ_BACK_GRACE_SECONDS past the budget: an outcome known is worth more than a few seconds."""
        found: dict[str, bool | str] = {}
        for object_id, state in read_states(self._directory, self._kind, ids, self._deadline + READ_BACK_GRACE).items():
            if isinstance(state, PermissionDeniedError):
                self._stop.set(f"stopped: {state}")
            found[object_id] = state if isinstance(state, bool) else first_line(state)
        return found

    def _settle(self, o: SyncedObject, outcome: str, error: str | None = None) -> None:
        with self._lock:
            intent = self._intents.pop(o.id)
            self._ended[o.id] = outcome
        self._session.record(intent.entry_id, outcome, error)
        if outcome == "applied":
            audit(self._kind.action, o.mail or o.name, not self._value, self._value)
        else:
            log.warning("%s %s isCloudManaged %s: %s: %s", self._kind.singular, o.label, self._value, outcome, error)
        entry = {"identity": o.label, "id": o.id, "error": error or ""}
        with self._lock:
            if outcome == "applied":
                self._report.changed += 1
            elif outcome == "unknown":
                self._report.unknown += 1
                self._report.unknowns.append(entry)
            else:
                self._report.failed += 1
                self._report.failures.append(entry)
            self._done += 1
            done = self._done
        if self._progress:
            self._progress(done, self._report.candidates)

    def _skip(self, objects: list[SyncedObject], *, journaled: bool = True, outcome: str = "not attempted") -> None:
        """Objects the run does not write after all; intents already journaled for them are withdrawn."""
        with self._lock:
            self._report.not_attempted += len(objects)
            for o in objects:
                self._ended[o.id] = outcome
            withdrawn = [self._intents.pop(o.id).entry_id for o in objects if o.id in self._intents]
            self._done += len(objects)
            done = self._done
        if journaled and withdrawn:
            self._session.withdraw(withdrawn)
        if self._progress and objects:
            self._progress(done, self._report.candidates)
