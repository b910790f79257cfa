"""Exactly one result per request: redeliveries converge, odd ids work, forged steps are refused, waits are bounded."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any

import pytest

from shared.ledger import Outbox
from shared.messages import ChainProgress, StepMessage
from shared.provisioning import backoff
from shared.queues import REQUESTS, RESULTS, STEP_QUEUES, UNREADABLE
from shared.wiring import Clients
from tests.chain_helpers import collect_results, fresh_clients, request, run_worker, submit

ENTERPRISE = "19ec0d23-8335-4cbd-94ac-6050e30712fa"


def _take(clients: Clients, queue: str) -> list[str]:
    """Every message on a queue, taken off it (delayed ones included: they are made visible first)."""
    client = clients.storage().queue(queue)
    texts: list[str] = []
    for _ in range(20):
        batch = list(client.receive_messages(max_messages=32, visibility_timeout=1))
        if not batch and client.get_queue_properties().approximate_message_count == 0:
            return texts
        for message in batch:
            texts.append(message.content)
            client.delete_message(message)
        if not batch:
            # Delayed messages: wait until they are visible rather than peeking at an empty queue.
            threading.Event().wait(0.5)
    return texts


def _count(clients: Clients, queue: str) -> int:
    return int(clients.storage().queue(queue).get_queue_properties().approximate_message_count)


# -- 1. redelivery --------------------------------------------------------------------------------------


def test_a_redelivered_request_converges_on_the_first_delivery(chain_env, sandbox) -> None:
    """The same request message handled twice (worker died before deleting it) starts one chain, not two."""
    sandbox.add_user(upn="again@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    text = json.dumps(request("again", "again@contoso.com", mailboxType="Shared"))
    dispatcher = clients.dispatcher()
    dispatcher.handle(REQUESTS, text, "message-1")
    dispatcher.handle(REQUESTS, text, "message-1")  # the redelivery: same message id, handled again
    assert _count(clients, STEP_QUEUES["license"]) == 1
    assert run_worker(clients) == 0
    results = collect_results(clients)
    assert [r["status"] for r in results["again"]] == ["succeeded"]


def test_a_redelivered_step_is_dropped_once_its_first_delivery_moved_on(chain_env, sandbox) -> None:
    """A step message handled twice: the second delivery is stale and sends nothing more."""
    sandbox.add_user(upn="stale@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    dispatcher = clients.dispatcher()
    dispatcher.handle(REQUESTS, json.dumps(request("stale", "stale@contoso.com")), "message-1")
    (license_step,) = _take(clients, STEP_QUEUES["license"])
    dispatcher.handle(STEP_QUEUES["license"], license_step, "message-2")
    following = _count(clients, STEP_QUEUES["license"]) + _count(clients, STEP_QUEUES["mailbox"])
    dispatcher.handle(STEP_QUEUES["license"], license_step, "message-2")  # redelivered after it was handled
    assert _count(clients, STEP_QUEUES["license"]) + _count(clients, STEP_QUEUES["mailbox"]) == following == 1
    assert _count(clients, UNREADABLE) == 0
    assert run_worker(clients) == 0
    assert [r["status"] for r in collect_results(clients)["stale"]] == ["succeeded"]


def test_a_crash_between_recording_and_sending_is_repaired_by_the_redelivery(chain_env, sandbox, monkeypatch) -> None:
    """The step's outcome was recorded but never sent (the worker died): the redelivery sends it, once."""
    sandbox.add_user(upn="crash@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    dispatcher = clients.dispatcher()
    storage = clients.storage()
    real_send = storage.send

    def dies_once(name: str, text: str, delay: float = 0.0) -> None:
        monkeypatch.setattr(storage, "send", real_send)
        raise ConnectionError("the worker died here")

    monkeypatch.setattr(storage, "send", dies_once)
    text = json.dumps(request("crash", "crash@contoso.com"))
    with pytest.raises(ConnectionError):
        dispatcher.handle(REQUESTS, text, "message-1")
    assert _count(clients, STEP_QUEUES["license"]) == 0
    dispatcher.handle(REQUESTS, text, "message-1")
    dispatcher.handle(REQUESTS, text, "message-1")
    assert _count(clients, STEP_QUEUES["license"]) == 1
    assert run_worker(clients) == 0
    assert [r["status"] for r in collect_results(clients)["crash"]] == ["succeeded"]


# -- 2. any requestId the contract accepts works end to end ----------------------------------------------


@pytest.mark.parametrize("request_id", [".", "..", "a.", "x:y"])
def test_every_request_id_the_contract_accepts_gets_its_result(chain_env, sandbox, request_id: str) -> None:
    """requestIds such as "." and ".." are not blob names on their own; they still get exactly one result."""
    clients = fresh_clients()
    submit(clients, request(request_id, "not-a-upn"))
    assert run_worker(clients) == 0
    (result,) = collect_results(clients)[request_id]
    assert result["error"]["code"] == "invalid_request"


# -- 3. only provision-requests is an entry point ---------------------------------------------------------


def _forged(step: str, upn: str, license_id: str = "EXCHANGESTANDARD", **request_fields: object) -> str:
    body = {
        "requestId": "forged",
        "userPrincipalName": upn,
        "mailboxType": "Shared",
        "license": license_id,
        "usageLocation": None,
        "cloudManaged": True,
        "keepLicense": False,
        **request_fields,
    }
    return StepMessage(step, body, "forged-chain", 0.0, 0.0, state=ChainProgress(user_id=upn), seq=1).dumps()


def test_a_forged_configure_step_is_refused_and_changes_nothing(chain_env, sandbox) -> None:
    """A configure step no accepted request led to is parked: no conversion, no license removed, no result."""
    clients = fresh_clients()
    clients.dispatcher().handle(STEP_QUEUES["configure"], _forged("configure", "UserWithMailWithEXO@contoso.com"), "m")
    assert sandbox.stats()["commands"] == {}
    assert sandbox.licenses()["UserWithMailWithEXO@contoso.com"] != []
    assert _count(clients, UNREADABLE) == 1 and _count(clients, RESULTS) == 0


def test_a_forged_license_step_outside_the_allowlist_is_refused(chain_env, sandbox) -> None:
    """A license step asking for a SKU outside ALLOWED_LICENSES, and no accepted request, assigns nothing."""
    clients = fresh_clients()
    text = _forged("license", "UserNoMailNoEXO@contoso.com", "SPE_E5")
    clients.dispatcher().handle(STEP_QUEUES["license"], text, "m")
    assert sandbox.stats()["requestsTotal"] == 0
    assert _count(clients, UNREADABLE) == 1 and _count(clients, RESULTS) == 0


def test_an_altered_step_of_an_accepted_request_is_refused(chain_env, sandbox) -> None:
    """Changing a real step message (here: keepLicense) makes it one the ledger never sent: refused."""
    sandbox.add_user(upn="altered@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    dispatcher = clients.dispatcher()
    dispatcher.handle(REQUESTS, json.dumps(request("altered", "altered@contoso.com", mailboxType="Shared")), "m1")
    (text,) = _take(clients, STEP_QUEUES["license"])
    real = StepMessage.loads(text)
    altered = dataclasses.replace(real, request={**real.request, "mailboxType": "Room"}).dumps()
    dispatcher.handle(STEP_QUEUES["license"], altered, "m2")
    assert sandbox.stats()["requestsTotal"] == 0 and _count(clients, UNREADABLE) == 1
    dispatcher.handle(STEP_QUEUES["license"], text, "m3")  # the real one still runs
    assert run_worker(clients) == 0
    (result,) = collect_results(clients)["altered"]
    assert (result["status"], result["recipientTypeDetails"]) == ("succeeded", "SharedMailbox")


# -- 4. a license shortage of seconds ------------------------------------------------------------------------


def test_a_license_shortage_of_seconds_is_waited_out(chain_env, sandbox, monkeypatch) -> None:
    """No free unit when the request comes; one is returned 2 s later: the request waits and succeeds."""
    monkeypatch.setenv("LICENSE_WAIT_MINUTES", "1")
    sandbox.add_user(upn="patient@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    submit(clients, request("patient", "patient@contoso.com", license="EXCHANGEENTERPRISE"))
    timer = threading.Timer(2.0, sandbox.set_consumed_units, ("EXCHANGEENTERPRISE", 4))
    timer.start()
    try:
        assert run_worker(clients) == 0
    finally:
        timer.cancel()
    (result,) = collect_results(clients)["patient"]
    assert result["status"] == "succeeded"
    assert sandbox.licenses()["patient@contoso.com"] == [ENTERPRISE]


def test_a_shortage_that_lasts_fails_with_no_licenses_available_after_the_window(chain_env, sandbox) -> None:
    """No unit comes free within LICENSE_WAIT_MINUTES: no_licenses_available, saying how long it waited."""
    sandbox.add_user(upn="unlucky@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    submit(clients, request("unlucky", "unlucky@contoso.com", license="EXCHANGEENTERPRISE"))
    assert run_worker(clients) == 0
    (result,) = collect_results(clients)["unlucky"]
    assert result["error"]["code"] == "no_licenses_available" and "LICENSE_WAIT_MINUTES" in result["error"]["message"]


# -- 5. backoff ------------------------------------------------------------------------------------------------


def test_the_poll_backoff_never_overflows() -> None:
    """After thousands of polls (hours of waiting for a user) the delay is POLL_MAX_SECONDS, not an OverflowError."""
    assert backoff(60.0, 900.0, 0) == 60.0
    assert backoff(60.0, 900.0, 3) == 480.0
    assert backoff(60.0, 900.0, 5000) == 900.0


# -- races and lost answers found in review --------------------------------------------------------------------


class _AnswerLost:
    """A blob whose next conditional write is applied, its answer lost, and the SDK's retry refused (412)."""

    def __init__(self, blob: object, armed: list[bool]) -> None:
        self._blob, self._armed = blob, armed

    def __getattr__(self, name: str) -> object:
        return getattr(self._blob, name)

    def upload_blob(self, data: bytes, **options: object) -> object:
        if options.get("etag") and self._armed and self._armed.pop():
            self._blob.upload_blob(data, **options)  # type: ignore[attr-defined]
        return self._blob.upload_blob(data, **options)  # type: ignore[attr-defined]


def test_a_recorded_step_whose_answer_was_lost_is_still_sent(chain_env, sandbox, monkeypatch) -> None:
    """The ledger took the outcome but its answer was lost and the retry refused: the next message still goes out."""
    from shared.ledger import Ledger

    sandbox.add_user(upn="lost@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    armed = [True]
    real = Ledger._state_blob
    monkeypatch.setattr(Ledger, "_state_blob", lambda self, rid: _AnswerLost(real(self, rid), armed))
    clients.dispatcher().handle(REQUESTS, json.dumps(request("lost", "lost@contoso.com")), "message-1")
    assert not armed and _count(clients, STEP_QUEUES["license"]) == 1
    monkeypatch.setattr(Ledger, "_state_blob", real)
    assert run_worker(clients) == 0
    assert [r["status"] for r in collect_results(clients)["lost"]] == ["succeeded"]


def test_a_redelivery_during_the_first_deliverys_send_does_not_send_twice(chain_env, monkeypatch) -> None:
    """While one delivery is still sending the result, a redelivery of the same message sends nothing more."""
    clients = fresh_clients()
    dispatcher = clients.dispatcher()
    storage = clients.storage()
    real_send = storage.send

    def slow_send(name: str, text: str, delay: float = 0.0) -> None:
        if name == RESULTS:
            threading.Event().wait(0.5)  # one slow round trip to the queue
        real_send(name, text, delay)

    monkeypatch.setattr(storage, "send", slow_send)
    text = json.dumps(request("dup", "not-a-upn"))  # ends at once with invalid_request
    first = threading.Thread(target=dispatcher.handle, args=(REQUESTS, text, "m1"))
    first.start()
    while (state := dispatcher.ledger.read("dup")) is None or state.cursor == 0:
        threading.Event().wait(0.01)
    dispatcher.handle(REQUESTS, text, "m1")  # waits for the first delivery's hold, then finds it all sent
    first.join()
    assert len(collect_results(clients)["dup"]) == 1


def test_a_state_seen_before_the_hold_is_used_only_while_its_etag_holds(chain_env, sandbox) -> None:
    """The state read before taking the hold stands in for a second read only if nobody wrote the blob between."""
    ledger = fresh_clients().dispatcher().ledger
    seen = ledger.claim("etag-check", "message-1")
    assert seen is not None
    with ledger.hold("etag-check") as lease:
        assert ledger.read_held("etag-check", lease, seen) is seen  # unchanged since: no second read
        moved = ledger.advance(seen, Outbox(STEP_QUEUES["license"], "next", 0.0), lease=lease)  # another delivery
    assert moved is not None
    with ledger.hold("etag-check") as lease:
        now = ledger.read_held("etag-check", lease, seen)  # written since it was seen: read again
    assert now is not None and now.cursor == 1 and now.etag == moved.etag


def test_a_hold_another_delivery_keeps_is_tried_again_at_doubling_gaps_then_given_up(chain_env, monkeypatch) -> None:
    """Waiting out another delivery's hold costs about seven tries of the lease in HOLD_WAIT_SECONDS, not sixty."""
    from azure.storage.blob import BlobClient

    from shared.errors import RequestBusyError
    from shared.ledger import HOLD_WAIT_SECONDS

    ledger = fresh_clients().dispatcher().ledger
    assert ledger.claim("held", "message-1") is not None
    tries: list[float] = []
    pauses: list[float] = []
    acquire, sleep = BlobClient.acquire_lease, time.sleep

    def counted(self: BlobClient, *args: Any, **kwargs: Any) -> Any:
        tries.append(time.monotonic())
        return acquire(self, *args, **kwargs)

    def noted(seconds: float) -> None:
        if threading.current_thread() is this_test:  # the hold's own pauses, not another thread's
            pauses.append(seconds)
        sleep(seconds)

    this_test = threading.current_thread()

    busy = pytest.raises(RequestBusyError, match="held is being worked on by another delivery")
    with ledger.hold("held"):  # the other delivery
        monkeypatch.setattr(BlobClient, "acquire_lease", counted)
        monkeypatch.setattr(time, "sleep", noted)
        with busy, ledger.hold("held"):
            pass
    assert 4 <= len(tries) <= 8 and tries[-1] - tries[0] >= HOLD_WAIT_SECONDS - 0.1
    assert pauses[:3] == [0.05, 0.1, 0.2] and len(pauses) == len(tries) - 1


@pytest.mark.parametrize("dies", ["before the send", "after the send"])
def test_a_result_whose_delivery_died_around_its_send_reaches_the_requester_once(
    chain_env, monkeypatch, dies: str
) -> None:
    """The result was recorded, then the delivery died before sending it or before noting it sent: each
    redelivery looks for it on the results queue first, so it is sent once either way."""
    from shared.ledger import Ledger

    clients = fresh_clients()
    dispatcher, storage = clients.dispatcher(), clients.storage()
    real_send, real_mark = storage.send, Ledger.mark_sent

    def send(name: str, text: str, delay: float = 0.0) -> None:
        if name == RESULTS and dies == "before the send":
            monkeypatch.setattr(storage, "send", real_send)
            raise ConnectionError("the worker died before the send")
        real_send(name, text, delay)

    def mark_sent(self: Ledger, state: Any, lease: Any = None) -> None:
        if state.outbox.queue == RESULTS and dies == "after the send":
            monkeypatch.setattr(Ledger, "mark_sent", real_mark)
            raise ConnectionError("the worker died after the send")
        real_mark(self, state, lease)

    monkeypatch.setattr(storage, "send", send)
    monkeypatch.setattr(Ledger, "mark_sent", mark_sent)
    text = json.dumps(request("died", "not-a-upn"))  # ends at once with invalid_request
    with pytest.raises(ConnectionError, match=dies):
        dispatcher.handle(REQUESTS, text, "message-1")
    dispatcher.handle(REQUESTS, text, "message-1")
    dispatcher.handle(REQUESTS, text, "message-1")
    assert [r["error"]["code"] for r in collect_results(clients)["died"]] == ["invalid_request"]


def test_a_result_whose_sent_mark_the_lapsed_hold_refused_is_not_sent_again_once_taken(chain_env, monkeypatch) -> None:
    """The hold lapsed between the send and the mark: the mark goes beside the state, and a later delivery sends
    nothing even after the requester took the result off the queue."""
    from shared.ledger import Ledger

    clients = fresh_clients()
    dispatcher = clients.dispatcher()
    real_mark = Ledger.mark_sent

    def refused(self: Ledger, state: Any, lease: Any = None) -> bool:
        if state.outbox.queue != RESULTS:
            return real_mark(self, state, lease)
        monkeypatch.setattr(Ledger, "mark_sent", real_mark)
        return False  # what _write answers when another delivery took the lease meanwhile

    monkeypatch.setattr(Ledger, "mark_sent", refused)
    text = json.dumps(request("lapsed", "not-a-upn"))  # ends at once with invalid_request
    dispatcher.handle(REQUESTS, text, "message-1")
    assert [r["status"] for r in collect_results(clients)["lapsed"]] == ["failed"]  # the requester took it
    dispatcher.handle(REQUESTS, text, "message-1")  # the delivery that holds the request now
    assert collect_results(clients) == {}
