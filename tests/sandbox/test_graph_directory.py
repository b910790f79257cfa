"""The sandbox's Graph directory reads for the readiness report: paging, filters, source of authority, nested
groups and $batch, each as tests/contracts/graph/ and docs/wire-protocols.md say the real service behaves."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from sandbox.faults import READINESS_GRAPH_ROLES
from sandbox.server import load_seed
from sandbox.tenant import Tenant
from shared.settings import Settings
from shared.wiring import Clients
from tests.conftest import SandboxHandle
from tests.test_contracts import (
    EVENTUAL,
    GRAPH,
    READINESS_GROUP_SELECT,
    READINESS_USER_SELECT,
    SYNCED_FILTER,
    Answer,
    Wire,
    authority_item,
    directory_id,
    graph_batch,
)

ADVANCED = "$count=true"


@pytest.fixture
def wire(sandbox: SandboxHandle, clients: Clients) -> Wire:
    return Wire(sandbox, clients)


def _spaces(text: str) -> str:
    return text.replace(" ", "%20")


def _follow(wire: Wire, link: str) -> Answer:
    assert link.startswith(wire.sandbox.url), link
    return wire.send("GET", link[len(wire.sandbox.url) :])


def _names(answer: Answer) -> list[str]:
    return [found["displayName"] for found in answer.body()["value"]]


def _error(answer: Answer) -> tuple[int, str, str]:
    error = answer.body()["error"]
    return answer.status, error["code"], error["message"]


def _reseed(wire: Wire, settings: Settings, groups: list[dict[str, Any]]) -> Wire:
    """The default tenant with other groups; a reset signs tokens anew, so the new wire has a new identity client."""
    wire.sandbox.reset({**load_seed("default"), "groups": groups})
    return Wire(wire.sandbox, Clients.from_settings(settings))


def _items(answer: Answer) -> dict[str, dict[str, Any]]:
    assert answer.status == 200, answer.raw[:300]
    return {item["id"]: item for item in answer.body()["responses"]}


# -- seeds ---------------------------------------------------------------------------------------------


def test_group_and_contact_seeds_carry_members_and_a_cloud_source_of_authority() -> None:
    """The default seed's groups name their members, and a group and a contact have their authority in the cloud."""
    tenant = Tenant(load_seed("default"))
    groups = {group.name: group for group in tenant.groups.values()}
    contacts = {contact.name: contact for contact in tenant.contacts.values()}
    assert groups["GroupGDWithMail"].members == ["GroupGSWithMail", "ContactWithMail"]
    assert groups["GroupUSNoMail"].cloud_managed and not groups["GroupGSWithMail"].cloud_managed
    assert contacts["ContactNoMail"].cloud_managed and contacts["ContactWithMail"].dir_synced


def test_the_default_app_is_granted_the_readiness_roles(sandbox: SandboxHandle) -> None:
    """The sandbox's managed identity holds the readiness report's least privileged Graph roles by default."""
    granted = sandbox.knobs()["roles"][GRAPH]
    assert set(READINESS_GRAPH_ROLES) <= set(granted)


# -- paging ---------------------------------------------------------------------------------------------


def test_the_users_listing_is_paged_with_skiptoken_links_until_every_user_is_read(wire: Wire) -> None:
    """Pages of $top users follow each other by @odata.nextLink, which keeps the query and adds a $skiptoken."""
    everyone = wire.send("GET", f"/v1.0/users?$select={READINESS_USER_SELECT}&$top=999").body()
    assert "@odata.nextLink" not in everyone
    answer = wire.send("GET", f"/v1.0/users?$select={READINESS_USER_SELECT}&$top=4")
    seen: list[str] = []
    while True:
        body = answer.body()
        assert 0 < len(body["value"]) <= 4
        seen += [user["id"] for user in body["value"]]
        if "@odata.nextLink" not in body:
            break
        query = parse_qs(urlsplit(body["@odata.nextLink"]).query)
        assert query["$select"] == [READINESS_USER_SELECT] and query["$top"] == ["4"] and query["$skiptoken"]
        answer = _follow(wire, body["@odata.nextLink"])
    assert seen == [user["id"] for user in everyone["value"]]


def test_a_page_of_more_than_999_is_refused(wire: Wire) -> None:
    """$top above 999 is Graph's 400 Request_UnsupportedQuery; 999 itself is served."""
    assert wire.send("GET", "/v1.0/groups?$top=999").status == 200
    assert _error(wire.send("GET", "/v1.0/users?$top=1000")) == (
        400,
        "Request_UnsupportedQuery",
        "Invalid page size specified: '1000'. Must be between 1 and 999 inclusive.",
    )


def test_a_skiptoken_is_good_only_for_the_query_that_made_it(wire: Wire) -> None:
    """A $skiptoken sent with another $select is refused instead of continuing some other listing."""
    link = wire.send("GET", "/v1.0/users?$select=id&$top=2").body()["@odata.nextLink"]
    changed = link.replace("$select=id", "$select=mail")
    assert _follow(wire, changed).status == 400
    assert _follow(wire, link).status == 200


def test_next_links_point_where_the_nextlink_origin_knob_says(wire: Wire) -> None:
    """With nextlink_origin set, Graph nextLinks name another host, which a client must refuse to follow."""
    wire.sandbox.knobs(nextlink_origin="https://elsewhere.example")
    link = wire.send("GET", "/v1.0/users?$top=2").body()["@odata.nextLink"]
    assert link.startswith("https://elsewhere.example/v1.0/users?")


# -- filters and advanced queries ----------------------------------------------------------------------


def test_synced_groups_are_filtered_by_default_and_counted_only_with_the_advanced_parameters(wire: Wire) -> None:
    """onPremisesSyncEnabled eq true needs no advanced parameters; @odata.count needs both of them."""
    plain = wire.send("GET", f"/v1.0/groups?{SYNCED_FILTER}&$select={READINESS_GROUP_SELECT}")
    assert plain.status == 200 and "@odata.count" not in plain.body()
    assert _names(plain) == ["GroupGSWithMail", "GroupGDWithMail"]  # GroupUSNoMail moved to the cloud
    header_only = wire.send("GET", f"/v1.0/groups?{SYNCED_FILTER}", headers=EVENTUAL)
    count_only = wire.send("GET", f"/v1.0/groups?{SYNCED_FILTER}&{ADVANCED}")
    assert "@odata.count" not in header_only.body() and "@odata.count" not in count_only.body()
    counted = wire.send("GET", f"/v1.0/groups?{SYNCED_FILTER}&{ADVANCED}&$top=1", headers=EVENTUAL).body()
    assert counted["@odata.count"] == 2 and len(counted["value"]) == 1 and "@odata.nextLink" in counted


@pytest.mark.parametrize(
    "clause",
    ["onPremisesSyncEnabled ne true", "not(onPremisesSyncEnabled eq true)", "onPremisesSyncEnabled eq null"],
)
def test_negations_and_null_need_the_advanced_query_parameters(wire: Wire, clause: str) -> None:
    """ne, not and eq null are refused with Request_UnsupportedQuery unless ConsistencyLevel and $count are sent."""
    path = f"/v1.0/groups?$filter={_spaces(clause)}&$select=displayName"
    status, code, _ = _error(wire.send("GET", path))
    assert (status, code) == (400, "Request_UnsupportedQuery")
    answer = wire.send("GET", f"{path}&{ADVANCED}", headers=EVENTUAL)
    assert answer.status == 200 and _names(answer) == ["GroupUSNoMail"]


def test_the_null_refusal_names_the_property_and_the_resource(wire: Wire) -> None:
    """eq null without advanced parameters answers the verified text for groups, and names OrgContact for contacts."""
    groups = wire.send("GET", "/v1.0/groups?$filter=onPremisesSyncEnabled%20eq%20null")
    contacts = wire.send("GET", "/v1.0/contacts?$filter=onPremisesSyncEnabled%20eq%20null")
    suffix = "Unsupported or invalid query filter clause specified for property 'onPremisesSyncEnabled' of resource"
    assert _error(groups)[2] == f"{suffix} 'Group'."
    assert _error(contacts)[2] == f"{suffix} 'OrgContact'."


def test_synced_contacts_leave_out_the_converted_contact(wire: Wire) -> None:
    """The contacts listing filtered on onPremisesSyncEnabled eq true omits a contact whose authority is the cloud."""
    answer = wire.send("GET", f"/v1.0/contacts?{SYNCED_FILTER}&$select=displayName,onPremisesSyncEnabled")
    assert answer.body()["value"] == [{"displayName": "ContactWithMail", "onPremisesSyncEnabled": True}]


def test_an_unknown_property_in_select_is_refused(wire: Wire) -> None:
    """$select naming a property the type lacks is Graph's 400 'Could not find a property'."""
    status, code, message = _error(wire.send("GET", "/v1.0/groups?$select=id,isCloudManaged"))
    assert (status, code) == (400, "Request_BadRequest") and "'isCloudManaged'" in message


# -- source of authority -------------------------------------------------------------------------------


def test_source_of_authority_is_cloud_only_after_a_conversion(wire: Wire, settings: Settings) -> None:
    """A synced group reads false, a converted one true, a cloud-born one false; only the synced one is synced."""
    wire = _reseed(
        wire,
        settings,
        [
            {"name": "Synced", "securityEnabled": True},
            {"name": "Converted", "securityEnabled": True, "cloudManaged": True},
            {"name": "CloudBorn", "securityEnabled": True, "dirSynced": False},
        ],
    )
    listed = wire.send("GET", "/v1.0/groups?$select=displayName,onPremisesSyncEnabled").body()["value"]
    assert {g["displayName"]: g["onPremisesSyncEnabled"] for g in listed} == {
        "Synced": True,
        "Converted": None,
        "CloudBorn": None,
    }
    for name, managed in (("Synced", False), ("Converted", True), ("CloudBorn", False)):
        group_id = directory_id(wire, "groups", name)
        answer = wire.send("GET", f"/v1.0/groups/{group_id}/onPremisesSyncBehavior")
        assert answer.status == 200 and answer.body()["isCloudManaged"] is managed
        assert answer.body()["id"] == group_id


@pytest.mark.parametrize(("collection", "name"), [("groups", "GroupUSNoMail"), ("contacts", "ContactNoMail")])
def test_source_of_authority_needs_its_readwrite_role_and_nothing_else_will_do(
    wire: Wire, settings: Settings, collection: str, name: str
) -> None:
    """Without the OnPremisesSyncBehavior ReadWrite role even Directory.Read.All is refused with Graph's 403."""
    object_id = directory_id(wire, collection, name)
    wire.sandbox.knobs(
        roles={GRAPH: ["Directory.Read.All", "Group.Read.All", "GroupMember.Read.All", "OrgContact.Read.All"]}
    )
    restricted = Wire(wire.sandbox, Clients.from_settings(settings))  # a new identity client: no cached token
    answer = restricted.send("GET", f"/v1.0/{collection}/{object_id}/onPremisesSyncBehavior?$select=isCloudManaged")
    assert _error(answer) == (403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")


def test_an_unknown_object_has_no_source_of_authority(wire: Wire) -> None:
    """A group id the tenant does not know answers 404 Request_ResourceNotFound."""
    answer = wire.send("GET", "/v1.0/groups/3b6f0c2a-0000-4000-8000-000000000404/onPremisesSyncBehavior")
    assert _error(answer)[:2] == (404, "Request_ResourceNotFound")


def test_the_wrapped_knob_serves_the_shape_of_learns_example(wire: Wire) -> None:
    """With graph_sync_behavior_wrapped, isCloudManaged comes inside "value", as Learn's example shows it."""
    wire.sandbox.knobs(graph_sync_behavior_wrapped=True)
    answer = wire.send("GET", f"/v1.0/groups/{directory_id(wire, 'groups', 'GroupUSNoMail')}/onPremisesSyncBehavior")
    assert answer.body()["value"]["isCloudManaged"] is True and "isCloudManaged" not in answer.body()


def test_writing_the_source_of_authority_is_served_and_counted_as_a_graph_write(wire: Wire) -> None:
    """A PATCH of onPremisesSyncBehavior answers 204 (tests/sandbox/test_graph_authority.py has the rest), and
    counts as a Graph write."""
    path = f"/v1.0/groups/{directory_id(wire, 'groups', 'GroupGSWithMail')}/onPremisesSyncBehavior"
    assert wire.send("PATCH", path, {"isCloudManaged": True}).status == 204
    assert wire.sandbox.stats()["graphWrites"] == 1


# -- nested groups ---------------------------------------------------------------------------------------


def test_the_group_cast_lists_only_directly_nested_groups(wire: Wire) -> None:
    """members/microsoft.graph.group leaves out users and contacts, and does not descend into nested groups."""
    path = "/v1.0/groups/{}/members/microsoft.graph.group?$select=id,displayName,onPremisesSyncEnabled&$count=true"
    outer = wire.send("GET", path.format(directory_id(wire, "groups", "GroupGDWithMail")), headers=EVENTUAL).body()
    assert [(g["displayName"], g["onPremisesSyncEnabled"]) for g in outer["value"]] == [("GroupGSWithMail", True)]
    assert outer["@odata.count"] == 1
    inner = wire.send("GET", path.format(directory_id(wire, "groups", "GroupGSWithMail")), headers=EVENTUAL).body()
    assert [(g["displayName"], g["onPremisesSyncEnabled"]) for g in inner["value"]] == [("GroupUSNoMail", None)]


def test_the_group_cast_needs_the_advanced_parameters_and_takes_no_filter(wire: Wire) -> None:
    """Without ConsistencyLevel and $count the cast is refused, and with a $filter it is refused too."""
    base = f"/v1.0/groups/{directory_id(wire, 'groups', 'GroupGDWithMail')}/members/microsoft.graph.group"
    assert _error(wire.send("GET", f"{base}?$select=id"))[:2] == (400, "Request_UnsupportedQuery")
    filtered = wire.send("GET", f"{base}?{SYNCED_FILTER}&{ADVANCED}", headers=EVENTUAL)
    assert _error(filtered)[2] == "The specified filter to the reference property query is currently not supported."


def test_a_microsoft_365_group_has_no_member_groups_to_cast_to(wire: Wire, settings: Settings) -> None:
    """The group cast on a Unified group is refused with Request_UnsupportedQuery, as Learn documents."""
    wire = _reseed(wire, settings, [{"name": "Team", "mail": "team@contoso.com", "groupTypes": ["Unified"]}])
    path = f"/v1.0/groups/{directory_id(wire, 'groups', 'Team')}/members/microsoft.graph.group?{ADVANCED}"
    assert _error(wire.send("GET", path, headers=EVENTUAL))[:2] == (400, "Request_UnsupportedQuery")


# -- $batch ------------------------------------------------------------------------------------------------


def test_a_batch_answers_every_item_by_id_in_another_order_than_asked(wire: Wire) -> None:
    """Each item answers as its own call; the responses are matched by id because their order differs."""
    groups = ["GroupGSWithMail", "GroupGDWithMail", "GroupUSNoMail"]
    answer = graph_batch(wire, [authority_item(wire, str(index), name) for index, name in enumerate(groups)])
    ids = [item["id"] for item in answer.body()["responses"]]
    assert sorted(ids) == ["0", "1", "2"] and ids != ["0", "1", "2"]
    items = _items(answer)
    assert [items[str(i)]["body"]["isCloudManaged"] for i in range(3)] == [False, False, True]
    assert all(item["status"] == 200 and item["headers"]["OData-Version"] == "4.0" for item in items.values())


def test_a_batch_item_carries_its_own_consistency_level(wire: Wire) -> None:
    """An advanced query inside a batch works only with ConsistencyLevel in the item's headers, not the batch's."""
    url = "/groups?$filter=onPremisesSyncEnabled ne true&$count=true&$select=displayName"
    requests = [
        {"id": "with", "method": "GET", "url": url, "headers": EVENTUAL},
        {"id": "without", "method": "GET", "url": url},
    ]
    items = _items(wire.send("POST", "/v1.0/$batch", {"requests": requests}, EVENTUAL))
    assert items["with"]["status"] == 200 and items["with"]["body"]["@odata.count"] == 1
    assert items["without"]["status"] == 400
    assert items["without"]["body"]["error"]["code"] == "Request_UnsupportedQuery"


def test_a_batch_of_more_than_20_is_refused_whole_and_runs_nothing(wire: Wire) -> None:
    """21 items answer one 400 and no item is run; 20 items are served."""
    item = authority_item(wire, "0", "GroupGSWithMail")
    refused = graph_batch(wire, [{**item, "id": str(index)} for index in range(21)])
    assert refused.status == 400 and "responses" not in refused.body()
    assert "read: GET groups/onPremisesSyncBehavior" not in wire.sandbox.stats()["graphCalls"]
    served = graph_batch(wire, [{**item, "id": str(index)} for index in range(20)])
    assert len(_items(served)) == 20
    assert wire.sandbox.stats()["graphCalls"]["read: GET groups/onPremisesSyncBehavior"] == 20


@pytest.mark.parametrize(
    "requests",
    [
        [{"id": "a", "method": "GET", "url": "/groups"}, {"id": "A", "method": "GET", "url": "/contacts"}],
        [{"id": "a", "method": "GET"}],
        [],
    ],
    ids=["duplicate ids, not case-sensitive", "no url", "no requests"],
)
def test_a_malformed_batch_is_refused_whole(wire: Wire, requests: list[dict[str, Any]]) -> None:
    """Duplicate ids, an item without url and an empty batch are each one 400 for the whole batch."""
    assert graph_batch(wire, requests).status == 400


def test_a_throttled_batch_item_has_its_own_retry_after_while_the_batch_answers_200(wire: Wire) -> None:
    """A throttled item is 429 with Retry-After in its headers; resending it sooner is recorded as a violation."""
    item = authority_item(wire, "1", "GroupGSWithMail")
    wire.sandbox.knobs(graph_batch_item_429_rate=1.0, retry_after=2)
    items = _items(graph_batch(wire, [item]))
    assert items["1"]["status"] == 429 and items["1"]["headers"]["Retry-After"] == "2"
    assert items["1"]["body"]["error"]["code"] == "TooManyRequests"
    graph_batch(wire, [item])
    stats = wire.sandbox.stats()
    assert stats["faults"]["graph_batch_item_429"] == 2
    assert [v["clientRequestId"] for v in stats["retryAfterViolations"]] == [f"$batch item GET {item['url']}"]


@pytest.mark.parametrize("version", ["beta", "v1.0"])
def test_a_version_in_a_batch_item_url_is_an_unknown_segment(wire: Wire, version: str) -> None:
    """An item URL naming a version is resolved under the batch's version: 400 for the item, 200 for the batch."""
    url = f"/{version}/groups/{directory_id(wire, 'groups', 'GroupUSNoMail')}/onPremisesSyncBehavior"
    items = _items(graph_batch(wire, [{"id": "1", "method": "GET", "url": url}]))
    assert items["1"]["status"] == 400
    assert items["1"]["body"]["error"]["message"] == f"Resource not found for the segment '{version}'."


def test_beta_serves_the_same_reads_with_beta_contexts_and_links(wire: Wire) -> None:
    """/beta answers the directory reads too (Learn documents onPremisesSyncBehavior there), naming beta throughout."""
    beta = {"Authorization": f"Bearer {wire.clients.tokens.get(GRAPH).value}"}  # Wire picks Exchange for non-v1.0
    contact = directory_id(wire, "contacts", "ContactNoMail")
    state = wire.send("GET", f"/beta/contacts/{contact}/onPremisesSyncBehavior", headers=beta).body()
    assert state["isCloudManaged"] is True and state["@odata.context"].startswith("https://graph.microsoft.com/beta/")
    link = wire.send("GET", "/beta/users?$select=id&$top=2", headers=beta).body()["@odata.nextLink"]
    assert link.startswith(f"{wire.sandbox.url}/beta/users?")
    url = f"/contacts/{contact}/onPremisesSyncBehavior?$select=isCloudManaged"
    answer = wire.send("POST", "/beta/$batch", {"requests": [{"id": "1", "method": "GET", "url": url}]}, beta)
    assert _items(answer)["1"]["body"]["isCloudManaged"] is True


# -- statistics ----------------------------------------------------------------------------------------


def test_reads_and_batches_of_reads_count_no_graph_writes(wire: Wire) -> None:
    """Listings, source-of-authority reads and a $batch of GETs leave graphWrites at 0, each call counted by kind."""
    wire.send("GET", f"/v1.0/users?$select={READINESS_USER_SELECT}&$top=999")
    wire.send("GET", f"/v1.0/groups?{SYNCED_FILTER}&{ADVANCED}", headers=EVENTUAL)
    graph_batch(wire, [authority_item(wire, "1", "GroupGSWithMail")])
    stats = wire.sandbox.stats()
    assert stats["graphWrites"] == 0
    assert stats["graphCalls"]["batch: POST $batch"] == 1
    assert stats["graphCalls"]["read: GET groups/onPremisesSyncBehavior"] == 1
    assert stats["graphCalls"]["read: GET users"] == 1


def test_every_graph_write_is_counted_even_inside_a_batch_or_when_refused(wire: Wire) -> None:
    """A PATCH is a write whether it is sent alone, throttled before it runs, or sent as a $batch item."""
    user = wire.user_id("UserWithMailNoEXO@contoso.com")
    patch = {"id": "1", "method": "PATCH", "url": f"/users/{user}", "body": {"usageLocation": "DE"}}
    patch["headers"] = {"Content-Type": "application/json"}
    graph_batch(wire, [patch])
    wire.sandbox.knobs(graph_fault_429_rate=1.0, retry_after=0)
    assert wire.send("PATCH", f"/v1.0/users/{user}", {"usageLocation": "FR"}).status == 429
    stats = wire.sandbox.stats()
    assert stats["graphWrites"] == 2 and stats["graphCalls"]["write: PATCH user"] == 2
