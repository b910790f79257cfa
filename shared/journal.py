"""The change journal: every write exoprov makes, recorded as an intent before the call and an outcome after it.

It lives in append blobs of the `exoprov-journal` container, one blob per session (a sweep or undo run, or one
run of a chain step that writes), as JSON lines:

    runs/{runId}.jsonl                               a sweep or an undo run
    requests/{requestId}.journal/{sessionId}.jsonl   one run of a step of a provisioning request

A line is an intent (the whole entry, outcome `pending`), an outcome (`applied`, `failed`, `unknown`, `noop`)
or a withdrawal (an intent whose write was never sent). The last line about an entry wins, so a late outcome
corrects an early settlement. A session blob carries `state=open` until it is closed; an open blob whose
owner is gone holds the intents a crash left unsettled (see `shared/recovery.py`).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.errors import ConfigurationError, JournalUnavailableError, first_line
from shared.events import emit

__all__ = [
    "Entry",
    "Journal",
    "Session",
    "SessionInfo",
    "check_run_id",
    "fold",
    "new_run_id",
    "request_prefix",
    "run_session",
    "settlement_line",
]

log = logging.getLogger("exoprov.journal")

OUTCOMES = ("pending", "applied", "failed", "unknown", "noop")
RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
MAX_APPEND_BYTES = 4 * 1024 * 1024  # the service's limit for one append block
_WRITES = ("create", "append", "close")  # the operations of Journal._storage that write
HEARTBEAT_SECONDS = 60.0  # a run's session appends at least this often, so that others can tell it is alive


def now_iso() -> str:
    """The current UTC time as the journal writes it (sortable text, milliseconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def new_run_id(moment: datetime | None = None) -> str:
    """A run id that sorts by start time and reads as one: `20261129T205012Z-3fa2c1`."""
    moment = moment or datetime.now(UTC)
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"


def check_run_id(run_id: str) -> str:
    """The run id, or a ConfigurationError that shows its form (it becomes part of a blob name)."""
    if not RUN_ID.match(run_id):
        raise ConfigurationError("--run", f"{run_id!r} is not a run id (they look like 20261129T205012Z-3fa2c1)")
    return run_id


@dataclass(frozen=True)
class Entry:
    """One write: who (run or request), what (action, target), the value before and after, and how it ended."""

    entry_id: str
    time: str
    action: str
    target_id: str
    target: str
    before: Any
    after: Any
    run_id: str | None = None
    request_id: str | None = None
    correlation_id: str = "-"
    outcome: str = "pending"
    error: str | None = None
    settled_at: str | None = None
    settled_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "runId": self.run_id,
            "requestId": self.request_id,
            "correlationId": self.correlation_id,
            "action": self.action,
            "targetId": self.target_id,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "outcome": self.outcome,
            "error": self.error,
            "settledAt": self.settled_at,
            "settledBy": self.settled_by,
            "entryId": self.entry_id,
        }


@dataclass(frozen=True)
class SessionInfo:
    """A session blob as a listing shows it: its name, state, owner and last change."""

    name: str
    state: str
    host: str
    pid: int
    kind: str
    last_modified: datetime
    metadata: dict[str, str] = field(default_factory=dict)

    def owner_gone(self, stale_after: float, moment: datetime | None = None) -> bool:
        """Whether no live process can still write to it: its process is gone, or it has been silent too long.

        A live run appends at least every HEARTBEAT_SECONDS, so silence far beyond that means it is dead.
        """
        if self.host == _HOST and self.pid == os.getpid():
            return self.name not in _LIVE  # this process's own session, left open by a failed close
        if self.host == _HOST and os.name == "posix" and not _alive(self.pid):
            return True  # (on Windows, os.kill(pid, 0) would end that process: silence decides there)
        age = ((moment or datetime.now(UTC)) - self.last_modified).total_seconds()
        return age >= stale_after


@dataclass
class Journal:
    """The journal's container; every method raises JournalUnavailableError when storage fails."""

    container: Any
    endpoint: str = "the storage account"

    def run_session(self, run_id: str, kind: str, **meta: str) -> Session:
        """The session of a sweep or undo run; its blob is created with its first intent."""
        return run_session(self, run_id, kind, **meta)

    def request_session(self, request_id: str) -> Session:
        """The session of one run of a step of a request."""
        name = f"{request_prefix(request_id)}{new_run_id()}.jsonl"
        return Session(self, name, "request", {"requestId": request_id}, {})

    def run_entries(self, run_id: str) -> list[Entry]:
        """Every entry of one run, in the order of its intents (empty when the run wrote nothing)."""
        return self.read_session(f"runs/{check_run_id(run_id)}.jsonl")

    def run_info(self, run_id: str) -> dict[str, str] | None:
        """The metadata of a run's blob (kind, undoes, state), or None when the run wrote nothing."""
        from azure.core.exceptions import ResourceNotFoundError

        with self._storage(f"read run {run_id}", "read"):
            try:
                properties = self.container.get_blob_client(f"runs/{check_run_id(run_id)}.jsonl").get_blob_properties()
            except ResourceNotFoundError:
                return None
        return dict(properties.metadata or {})

    def request_entries(self, request_id: str) -> list[Entry]:
        """Every entry of one request, across its step deliveries, in time order."""
        names = [info.name for info in self.sessions(request_prefix(request_id))]
        return sorted((e for name in names for e in self.read_session(name)), key=lambda e: e.time)

    def since(self, moment: datetime) -> list[Entry]:
        """Every entry written at or after `moment`, runs and requests together, in time order."""
        stamp = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        names = [info.name for info in self.sessions("") if info.last_modified >= moment]
        return sorted((e for name in names for e in self.read_session(name) if e.time >= stamp), key=lambda e: e.time)

    def sessions(self, prefix: str) -> list[SessionInfo]:
        """The session blobs under a prefix, with their state and owner."""
        from azure.core.exceptions import ResourceNotFoundError

        with self._storage(f"list {(prefix or 'all sessions')}", "list"):
            try:
                blobs = list(self.container.list_blobs(name_starts_with=prefix, include=["metadata"]))
            except ResourceNotFoundError:
                return []  # the container is made by the first write
        log.info("journal: listed %d session(s) under %r", len(blobs), prefix)
        return [_info(blob) for blob in blobs]

    def append(self, name: str, lines: list[dict[str, Any]]) -> None:
        """Append JSON lines to a session blob, in blocks the service accepts."""
        data = "".join(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n" for line in lines)
        raw = data.encode("utf-8")
        with self._storage(f"append to {name}", "append"):
            blob = self.container.get_blob_client(name)
            for block in _blocks(raw):
                blob.append_block(block)
        log.info("journal: appended %d line(s), %d bytes to %s", len(lines), len(raw), name)

    def create(self, name: str, metadata: dict[str, str]) -> None:
        """Create a session blob (and the container, the first time)."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        with self._storage(f"create {name}", "create"):
            blob = self.container.get_blob_client(name)
            try:
                blob.create_append_blob(metadata=metadata)
            except ResourceNotFoundError:
                with contextlib.suppress(ResourceExistsError):
                    self.container.create_container()
                blob.create_append_blob(metadata=metadata)
        log.info("journal: opened %s", name)

    def set_state(self, name: str, metadata: dict[str, str], state: str) -> None:
        """Set the session's state, keeping the rest of its metadata (the service replaces all of it)."""
        with self._storage(f"close {name}", "close"):
            self.container.get_blob_client(name).set_blob_metadata({**metadata, "state": state})
        log.info("journal: %s is %s", name, state)

    def read_session(self, name: str) -> list[Entry]:
        """The entries of one session blob (empty when it does not exist)."""
        from azure.core.exceptions import ResourceNotFoundError

        with self._storage(f"read {name}", "read"):
            try:
                raw = self.container.get_blob_client(name).download_blob().readall()
            except ResourceNotFoundError:
                return []
        return fold(raw.decode("utf-8", "replace").splitlines())

    @contextlib.contextmanager
    def _storage(self, what: str, operation: str) -> Iterator[None]:
        """Storage errors become JournalUnavailableError, and a `journal_error` event (shared/events.py)."""
        from azure.core.exceptions import AzureError

        try:
            yield
        except AzureError as exc:
            emit("journal_error", operation=operation, write=operation in _WRITES, error=first_line(exc)[:300])
            where = f"container {self.container.container_name} at {self.endpoint}"
            raise JournalUnavailableError(f"the journal ({where}) could not {what}: {first_line(exc)}") from exc


@dataclass
class Session:
    """One process's record of one sweep or undo run, or one run of a step: intents go out at once, outcomes in the
    next append."""

    journal: Journal | None  # None: a report-only run without storage, which must never write
    name: str
    kind: str
    who: dict[str, str]
    meta: dict[str, str]
    _created: bool = False
    _pending: list[dict[str, Any]] = field(default_factory=list)
    _outcomes: list[tuple[str, str, str | None]] = field(default_factory=list)
    _unsettled: set[str] = field(default_factory=set)  # intents written whose outcome is not recorded yet
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    settled_others: bool = False  # a request's session: earlier deliveries were settled by this one
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:6] + "-")  # unique across sessions too

    @property
    def metadata(self) -> dict[str, str]:
        return {"kind": self.kind, "host": _HOST, "pid": str(os.getpid()), "state": "open", **self.meta}

    def entry(self, action: str, target_id: str, target: str, before: Any, after: Any) -> Entry:
        """A new intent of this session (not yet written)."""
        from shared.logs import correlation_id

        return Entry(
            entry_id=f"{self._prefix}{next(self._ids)}",
            time=now_iso(),
            action=action,
            target_id=target_id,
            target=target,
            before=before,
            after=after,
            run_id=self.who.get("runId"),
            request_id=self.who.get("requestId"),
            correlation_id=correlation_id(),
        )

    def intend(self, entries: Iterable[Entry]) -> None:
        """Make intents durable before their writes are sent (with any outcomes waiting); raises if it cannot."""
        entries = list(entries)
        if self.journal is None:
            raise JournalUnavailableError("no journal: AzureWebJobsStorage is not set, so nothing may be changed")
        ids = [e.entry_id for e in entries]
        with self._lock:
            if not self._created:
                self.journal.create(self.name, self.metadata)
                self._created = True
                _LIVE.add(self.name)
            # If this fails the writes are not made; should the append have landed after all, they are withdrawn.
            self._append(_intent_lines(entries), if_lost=[{"op": "withdraw", "ids": ids}])
            self._unsettled.update(ids)

    def record(self, entry_id: str, outcome: str, error: str | None = None) -> None:
        """Note how a write ended; it reaches the blob with the next append (a crash before that is settled)."""
        assert outcome in OUTCOMES[1:], outcome
        with self._lock:
            self._outcomes.append((entry_id, outcome, error))
            self._unsettled.discard(entry_id)

    def withdraw(self, entry_ids: Iterable[str]) -> None:
        """Intents whose writes were never sent (the run stopped first): they leave the journal's view."""
        ids = list(entry_ids)
        if ids:
            with self._lock:
                self._pending.append({"op": "withdraw", "ids": ids})
                self._unsettled.difference_update(ids)

    def _append(self, lines: list[dict[str, Any]], if_lost: list[dict[str, Any]] | None = None) -> None:
        """Append what waits, then `lines` (the caller holds the lock). If the append fails, what waited is kept
        for the next one, followed by `if_lost`; `lines` themselves are dropped."""
        assert self.journal is not None
        waiting = self._drain()
        if not (waiting or lines):
            return
        try:
            self.journal.append(self.name, waiting + lines)
        except JournalUnavailableError:
            self._pending = [*waiting, *(if_lost or []), *self._pending]
            raise

    def _drain(self) -> list[dict[str, Any]]:
        """The lines waiting to be appended (the caller holds the lock): outcomes grouped by kind, one line each."""
        lines, self._pending = self._pending, []
        plain: dict[str, list[str]] = {}
        for entry_id, outcome, error in self._outcomes:
            if error is None:
                plain.setdefault(outcome, []).append(entry_id)
            else:
                lines.append({"op": "outcome", "id": entry_id, "outcome": outcome, "error": error, "at": now_iso()})
        if plain:
            lines.append({"op": "outcomes", "at": now_iso(), **plain})
        self._outcomes = []
        return lines

    def keep_alive(self, every: float = HEARTBEAT_SECONDS) -> None:
        """Append what waits (or a sign of life) every `every` seconds until closed, so that no other process
        takes this run for dead during a long wait (a Retry-After, a slow last group)."""

        def beat() -> None:
            while not self._stop.wait(every):
                with self._lock:
                    if not self._created or self.journal is None:
                        continue
                    idle = not (self._pending or self._outcomes)
                    try:
                        self._append([{"op": "alive", "at": now_iso()}] if idle else [])
                    except JournalUnavailableError as exc:
                        log.warning("%s; trying again in %.0f s", exc, every)

        threading.Thread(
            target=contextvars.copy_context().run, args=(beat,), name="exoprov-journal-heartbeat", daemon=True
        ).start()

    def close(self) -> None:
        """Write what waits and mark the session closed; a session with unsettled intents (the run failed
        between a write and its outcome) or a failure here leaves it open, for the next run to settle."""
        self._stop.set()
        with self._lock:
            if not self._created or self.journal is None:
                return
            try:
                self._append([])
                if self._unsettled:
                    log.warning(
                        "journal: %s keeps %d intent(s) without an outcome; the next run settles them",
                        self.name,
                        len(self._unsettled),
                    )
                    return
                self.journal.set_state(self.name, self.metadata, "closed")
            finally:
                _LIVE.discard(self.name)  # closed, or left open for this process's next run to settle

    @property
    def written(self) -> bool:
        return self._created


def run_session(journal: Journal | None, run_id: str, kind: str, **meta: str) -> Session:
    """The session of a sweep or undo run (journal None: one that only reports)."""
    return Session(journal, f"runs/{check_run_id(run_id)}.jsonl", kind, {"runId": run_id}, meta)


def request_prefix(request_id: str) -> str:
    """Where a request's sessions live (a requestId may be `.`, which is no blob-name segment on its own)."""
    return f"requests/{request_id}.journal/"


def fold(lines: Iterable[str]) -> list[Entry]:
    """The entries a session's lines describe: intents in order, each with its latest outcome."""
    entries: dict[str, Entry] = {}
    for text in lines:
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            line = None
        if not isinstance(line, dict) or not _apply(entries, line):
            log.warning("journal: skipped a line that is no journal line (%d characters)", len(text))
    return list(entries.values())


def _apply(entries: dict[str, Entry], line: dict[str, Any]) -> bool:
    """Fold one line into the entries; False when it is not a journal line."""
    op = line.get("op")
    if op == "alive":
        return True  # a heartbeat
    if op == "intents" and isinstance(line.get("targets"), list):
        for target in line["targets"]:
            entry_id, target_id, name = (str(part) for part in target)
            entries[entry_id] = _entry(line, entry_id, target_id, name)
        return True
    if op == "outcomes":
        for outcome in ("applied", "noop"):
            for entry_id in line.get(outcome) or []:
                if str(entry_id) in entries:
                    entries[str(entry_id)] = replace(entries[str(entry_id)], outcome=outcome, settled_at=line.get("at"))
        return True
    if op == "outcome" and "id" in line and line.get("outcome") in OUTCOMES:
        key = str(line["id"])
        if key in entries:
            entries[key] = replace(
                entries[key],
                outcome=str(line["outcome"]),
                error=line.get("error"),
                settled_at=line.get("at"),
                settled_by=line.get("by"),
            )
        return True
    if op == "withdraw":
        for entry_id in line.get("ids") or [line.get("id")]:
            entries.pop(str(entry_id), None)
        return True
    return False


def settlement_line(entry_id: str, outcome: str, error: str | None, by: str) -> dict[str, Any]:
    """The line a settling run appends to a crashed session: the outcome it read back, and who read it."""
    return {"op": "outcome", "id": entry_id, "outcome": outcome, "error": error, "at": now_iso(), "by": by}


def _intent_lines(entries: list[Entry]) -> list[dict[str, Any]]:
    """Intents as lines: entries that share everything but their target go on one line (a sweep's group)."""
    lines: list[dict[str, Any]] = []
    for entry in entries:
        common = {
            "op": "intents",
            "time": entry.time,
            "action": entry.action,
            "before": entry.before,
            "after": entry.after,
            "run_id": entry.run_id,
            "request_id": entry.request_id,
            "correlation_id": entry.correlation_id,
        }
        target = [entry.entry_id, entry.target_id, entry.target]
        last = lines[-1] if lines else None
        if last is not None and all(last[k] == v for k, v in common.items() if k != "time"):
            last["targets"].append(target)
        else:
            lines.append({**common, "targets": [target]})
    return lines


def _entry(line: dict[str, Any], entry_id: str, target_id: str, target: str) -> Entry:
    return Entry(
        entry_id=entry_id,
        time=str(line.get("time", "")),
        action=str(line.get("action", "")),
        target_id=target_id,
        target=target,
        before=line.get("before"),
        after=line.get("after"),
        run_id=line.get("run_id"),
        request_id=line.get("request_id"),
        correlation_id=str(line.get("correlation_id", "-")),
    )


def _blocks(raw: bytes) -> Iterator[bytes]:
    # Split at line ends so that a reader never sees half a line between two blocks of one append.
    while len(raw) > MAX_APPEND_BYTES:
        cut = raw.rfind(b"\n", 0, MAX_APPEND_BYTES) + 1 or MAX_APPEND_BYTES  # one line longer than a block: cut it
        yield raw[:cut]
        raw = raw[cut:]
    if raw:
        yield raw


def _info(blob: Any) -> SessionInfo:
    meta = dict(blob.metadata or {})
    pid = meta.get("pid", "0")
    return SessionInfo(
        name=str(blob.name),
        state=meta.get("state", "open"),
        host=meta.get("host", ""),
        pid=int(pid) if pid.isdigit() else 0,
        kind=meta.get("kind", ""),
        last_modified=blob.last_modified,
        metadata=meta,
    )


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_LIVE: set[str] = set()  # the sessions this process has open, so that it never settles one of its own live ones
_HOST = socket.gethostname().encode("ascii", "replace").decode("ascii")[:200]
