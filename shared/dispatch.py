"""Applies the chain's outcomes to the queues: the one place both runtimes hand a message to.

A message that cannot be handled raises, and the runtime's retry rule (host.json, or the worker's
copy of it) makes it visible again, until `MAX_DEQUEUE_COUNT` moves it to the poison queue, where
`handle_poison` turns it into a failed result so that the HR system always hears back.
"""

from __future__ import annotations

import json
import logging

from shared.ledger import Ledger
from shared.logs import correlation_scope
from shared.messages import REQUEST_ID, Result, StepMessage, decode_body, recover_request_id
from shared.provisioning import Chain, Finish, Next, Outcome, UnreadableMessage
from shared.queues import MAX_DEQUEUE_COUNT, POISON_SUFFIX, REQUESTS, RESULTS, STEP_QUEUES, UNREADABLE, Storage

log = logging.getLogger("exoprov.dispatch")


class Dispatcher:
    """Runs the step for a queue message and sends what follows: the next message or the result."""

    def __init__(self, chain: Chain, storage: Storage, ledger: Ledger) -> None:
        self.chain = chain
        self.storage = storage
        self.ledger = ledger

    def handle(self, queue: str, body: bytes | str, message_id: str) -> None:
        """Handle one message of a chain queue; raise to have the queue deliver it again later."""
        text = decode_body(body) if isinstance(body, bytes) else body
        if queue == REQUESTS:
            self._accept(text, message_id)
            return
        step = next((s for s, q in STEP_QUEUES.items() if q == queue), None)
        if step is None:
            raise ValueError(f"{queue} is not a queue of the chain")
        try:
            message = StepMessage.loads(text)
        except (ValueError, TypeError, KeyError):
            log.error("unreadable message on %s, parked: %.200r", queue, text)
            self.storage.send(queue + POISON_SUFFIX, text)
            return
        with correlation_scope(message.request_id):
            self._apply(self.chain.run(message))

    def handle_poison(self, queue: str, body: bytes | str) -> None:
        """A message the chain gave up on: tell the requester, or keep it for a person if no one can be told."""
        text = decode_body(body) if isinstance(body, bytes) else body
        origin = queue.removesuffix(POISON_SUFFIX)
        request_id, upn, step = _identify(text)
        if request_id is None:
            log.error("message without a requestId gave up on %s; kept on %s: %.200r", origin, UNREADABLE, text)
            self.storage.send(UNREADABLE, text)
            return
        with correlation_scope(request_id):
            log.error("request %s gave up on %s after %d attempts", request_id, origin, MAX_DEQUEUE_COUNT)
            self.publish(
                Result.failed(
                    request_id,
                    upn,
                    "internal_error",
                    f"the {step} step failed {MAX_DEQUEUE_COUNT} times in a row (queue {origin}), after its own "
                    f"retries; the logs under correlation id {request_id} say why. The request can be sent again "
                    "with a new requestId",
                )
            )

    def publish(self, result: Result) -> None:
        """Send the result, unless one was already sent for this request."""
        text = result.dumps()
        if not self.ledger.should_send(result.request_id, text):
            log.info("result for %s was already sent; not sending again", result.request_id)
            return
        self.storage.send(RESULTS, text)
        self.ledger.mark_sent(result.request_id)
        log.info("result for %s: %s %s", result.request_id, result.status, (result.error or {}).get("code", ""))

    def _accept(self, text: str, message_id: str) -> None:
        try:
            outcome = self.chain.accept(text, message_id)
        except UnreadableMessage as exc:
            log.error("unreadable request parked on %s: %s", REQUESTS + POISON_SUFFIX, exc)
            self.storage.send(REQUESTS + POISON_SUFFIX, text)
            return
        request_id = outcome.message.request_id if isinstance(outcome, Next) else outcome.result.request_id
        with correlation_scope(request_id):
            if not self.ledger.claim(request_id, message_id):
                log.warning(
                    "request %s was already received; this duplicate is ignored (one result per requestId)", request_id
                )
                return
            self._apply(outcome)

    def _apply(self, outcome: Outcome) -> None:
        if isinstance(outcome, Finish):
            self.publish(outcome.result)
        else:
            self.storage.send(STEP_QUEUES[outcome.message.step], outcome.message.dumps(), outcome.delay)


def _identify(text: str) -> tuple[str | None, str | None, str]:
    """requestId, UPN and step of a step envelope or a raw request, as far as they can be read."""
    try:
        data = json.loads(text)
    except ValueError:
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
