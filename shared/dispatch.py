"""Applies the chain's outcomes to the queues: the one place both runtimes hand a message to.

Only `provision-requests` is an entry point. A step message runs only when the ledger expects exactly it
(same chain, same sequence number, same digest): a redelivered one finishes what its first delivery
recorded, and one that no accepted request led to is refused and parked. An outcome is recorded in the
ledger before it is sent, so that a crash in between is repaired by the next delivery.

A message that cannot be handled raises, and the runtime's retry rule (host.json, or the worker's copy of
it) makes it visible again, until `MAX_DEQUEUE_COUNT` moves it to the poison queue, where `handle_poison`
turns it into a failed result so that the HR system always hears back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Literal

from shared.errors import InvalidRequestError, RequestBusyError, first_line
from shared.events import emit
from shared.ledger import STEP_LEASE_SECONDS, ChainState, Ledger, Outbox, digest
from shared.logs import correlation_scope
from shared.messages import REQUEST_ID, Result, StepMessage, decode_body, parse_request_text, recover_request_id
from shared.provisioning import Chain, Finish, Next, StepOutcome, UnreadableMessage
from shared.queues import MAX_DEQUEUE_COUNT, POISON_SUFFIX, REQUESTS, RESULTS, STEP_QUEUES, UNREADABLE, Storage

__all__ = ["WAIT_IN_PLACE_SECONDS", "Dispatcher"]

log = logging.getLogger("exoprov.dispatch")

DeliveryVerdict = Literal["current", "stale", "refused"]
# A step that asks to run again this soon runs again in the same delivery: the first two looks of a wait for Entra's
# replication (1 s, then 2 s), a short Retry-After. Longer waits go back through the queue, so that a delivery never
# holds a slot of the runtime long.
WAIT_IN_PLACE_SECONDS = 3.0


class Dispatcher:
    """Runs the step for a queue message and sends what follows: the next message or the result."""

    def __init__(
        self, chain: Chain, storage: Storage, ledger: Ledger, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.chain = chain
        self.storage = storage
        self.ledger = ledger
        self.sleep = sleep

    def handle(self, queue: str, body: bytes | str, message_id: str) -> None:
        """Handle one message of a chain queue, as the runtime got it; raise to have the queue deliver it again later.

        `body` is the Functions trigger's bytes or the worker's str; it is decoded here, once, by `decode_body`.
        """
        text = self._decode(queue, body)
        if text is None:
            return
        if queue == REQUESTS:
            self._accept(text, message_id)
            return
        if queue not in STEP_QUEUES.values():
            raise ValueError(f"{queue} is not a queue of the chain")
        message = self._step_message(queue, text)
        if message is None:
            return
        with correlation_scope(message.request_id):
            seen = self.ledger.read(message.request_id)
            if self._verdict(seen, message, text, queue) == "refused":
                return
            try:
                with self.ledger.hold(message.request_id) as lease:
                    state = self.ledger.read_held(message.request_id, lease, seen)  # what it is now that we hold it
                    verdict = self._verdict(state, message, text, queue)
                    if verdict == "refused":
                        return
                    assert state is not None
                    recorded_now = False
                    if verdict == "current":
                        try:
                            outcome = self._run_waiting_in_place(message)
                        except Exception as exc:
                            self.ledger.note_error(state, f"{type(exc).__name__}: {first_line(exc)}", lease)
                            raise
                        state, recorded_now = self._record(state, outcome, lease)
                    # a stale delivery only repairs a send that was lost
                    self._send_outbox(state, lease, recorded_now, message.accepted_at)
            except RequestBusyError as exc:
                self._later(queue, text, exc)

    def handle_poison(self, queue: str, body: bytes | str) -> None:
        """A message the chain gave up on: tell the requester, or keep it for a person if no one can be told."""
        text = self._decode(queue, body)
        if text is None:
            return
        origin = queue.removesuffix(POISON_SUFFIX)
        request_id, upn, step = _identify(text)
        message = None if origin == REQUESTS else self._step_message(origin, text, park=False)
        if request_id is None or (origin != REQUESTS and message is None):
            self._park(text, f"a message no request can be told of gave up on {origin}")
            return
        accepted_at = None if message is None else message.accepted_at
        with correlation_scope(request_id):
            if self.ledger.read(request_id) is None:
                if message is not None:
                    self._verdict(None, message, text, origin)  # no accepted request led to it: parked
                    return
                if self.ledger.claim(request_id, f"poison:{origin}") is None:
                    return  # its request was claimed a moment ago: that chain answers
            try:
                with self.ledger.hold(request_id) as lease:
                    state = self.ledger.read(request_id)
                    assert state is not None
                    if message is not None and self._verdict(state, message, text, origin) != "current":
                        self._send_outbox(state, lease, recorded_now=False, accepted_at=accepted_at)
                        return
                    if message is None and state.cursor > 0:
                        self._send_outbox(state, lease, recorded_now=False)  # accepted after all: it goes on
                        return
                    log.error("request %s gave up on %s after %d attempts", request_id, origin, MAX_DEQUEUE_COUNT)
                    why = f"; the last error: {state.last_error}" if state.last_error else ""
                    failure = Result.failed(
                        request_id,
                        upn,
                        "internal_error",
                        f"the {step} step failed {MAX_DEQUEUE_COUNT} times in a row (queue {origin}), after its "
                        f"own retries{why}. The logs under correlation id {request_id} say more; the request can "
                        "be sent again with a new requestId",
                    )
                    recorded, recorded_now = self._record(state, Finish(failure), lease)
                    self._send_outbox(recorded, lease, recorded_now, accepted_at)
            except RequestBusyError as exc:
                self._later(queue, text, exc)

    def _run_waiting_in_place(self, message: StepMessage) -> StepOutcome:
        """Run the step; while it asks to run again after at most what is left of WAIT_IN_PLACE_SECONDS of sleep, wait
        here, under the request's hold, and run it again: a round trip through the queue costs about eight storage
        transactions and a poll's latency, more than a short wait is worth.

        A run after the first that raises ends the loop with the outcome before it, its wait done, so that what the
        earlier runs learned (an assignment made, a user first seen) is recorded; the next delivery meets the error.
        """
        left = WAIT_IN_PLACE_SECONDS
        outcome = self.chain.run(message)
        while isinstance(outcome, Next) and outcome.message.step == message.step and 0 < outcome.delay <= left:
            left -= outcome.delay
            log.debug("request %s: waits %.1f s within this delivery", message.request_id, outcome.delay)
            self.sleep(outcome.delay)
            try:
                following = self.chain.run(outcome.message)
            except Exception as exc:
                log.warning(
                    "request %s: %s step failed after a wait within its delivery (%s: %s); it runs again from the "
                    "queue",
                    message.request_id,
                    message.step,
                    type(exc).__name__,
                    first_line(exc),
                )
                return dataclasses.replace(outcome, delay=0.0)  # its wait is over
            outcome = following
        return outcome

    def publish(self, request_id: str, result_json: str, recorded_now: bool, accepted_at: float | None = None) -> None:
        """Send a result the ledger holds unsent. Unless this very delivery recorded it, an earlier attempt may have
        sent it and died before noting so, or noted it beside the state (its hold lapsed): then it is sent only if
        it is not noted and not on the queue. A sent result is a `result` event too (shared/events.py), timed from
        `accepted_at` (the chain's clock) when the caller knows it.
        """
        if not recorded_now and (self.ledger.result_noted_sent(request_id) or self._still_queued(result_json)):
            log.info("result for %s was already sent; not sending again", request_id)
            return
        self.storage.send(RESULTS, result_json)
        result = json.loads(result_json)
        code = (result.get("error") or {}).get("code")
        log.info("result for %s: %s %s", request_id, result["status"], code or "")
        seconds = None if accepted_at is None else round(max(0.0, self.chain.clock() - accepted_at), 3)
        emit(
            "result",
            requestId=request_id,
            status=result["status"],
            code=code,
            mailboxType=result.get("mailboxType"),
            seconds=seconds,
        )

    def _still_queued(self, result_json: str) -> bool:
        """Whether this very result waits on the results queue (only the first 32 messages can be seen)."""
        return any(m.content == result_json for m in self.storage.queue(RESULTS).peek_messages(max_messages=32))

    def _accept(self, text: str, message_id: str) -> None:
        try:
            outcome = self.chain.accept(text, message_id)
        except UnreadableMessage as exc:
            log.error("unreadable request parked on %s: %s", REQUESTS + POISON_SUFFIX, exc)
            self.storage.send(REQUESTS + POISON_SUFFIX, text)
            return
        request_id = outcome.message.request_id if isinstance(outcome, Next) else outcome.result.request_id
        with correlation_scope(request_id):
            state = self.ledger.claim(request_id, message_id)
            if state is None:
                log.warning(
                    "request %s was already received; this duplicate is ignored (one result per requestId)", request_id
                )
                return
            # Busy here is raised, not put back: a copy of the request would be a new message, a "duplicate".
            with self.ledger.hold(request_id) as lease:
                state = self.ledger.read_held(request_id, lease, state)
                assert state is not None
                recorded_now = False
                if state.cursor > 0:
                    log.info("request %s: a redelivery of its request; the chain already goes on", request_id)
                else:
                    state, recorded_now = self._record(state, outcome, lease)
                self._send_outbox(state, lease, recorded_now)

    def _decode(self, queue: str, body: bytes | str) -> str | None:
        """The message's text; None (and parked) when it is too large to be a message of the chain."""
        try:
            return decode_body(body)
        except InvalidRequestError as exc:
            raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            self._park(raw, f"refused a message on {queue} ({exc})")
            return None

    def _step_message(self, queue: str, text: str, *, park: bool = True) -> StepMessage | None:
        """The step message, checked against the contract and the allowlist; None (and parked) if it is not one.

        Its state is validated as it is read (`ChainProgress.from_json`), so a message with an unknown or
        ill-typed field, or without what its step needs (`userId` after license), is parked here, never run.
        """
        try:
            message = StepMessage.loads(text)
            _check_contract(message, self.chain)
        except (ValueError, TypeError, KeyError, InvalidRequestError) as exc:
            if park:
                self._park(text, f"refused a message on {queue} that no step of exoprov wrote ({exc})")
            return None
        if STEP_QUEUES[message.step] != queue:
            if park:
                self._park(text, f"refused a {message.step} step message on {queue}")
            return None
        return message

    def _verdict(self, state: ChainState | None, message: StepMessage, text: str, queue: str) -> DeliveryVerdict:
        """Whether the ledger expects this very message, has moved past it, or never sent it (then it is parked)."""
        if state is not None and state.chain_id == message.chain_id:
            if message.seq < state.cursor:
                log.info("request %s: step message %d already handled", message.request_id, message.seq)
                return "stale"
            if message.seq == state.cursor and state.expected == digest(text):
                return "current"
        self._park(
            text,
            f"request {message.request_id}: refused a {queue} message that no accepted request led to (forged, "
            "or altered)",
        )
        return "refused"

    def _record(self, state: ChainState, outcome: StepOutcome, lease: object) -> tuple[ChainState, bool]:
        """Write the outcome to the ledger before anything is sent: the state whose outbox goes out next, and
        whether this call recorded it (else an earlier attempt did, and may have sent it)."""
        if isinstance(outcome, Finish):
            recorded = self.ledger.advance(
                state, Outbox(RESULTS, outcome.result.dumps(), 0.0), finished=True, lease=lease
            )
        else:
            following = dataclasses.replace(outcome.message, seq=state.cursor + 1)
            box = Outbox(STEP_QUEUES[following.step], following.dumps(), outcome.delay)
            recorded = self.ledger.advance(state, box, lease=lease)
        if recorded is not None:
            return recorded, True
        now = self.ledger.read(state.request_id)
        if now is None or now.cursor <= state.cursor:
            # Nobody moved the chain on: the hold lapsed (a storage restart, a step past its lease).
            raise RequestBusyError(f"request {state.request_id}: the ledger did not take this step's outcome")
        # Moved on: by our own write whose answer was lost and retried, or by another delivery. Either way
        # what the ledger holds now is what must go out, so it is sent rather than dropped.
        log.info("request %s: the ledger had moved on to step message %d already", state.request_id, now.cursor)
        return now, False

    def _park(self, text: str, why: str) -> None:
        """Keep a message no step may run on provision-unreadable, for a person; never a result."""
        log.error("%s; kept on %s: %.200r", why, UNREADABLE, text)
        self.storage.send(UNREADABLE, text)

    def _later(self, queue: str, text: str, why: RequestBusyError) -> None:
        """Put the message back for when the other delivery's hold has lapsed (without spending a retry)."""
        log.info("%s; this message comes back in %d s", why, STEP_LEASE_SECONDS)
        self.storage.send(queue, text, STEP_LEASE_SECONDS)

    def _send_outbox(
        self, state: ChainState, lease: object, recorded_now: bool, accepted_at: float | None = None
    ) -> None:
        """Send the recorded outcome unless it is known to be sent; only under the request's hold, so once.
        `recorded_now`: this delivery recorded it; `accepted_at` is when the chain accepted the request, when the
        caller knows it (for the result event)."""
        box = state.outbox
        if box is None or box.sent:
            return
        if box.queue != RESULTS:
            self.storage.send(box.queue, box.text, box.delay)
            self.ledger.mark_sent(state, lease)
            return
        self.publish(state.request_id, box.text, recorded_now, accepted_at)
        if not self.ledger.mark_sent(state, lease):
            log.warning("request %s: the hold lapsed before the result was noted sent; noted beside", state.request_id)
            self.ledger.note_result_sent(state.request_id)


def _check_contract(message: StepMessage, chain: Chain) -> None:
    """The request a step carries must be one the contract accepts (the allowlist is the chain's to apply)."""
    try:
        parse_request_text(json.dumps(message.request), chain.settings)
    except InvalidRequestError as exc:
        if exc.code != "license_not_allowed":
            raise


def _identify(text: str) -> tuple[str | None, str | None, str]:
    """requestId, UPN and step of a step envelope or a raw request, as far as they can be read."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return recover_request_id(text), None, "accept"
    step = "accept"
    if isinstance(data, dict) and isinstance(data.get("request"), dict):
        step, data = str(data.get("step", "?")), data["request"]
    if not isinstance(data, dict):
        return None, None, step
    request_id, upn = data.get("requestId"), data.get("userPrincipalName")
    if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
        return None, None, step
    return request_id, upn if isinstance(upn, str) else None, step
