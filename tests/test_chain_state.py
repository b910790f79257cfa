"""The chain's typed state: read and checked once as a step message arrives, written the same way every time."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from shared.ledger import digest
from shared.messages import ChainProgress, MailboxBefore, StepMessage, StepMessageError
from shared.queues import RESULTS, STEP_QUEUES, UNREADABLE
from tests.chain_helpers import fresh_clients

REQUEST = {
    "requestId": "r-1",
    "userPrincipalName": "jane@contoso.com",
    "mailboxType": "Shared",
    "license": "EXCHANGESTANDARD",
    "usageLocation": None,
    "cloudManaged": True,
    "keepLicense": False,
}
EVERY_FIELD = ChainProgress(
    user_id="6f1c2a4e-0000-4000-8000-000000000001",
    user_first_seen_at=1764441600.5,
    usage_location_set_at=1764441601.0,
    no_free_units_since=1764441602.0,
    license_assigned_at=1764441603.25,
    lag_polls=3,
    mailbox_before=MailboxBefore(cloud_managed=False, type="UserMailbox"),
    written=True,
    license_removed_at=1764441700.0,
    retries={"license": 2, "configure": 1},
)
# A configure message exactly as the previous version wrote it (state an untyped dict, with skuId and
# licensedByChain, which nothing read), as it may still wait on provision-configure when this version starts.
PREVIOUS_VERSION = (
    '{"step":"configure","request":{"requestId":"r-1","userPrincipalName":"jane@contoso.com","mailboxType":"Shared",'
    '"license":"EXCHANGESTANDARD","usageLocation":null,"cloudManaged":true,"keepLicense":false},'
    '"chain_id":"m-1","accepted_at":1764441600.1,"wait_started_at":1764441650.2,"polls":1,'
    '"state":{"userFirstSeenAt":1764441600,"userId":"6f1c2a4e-0000-4000-8000-000000000001",'
    '"skuId":"4b9405b0-7788-4568-add1-99614e613b69","licenseAssignedAt":1764441603.25,"licensedByChain":true,'
    '"retries.license":2,"mailboxBefore":{"cloudManaged":false,"type":"UserMailbox"},"written":true,'
    '"lagPolls":1,"licenseRemovedAt":1764441700.0},"seq":3,"v":1}'
)


def _message_text(step: str = "configure", state: dict[str, Any] | None = None) -> str:
    """A step message with `state` as its wire-form state, as text."""
    envelope = StepMessage(step, REQUEST, "m-1", 1.0, 2.0, state=EVERY_FIELD, seq=3).to_json()
    return json.dumps({**envelope, "state": state or {}}, separators=(",", ":"))


def test_every_field_survives_a_round_trip_through_the_wire_form() -> None:
    """A step message carrying every field of the state reads back equal to what was written."""
    message = StepMessage("configure", REQUEST, "m-1", 1.0, 2.0, polls=4, state=EVERY_FIELD, seq=3)
    assert StepMessage.loads(message.dumps()) == message
    assert ChainProgress.from_json(json.loads(json.dumps(ChainProgress().to_json()))) == ChainProgress()


def test_the_same_state_always_gives_the_same_text() -> None:
    """Equal states give the same message text, so a redelivery keeps matching the digest the ledger holds."""
    other_order = dataclasses.replace(EVERY_FIELD, retries={"configure": 1, "license": 2})
    first = StepMessage("configure", REQUEST, "m-1", 1.0, 2.0, state=EVERY_FIELD, seq=3).dumps()
    second = StepMessage("configure", REQUEST, "m-1", 1.0, 2.0, state=other_order, seq=3).dumps()
    assert first == second and digest(StepMessage.loads(first).dumps()) == digest(first)


def test_fields_at_their_default_are_left_out_of_the_wire_form() -> None:
    """A fresh state is `{}` on the wire, as the first step message always was; a set field appears by name."""
    assert ChainProgress().to_json() == {}
    assert ChainProgress(user_id="u", written=True).to_json() == {"userId": "u", "written": True}


def test_a_message_written_by_the_previous_version_is_still_read() -> None:
    """A queued message of the old shape is read, its fields typed, and skuId and licensedByChain dropped."""
    message = StepMessage.loads(PREVIOUS_VERSION)
    expected = dataclasses.replace(
        EVERY_FIELD,
        user_first_seen_at=1764441600.0,
        usage_location_set_at=None,
        no_free_units_since=None,
        lag_polls=1,
        retries={"license": 2},
    )
    assert message.state == expected
    assert message.state.licensed_by_chain and message.user_id == EVERY_FIELD.user_id
    assert "skuId" not in message.dumps() and "licensedByChain" not in message.dumps()


def test_the_state_cannot_be_changed_in_place() -> None:
    """Steps make a new state with dataclasses.replace: neither a field nor the retry counts can be assigned."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        EVERY_FIELD.user_id = "someone-else"  # type: ignore[misc]
    with pytest.raises(TypeError):
        EVERY_FIELD.retries["license"] = 9  # type: ignore[index]
    assert EVERY_FIELD.retried("license").retries == {"license": 3, "configure": 1}


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("userId", 42, "state.userId"),
        ("userId", "", "state.userId"),
        ("userFirstSeenAt", "yesterday", "state.userFirstSeenAt"),
        ("userFirstSeenAt", True, "state.userFirstSeenAt"),
        ("usageLocationSetAt", [1], "state.usageLocationSetAt"),
        ("noFreeUnitsSince", {}, "state.noFreeUnitsSince"),
        ("licenseAssignedAt", float("inf"), "state.licenseAssignedAt"),
        ("licenseAssignedAt", 10**400, "state.licenseAssignedAt"),
        ("licenseRemovedAt", "1764441700", "state.licenseRemovedAt"),
        ("lagPolls", -1, "state.lagPolls"),
        ("lagPolls", 1.5, "state.lagPolls"),
        ("lagPolls", True, "state.lagPolls"),
        ("written", "true", "state.written"),
        ("mailboxBefore", "UserMailbox", "state.mailboxBefore"),
        ("mailboxBefore", {"cloudManaged": "yes"}, "state.mailboxBefore.cloudManaged"),
        ("mailboxBefore", {"type": 3}, "state.mailboxBefore.type"),
        ("mailboxBefore", {"size": 1}, "state.mailboxBefore.size"),
        ("retries.license", "2", "state.retries.license"),
        ("retries.license", -1, "state.retries.license"),
        ("retries.accept", 1, "state.retries.accept"),
        ("skuId", 5, "state.skuId"),
        ("licensedByChain", "yes", "state.licensedByChain"),
        ("colour", "blue", "state.colour"),
    ],
)
def test_an_unknown_or_ill_typed_state_field_is_refused_by_name(name: str, value: Any, field: str) -> None:
    """Each field with a value of the wrong type, and any field this version does not know, is refused by name."""
    with pytest.raises(StepMessageError) as refused:
        StepMessage.loads(_message_text(state={"userId": "u-1", name: value}))
    assert refused.value.field == field and str(refused.value).startswith(f"{field}: ")


def test_a_state_that_is_not_an_object_is_refused() -> None:
    """A state of another JSON type is refused naming the state itself."""
    with pytest.raises(StepMessageError) as refused:
        StepMessage.loads(_message_text().replace('"state":{}', '"state":[]'))
    assert refused.value.field == "state"


@pytest.mark.parametrize("step", ["mailbox", "configure"])
def test_a_step_after_license_without_user_id_is_refused_when_read(step: str) -> None:
    """A mailbox or configure message without userId is refused as it is read, not a KeyError in the step."""
    with pytest.raises(StepMessageError) as refused:
        StepMessage.loads(_message_text(step, {"written": True}))
    assert refused.value.field == "state.userId" and step in str(refused.value)
    assert StepMessage.loads(_message_text("license")).state == ChainProgress()


def test_a_step_cannot_write_a_message_its_next_step_could_not_read() -> None:
    """Building a configure message without userId fails in the writer, so the chain never sends one."""
    with pytest.raises(StepMessageError):
        StepMessage("configure", REQUEST, "m-1", 1.0, 2.0, state=ChainProgress())
    message = StepMessage("license", REQUEST, "m-1", 1.0, 2.0)
    with pytest.raises(StepMessageError):
        dataclasses.replace(message, step="mailbox")


def test_the_mailbox_read_keeps_only_values_of_the_type_exchange_gives() -> None:
    """What Get-Mailbox read is kept typed: a value of another type becomes null rather than a bad message."""
    assert MailboxBefore.read({"IsExchangeCloudManaged": False, "RecipientTypeDetails": "UserMailbox"}) == (
        MailboxBefore(False, "UserMailbox")
    )
    assert MailboxBefore.read({"IsExchangeCloudManaged": "False", "RecipientTypeDetails": 7}) == MailboxBefore()


def test_a_configure_message_without_user_id_is_parked_and_changes_nothing(chain_env, sandbox) -> None:
    """The dispatcher parks such a message on provision-unreadable: no step runs, no write, no result."""
    clients = fresh_clients()
    text = _message_text("configure", {"written": False})
    clients.dispatcher().handle(STEP_QUEUES["configure"], text, "m-1")
    storage = clients.storage()
    (parked,) = storage.queue(UNREADABLE).receive_messages()
    assert parked.content == text and storage.pending((RESULTS,)) == 0
    assert sandbox.stats()["commands"] == {} and sandbox.stats()["requestsTotal"] == 0
