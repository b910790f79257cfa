"""Bad input: the request parser either parses or refuses with a named reason, and nothing crashes a step."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.dispatch import Dispatcher
from shared.errors import InvalidRequestError
from shared.messages import MAX_MESSAGE_BYTES, Request, decode_body, parse_request
from shared.provisioning import UnreadableMessage
from shared.queues import CHAIN_QUEUES, POISON_QUEUES, REQUESTS, UNREADABLE
from shared.settings import Settings
from tests.chain_helpers import collect_results, fresh_clients
from tests.conftest import empty_storage

SETTINGS = Settings.from_env({"ALLOWED_LICENSES": "EXCHANGESTANDARD", "DEFAULT_LICENSE": "EXCHANGESTANDARD"})
FIELDS = ["requestId", "userPrincipalName", "mailboxType", "license", "usageLocation", "cloudManaged", "keepLicense"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def outcome(raw: bytes | str) -> Request | InvalidRequestError:
    """Parse, turning the one allowed failure into a value; any other exception fails the test."""
    try:
        return parse_request(raw, SETTINGS)
    except InvalidRequestError as exc:
        assert exc.field and str(exc).startswith(f"{exc.field}: ")
        assert exc.code in ("invalid_request", "license_not_allowed")
        return exc


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_parse_or_are_refused_by_name(raw: bytes) -> None:
    """Any bytes at all, invalid UTF-8 included: a Request, or a refusal naming a field."""
    outcome(raw)


@given(st.dictionaries(st.sampled_from([*FIELDS, "extra", "RequestId"]), json_values, max_size=8))
def test_arbitrary_json_objects_parse_or_are_refused_by_name(payload: dict[str, Any]) -> None:
    """Wrong types, unknown fields, odd values: never an exception other than InvalidRequestError."""
    result = outcome(json.dumps(payload))
    if isinstance(result, Request):
        assert set(payload) <= set(FIELDS) and result.request_id == payload["requestId"]


@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8))
def test_base64_and_plain_text_give_the_same_answer(payload: dict[str, Any]) -> None:
    """A request sent as base64 is judged exactly like the same request in plain text."""
    text = json.dumps(payload)
    plain, encoded = outcome(text), outcome(base64.b64encode(text.encode()))
    assert type(plain) is type(encoded) and str(plain) == str(encoded)


@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8).map(json.dumps))
def test_a_queue_body_reads_the_same_as_bytes_or_text_plain_or_base64(text: str) -> None:
    """The Functions trigger's bytes and the worker's str, plain or base64, decode to the same text."""
    encoded = base64.b64encode(text.encode())
    assert decode_body(text) == decode_body(text.encode()) == decode_body(encoded) == decode_body(encoded.decode())


def test_the_dispatcher_decodes_a_body_once_whichever_runtime_hands_it_over() -> None:
    """Both runtimes' bodies reach the chain as the same text, decoded once: base64 of base64 stays base64 once."""
    seen: list[str] = []

    def accept(text: str, chain_id: str) -> None:
        seen.append(text)
        raise UnreadableMessage("noted")

    chain: Any = SimpleNamespace(accept=accept)
    storage: Any = SimpleNamespace(send=lambda queue, text, delay=0.0: None)
    dispatcher = Dispatcher(chain, storage, ledger=SimpleNamespace())  # type: ignore[arg-type]
    text = valid()
    encoded = base64.b64encode(text.encode())
    twice = base64.b64encode(encoded)
    for body in (text, text.encode(), "\ufeff" + text, encoded, encoded.decode(), twice, twice.decode()):
        dispatcher.handle(REQUESTS, body, "m-1")
    assert seen == [text] * 5 + [encoded.decode()] * 2


def valid(**fields: Any) -> str:
    return json.dumps({"requestId": "r-1", "userPrincipalName": "jane@contoso.com", **fields})


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (valid(requestId="x" * 129), "requestId"),
        (valid(requestId="bad id"), "requestId"),
        (valid(userPrincipalName="a" * 65 + "@contoso.com"), "userPrincipalName"),
        (valid(userPrincipalName="a" * 60 + "@" + "b" * 49 + ".com"), "userPrincipalName"),
        (valid(userPrincipalName=".jane@contoso.com"), "userPrincipalName"),
        (valid(userPrincipalName="jane@contoso"), "userPrincipalName"),
        (valid(mailboxType="Castle"), "mailboxType"),
        (valid(mailboxType=["Shared"]), "mailboxType"),
        (valid(license="x" * 65), "license"),
        (valid(license="SPE_E5"), "license"),
        (valid(usageLocation="DEU"), "usageLocation"),
        (valid(cloudManaged="yes"), "cloudManaged"),
        (valid(keepLicense=1), "keepLicense"),
        (valid(colour="blue"), "colour"),
        (valid(userPrincipalName="x" * 300), "userPrincipalName"),
    ],
)
def test_every_field_beyond_its_limit_is_refused_by_name(text: str, field: str) -> None:
    """Each field just past its rule is refused, naming that field; the requestId is kept unless it is the bad one."""
    result = outcome(text)
    assert isinstance(result, InvalidRequestError) and result.field == field
    assert (result.request_id is None) is (field == "requestId")


def test_every_field_at_its_limit_is_accepted() -> None:
    """The longest requestId, the longest UPN parts and every mailbox type are accepted."""
    for mailbox_type in ("User", "shared", "ROOM", "Equipment"):
        request = outcome(
            valid(
                requestId="x" * 128,
                userPrincipalName="a" * 64 + "@contoso.com",
                mailboxType=mailbox_type,
                usageLocation="de",
                cloudManaged=False,
                keepLicense=True,
            )
        )
        assert isinstance(request, Request) and request.usage_location == "DE"
    assert isinstance(outcome(valid(userPrincipalName="o'brien.j_2@sub.contoso.co.uk")), Request)


def test_huge_messages_are_refused_without_reading_them() -> None:
    """A message over the queue limit is refused by size, as a whole."""
    result = outcome(valid(userPrincipalName="jane@contoso.com", mailboxType="x" * (MAX_MESSAGE_BYTES + 1)))
    assert isinstance(result, InvalidRequestError) and result.field == "message"


def test_deeply_nested_json_is_refused() -> None:
    """Nesting beyond a handful of levels (or beyond Python's recursion limit) is refused, not a crash."""
    shallow = '{"requestId": "r-1", "userPrincipalName": "jane@contoso.com", "license": ' + "[" * 20 + "]" * 20 + "}"
    deep = '{"requestId": "r-1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert isinstance(outcome(shallow), InvalidRequestError)
    result = outcome(deep)
    assert isinstance(result, InvalidRequestError) and result.field == "message"


def test_invalid_utf8_is_refused_with_the_request_id_kept() -> None:
    """Bytes that are not UTF-8 inside a string: refused, and the requestId still recovered for the result."""
    result = outcome(b'{"requestId": "r-9", "userPrincipalName": "j\xff\xfe@contoso.com"}')
    assert isinstance(result, InvalidRequestError) and result.request_id == "r-9"


@pytest.mark.usefixtures("chain_env")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=512) | json_values.map(json.dumps), queue=st.sampled_from(CHAIN_QUEUES))
def test_no_message_crashes_a_step(body: bytes | str, queue: str) -> None:
    """Whatever arrives on any queue of the chain, handling it raises nothing: it becomes a result or is parked."""
    clients = fresh_clients()
    clients.dispatcher().handle(queue, body, "message-1")
    storage = clients.storage()
    parked = storage.pending((UNREADABLE, *POISON_QUEUES))
    results = collect_results(clients)
    assert parked + sum(len(r) for r in results.values()) + storage.pending(CHAIN_QUEUES) >= 1
    empty_storage(storage)  # the next example starts from empty queues and an empty ledger
