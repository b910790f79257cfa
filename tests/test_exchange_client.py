"""The InvokeCommand protocol: paging, $select, $batch and error mapping, against the sandbox."""

from __future__ import annotations

import json
import time

import pytest
import urllib3

from shared.errors import (
    BadRequestError,
    CallContext,
    DualWriteError,
    NotFoundError,
    OutcomeUnknownError,
    ServiceUnavailableError,
    ThrottledError,
    UnknownCmdletError,
    WriteScopeError,
)
from shared.exchange import APP_ANCHOR, BATCH_LIMIT, Command, ExchangeClient, map_error
from shared.graph import map_graph_error
from shared.http import Response, status_error
from shared.wiring import Clients

GENERATED = {"generate": {"mailboxes": 25, "candidates": 5}}


@pytest.fixture
def exo(clients: Clients) -> ExchangeClient:
    return clients.exchange()


def test_listing_follows_next_link_by_post_with_the_same_body(settings, sandbox) -> None:
    """With pages of 10, 25 mailboxes take three POSTs, and every mailbox comes back once."""
    sandbox.reset(GENERATED)
    exo = Clients.from_settings(settings).exchange()
    pages = list(exo.pages(Command("Get-Mailbox", {"ResultSize": "Unlimited"}, ("UserPrincipalName",)), page_size=10))
    assert [len(p) for p in pages] == [10, 10, 5]
    assert len({m["UserPrincipalName"] for p in pages for m in p}) == 25
    assert sandbox.stats()["requests"]["InvokeCommand Get-Mailbox"] == 3


def test_select_trims_properties_and_annotations_are_dropped(exo: ExchangeClient) -> None:
    """Only the selected properties come back, without their @odata.type siblings."""
    (box,) = exo.invoke(
        Command("Get-Mailbox", {"Identity": "UserWithMailWithEXO@contoso.com"}, ("ExchangeGuid", "EmailAddresses"))
    ).value
    assert set(box) == {"ExchangeGuid", "EmailAddresses"}


def test_requests_carry_tenant_guid_and_app_anchor(sandbox, clients: Clients) -> None:
    """The path holds the tenant GUID from the token and X-AnchorMailbox names the app's system mailbox."""
    exo = clients.exchange()
    assert exo.tenant_id == "6f1c7c4e-0000-4000-8000-00000000c0de"
    token = clients.tokens.get("https://outlook.office365.com").value
    url = f"{sandbox.url}/adminapi/beta/{exo.tenant_id}/InvokeCommand"
    body = json.dumps(Command("Get-OrganizationConfig").body())
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert urllib3.request("POST", url, body=body, headers=headers).status == 400
    headers["X-AnchorMailbox"] = APP_ANCHOR % exo.tenant_id
    assert urllib3.request("POST", url, body=body, headers=headers).status == 200


def test_an_unknown_cmdlet_is_a_403_with_a_nul_body_mapped_to_unknown_cmdlet(exo: ExchangeClient) -> None:
    """Exchange's NUL-filled gzip 403 becomes UnknownCmdletError with a hint about roles."""
    with pytest.raises(
        UnknownCmdletError, match="the cmdlet does not exist, the identity has the Exchange.ManageAsApp"
    ):
        exo.invoke(Command("Get-Nonsense"))


def test_a_missing_object_is_not_found(exo: ExchangeClient) -> None:
    """A 404 with ManagementObjectNotFoundException becomes NotFoundError with Exchange's text."""
    with pytest.raises(NotFoundError, match="couldn't be found"):
        exo.invoke(Command("Get-Mailbox", {"Identity": "nobody@contoso.com"}))


def test_an_unknown_parameter_is_a_bad_request(exo: ExchangeClient) -> None:
    """A parameter the cmdlet lacks is a BadRequestError that names it."""
    with pytest.raises(BadRequestError, match="'Colour'"):
        exo.invoke(Command("Get-Mailbox", {"Colour": "blue"}))


def test_a_batch_returns_one_outcome_per_command_in_order(exo: ExchangeClient) -> None:
    """Each $batch item ends in its own result or error, in the order given."""
    outcomes = exo.batch(
        [
            Command("Set-Mailbox", {"Identity": "UserWithMailWithEXO@contoso.com", "IsExchangeCloudManaged": True}),
            Command("Set-Mailbox", {"Identity": "ghost@contoso.com", "IsExchangeCloudManaged": True}),
            Command("Set-Mailbox", {"Identity": "UserNoMailWithEXO@contoso.com", "CustomAttribute1": "x"}),
        ]
    )
    assert outcomes[0].error is None
    assert isinstance(outcomes[1].error, NotFoundError)
    assert isinstance(outcomes[2].error, WriteScopeError)


def test_a_batch_holds_at_most_ten_commands(exo: ExchangeClient) -> None:
    """More than BATCH_LIMIT commands are refused before anything is sent."""
    with pytest.raises(ValueError, match="1 to 10"):
        exo.batch([Command("Get-OrganizationConfig")] * (BATCH_LIMIT + 1))


def test_a_throttled_batch_item_holds_the_whole_client(exo: ExchangeClient, sandbox) -> None:
    """A 429 inside a $batch sets the shared gate, so the next call waits its Retry-After."""
    sandbox.knobs(fault_item_429_rate=1.0, retry_after=0.3)
    (outcome,) = exo.batch(
        [Command("Set-Mailbox", {"Identity": "UserWithMailWithEXO@contoso.com", "IsExchangeCloudManaged": True})]
    )
    assert isinstance(outcome.error, ThrottledError) and outcome.error.retry_after == 0.3
    started = time.monotonic()
    exo.invoke(Command("Get-OrganizationConfig"))
    assert time.monotonic() - started >= 0.25


def _response(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status, urllib3.HTTPHeaderDict(headers or {}), raw, CallContext("exchange", "Set-Mailbox"))


def _detail(text: str, kind: str = "Microsoft.Exchange.Management.Tasks.RecipientTaskException") -> dict[str, object]:
    return {
        "error": {
            "code": "BadRequest",
            "message": "Error executing cmdlet",
            "details": [{"code": "0", "message": f"Ex1A2B3C|{kind}|{text}"}],
        }
    }


def test_an_empty_error_on_a_write_means_the_outcome_is_unknown() -> None:
    """An error with no message has been seen on writes that applied: settle it, do not count it."""
    empty = {"error": {"code": "InternalServerError", "message": ""}}
    assert isinstance(map_error(_response(500, empty), write=True), OutcomeUnknownError)
    assert isinstance(map_error(_response(500, empty), write=False), ServiceUnavailableError)


@pytest.mark.parametrize("write", [True, False], ids=["write", "read"])
@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 429, 500, 502, 503, 504])
def test_exchange_and_graph_read_a_status_by_one_table(status: int, write: bool) -> None:
    """A failed answer whose text says nothing special is the same error from Exchange and Graph: status_error's."""
    text = "something went wrong"
    graph = Response(
        status,
        urllib3.HTTPHeaderDict(),
        json.dumps({"error": {"code": "Error", "message": text}}).encode(),
        CallContext("graph", "assignLicense"),
    )
    expected = type(status_error(_response(status, _detail(text)), text, write=write))
    assert type(map_error(_response(status, _detail(text)), write=write)) is expected
    assert type(map_graph_error(graph, graph.json(), write=write)) is expected
    if status >= 500:
        assert expected is (OutcomeUnknownError if write else ServiceUnavailableError)


def test_the_concurrency_text_is_throttling_whatever_the_status() -> None:
    """ "maximum number of concurrent requests per tenant" is throttling even on a 400."""
    text = "You have reached the maximum number of concurrent requests per tenant. Please wait and try again."
    assert isinstance(map_error(_response(400, _detail(text)), write=True), ThrottledError)


def test_dual_write_on_on_premises_mastered_objects_is_permanent() -> None:
    """DualWrite naming on-premises mastered objects cannot be fixed by retrying: WriteScopeError."""
    text = (
        "Error executing request. ... Unable to update the specified properties for on-premises mastered "
        "Directory Sync objects or objects currently undergoing migration. DualWrite (Graph) RequestId: x"
    )
    assert isinstance(map_error(_response(500, _detail(text)), write=True), WriteScopeError)
    other = "Error executing request. DualWrite (Graph) RequestId: x The issue may be transient."
    assert isinstance(map_error(_response(500, _detail(other)), write=True), DualWriteError)


def test_a_403_with_diagnostics_names_the_reason() -> None:
    """An RBAC 403 carries its reason in x-ms-diagnostics; the error shows it."""
    error = map_error(_response(403, b"{}", {"x-ms-diagnostics": '2000008;reason="not in scope"'}), write=True)
    assert "not in scope" in str(error)
