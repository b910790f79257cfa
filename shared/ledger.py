"""One chain and one result per request, whatever the queues redeliver: a small ledger of blobs.

`requests/{id}.json` is the chain's state: which message started it, the sequence number and digest of the
one step message it expects next, and the message that follows until it is known to be sent (the outbox).
A step runs only for the expected message, under a blob lease, and its outcome is recorded with a
conditional write before it is sent. So a redelivered message converges on the first delivery's result,
a crash between recording and sending is repaired by the next delivery, and a message that no accepted
request led to (a forged or stale one) is refused. The outbox's `sent` also marks the result as sent; when the
state cannot take that mark (the hold lapsed meanwhile), `results/{id}.json` takes it.

Blob names end in `.json`: a requestId may be `.` or `..`, which are not blob names on their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from shared.errors import RequestBusyError, first_line

__all__ = ["HOLD_WAIT_SECONDS", "STEP_LEASE_SECONDS", "ChainState", "Ledger", "Outbox", "digest"]

log = logging.getLogger("exoprov.ledger")

STEP_LEASE_SECONDS = 15  # a dead worker's hold on a request lapses after this long (the service's minimum)
RENEW_EVERY_SECONDS = 5.0  # a live worker renews its hold while a step runs, however long the step takes
HOLD_WAIT_SECONDS = 3.0  # how long a delivery waits for another one's hold before it comes back later
HOLD_FIRST_RETRY_SECONDS = 0.05  # then 0.1, 0.2 ... : seven tries in HOLD_WAIT_SECONDS, not sixty


def digest(text: str) -> str:
    """The fingerprint of a step message as the chain sent it."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Outbox:
    """The message a step's outcome sends, kept until it is known to be sent."""

    queue: str
    text: str
    delay: float
    sent: bool = False


@dataclass(frozen=True)
class ChainState:
    """Where a request's chain stands: the step message it expects next, and what to send."""

    request_id: str
    chain_id: str
    cursor: int  # the sequence number of the message the chain expects next; 0 is the request itself
    expected: str | None  # digest of that message (None for the request, which HR wrote)
    outbox: Outbox | None = None
    finished: bool = False
    etag: str = ""
    last_error: str | None = None  # why the expected step failed last, for the result if it gives up

    def to_json(self) -> str:
        outbox = None if self.outbox is None else self.outbox.__dict__
        data = {"chain": self.chain_id, "cursor": self.cursor, "expected": self.expected, "outbox": outbox}
        return json.dumps({**data, "finished": self.finished, "lastError": self.last_error}, separators=(",", ":"))

    @classmethod
    def from_json(cls, request_id: str, text: str, etag: str) -> ChainState:
        data = json.loads(text)
        outbox = Outbox(**data["outbox"]) if data.get("outbox") else None
        cursor, expected, finished = int(data["cursor"]), data.get("expected"), bool(data["finished"])
        return cls(request_id, data["chain"], cursor, expected, outbox, finished, etag, data.get("lastError"))


class Ledger:
    """Chain states in the ledger container (and, rarely, a result's sent mark beside them)."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def claim(self, request_id: str, chain_id: str) -> ChainState | None:
        """The request's state when this chain owns it (first claim, or a redelivery of the same message)."""
        from azure.core.exceptions import ResourceExistsError

        blob = self._state_blob(request_id)
        fresh = ChainState(request_id, chain_id, 0, None)
        try:
            written = blob.upload_blob(fresh.to_json().encode(), overwrite=False)
            return replace(fresh, etag=written["etag"])
        except ResourceExistsError:
            state = self.read(request_id)
            return state if state is not None and state.chain_id == chain_id else None

    def read(self, request_id: str) -> ChainState | None:
        """The request's state, or None when no accepted request has this id."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloaded = self._state_blob(request_id).download_blob()
        except ResourceNotFoundError:
            return None
        return ChainState.from_json(request_id, downloaded.readall().decode(), downloaded.properties.etag)

    def read_held(self, request_id: str, lease: Any, seen: ChainState | None) -> ChainState | None:
        """The request's state now that `lease` holds it: `seen` itself when the blob's ETag is still the one it was
        read with (taking a lease leaves the ETag as it is), else read again. One read less per step."""
        if seen is not None and seen.etag and getattr(lease, "etag", None) == seen.etag:
            return seen
        return self.read(request_id)

    @contextlib.contextmanager
    def hold(self, request_id: str) -> Iterator[Any]:
        """Hold the request's state for one step, so that two deliveries of one message never run at once."""
        from azure.core.exceptions import AzureError, HttpResponseError

        blob = self._state_blob(request_id)
        # The usual holder is the step that just sent this very message and is noting so: it lets go in
        # milliseconds, so the first look again is soon. Looks after it double apart (each is a storage
        # transaction), and a hold that outlasts HOLD_WAIT_SECONDS sends the message back for later.
        deadline = time.monotonic() + HOLD_WAIT_SECONDS
        pause = HOLD_FIRST_RETRY_SECONDS
        while True:
            try:
                lease = blob.acquire_lease(lease_duration=STEP_LEASE_SECONDS)
                break
            except HttpResponseError as exc:
                if exc.status_code != 409:
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RequestBusyError(f"request {request_id} is being worked on by another delivery") from exc
                time.sleep(min(pause, left))
                pause *= 2
        done = threading.Event()

        def renew() -> None:
            # A failed renewal is tried again: an expired lease can still be renewed while nobody took it.
            while not done.wait(RENEW_EVERY_SECONDS):
                try:
                    lease.renew()
                except AzureError as exc:
                    log.warning("request %s: could not renew the hold (%s); trying again", request_id, first_line(exc))

        renewer = threading.Thread(target=renew, name=f"hold-{request_id}", daemon=True)
        renewer.start()
        try:
            yield lease
        finally:
            done.set()
            renewer.join()
            with contextlib.suppress(HttpResponseError):
                lease.release()

    def advance(
        self, state: ChainState, outbox: Outbox, *, finished: bool = False, lease: Any = None
    ) -> ChainState | None:
        """Record a step's outcome: expect the next message, keep it in the outbox; None if someone was faster."""
        following = replace(
            state,
            cursor=state.cursor + 1,
            expected=None if finished else digest(outbox.text),
            outbox=outbox,
            finished=finished,
            last_error=None,
        )
        return self._write(state, following, lease)

    def note_error(self, state: ChainState, error: str, lease: Any = None) -> None:
        """Remember why the expected step failed, so that the result of a request that gives up can say it."""
        self._write(state, replace(state, last_error=error[:500]), lease)

    def mark_sent(self, state: ChainState, lease: Any = None) -> bool:
        """Note that the outbox went out, so that a later delivery does not send it again; False when the state
        did not take it (the hold lapsed, and another delivery holds the request now)."""
        assert state.outbox is not None
        return self._write(state, replace(state, outbox=replace(state.outbox, sent=True)), lease) is not None

    def note_result_sent(self, request_id: str) -> None:
        """Mark the request's result sent outside its state, for when the state could not take it (`mark_sent`):
        the delivery that holds the request now must not send the result again once the requester took it."""
        self._result_blob(request_id).upload_blob(b"", overwrite=True)

    def result_noted_sent(self, request_id: str) -> bool:
        """Whether `note_result_sent` marked the request's result sent."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._result_blob(request_id).get_blob_properties()
        except ResourceNotFoundError:
            return False
        return True

    def _write(self, before: ChainState, after: ChainState, lease: Any) -> ChainState | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceModifiedError

        blob = self._state_blob(before.request_id)
        try:
            written = blob.upload_blob(
                after.to_json().encode(),
                overwrite=True,
                etag=before.etag,
                match_condition=MatchConditions.IfNotModified,
                lease=lease,
            )
        except ResourceModifiedError:
            return None
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):  # the lease lapsed and another delivery holds it now
                return None
            raise
        return replace(after, etag=written["etag"])

    def _state_blob(self, request_id: str) -> Any:
        return self._container.get_blob_client(f"requests/{request_id}.json")

    def _result_blob(self, request_id: str) -> Any:
        return self._container.get_blob_client(f"results/{request_id}.json")
