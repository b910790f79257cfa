"""The sandbox's move of a source of authority to the cloud and back (PATCH onPremisesSyncBehavior), the sync cycle
that completes a rollback, group members, and the faults around them, as docs/wire-protocols.md describes them."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sandbox.faults import Knobs
from sandbox.graph_api import GraphApi
from sandbox.server import load_seed
from sandbox.tenant import Tenant
from shared.settings import Settings
from shared.wiring import Clients
from tests.conftest import SandboxHandle
from tests.test_contracts import EVENTUAL, GRAPH, SYNCED_FILTER, Answer, Wire, directory_id, graph_batch

ROLES = ["GroupMember.Read.All", "OrgContact.Read.All", "User.Read.All"]
GROUP_ROLE = "Group-OnPremisesSyncBehavior.ReadWrite.All"
CONTACT_ROLE = "Contacts-OnPremisesSyncBehavior.ReadWrite.All"
PATCH_KIND = "write: PATCH groups/onPremisesSyncBehavior"
JSON = {"Content-Type": "application/json"}


def authority_seed() -> dict[str, Any]:
    """The default seed with its source-of-authority objects switched on."""
    return {**load_seed("default"), "withSourceOfAuthority": True}


@pytest.fixture
def wire(sandbox: SandboxHandle, clients: Clients) -> Wire:
    soa = Wire(sandbox, clients)
    soa.reseed(authority_seed())
    return soa


def _path(wire: Wire, name: str, kind: str = "groups", version: str = "v1.0") -> str:
    return f"/{version}/{kind}/{directory_id(wire, kind, name)}/onPremisesSyncBehavior"


def _patch(wire: Wire, name: str, managed: Any, kind: str = "groups") -> Answer:
    return wire.send("PATCH", _path(wire, name, kind), {"isCloudManaged": managed})


def _managed(wire: Wire, name: str, kind: str = "groups") -> bool:
    answer = wire.send("GET", _path(wire, name, kind) + "?$select=isCloudManaged")
    assert answer.status == 200, answer.raw[:300]
    return bool(answer.body()["isCloudManaged"])


def _synced(wire: Wire, name: str, kind: str = "groups") -> Any:
    """The object's onPremisesSyncEnabled as a listing shows it."""
    listed = wire.send("GET", f"/v1.0/{kind}?$select=displayName,onPremisesSyncEnabled&$top=999").body()["value"]
    return next(found["onPremisesSyncEnabled"] for found in listed if found["displayName"] == name)


def _synced_names(wire: Wire) -> list[str]:
    listed = wire.send("GET", f"/v1.0/groups?{SYNCED_FILTER}&$select=displayName&$top=999").body()["value"]
    return [found["displayName"] for found in listed]


def _error(answer: Answer) -> tuple[int, str]:
    return answer.status, answer.body()["error"]["code"]


def _items(answer: Answer) -> dict[str, dict[str, Any]]:
    assert answer.status == 200, answer.raw[:300]
    return {item["id"]: item for item in answer.body()["responses"]}


def _patch_item(wire: Wire, item_id: str, name: str, managed: bool, kind: str = "groups") -> dict[str, Any]:
    url = _path(wire, name, kind).removeprefix("/v1.0")
    return {"id": item_id, "method": "PATCH", "url": url, "headers": JSON, "body": {"isCloudManaged": managed}}


def _restricted(wire: Wire, settings: Settings, roles: list[str]) -> Wire:
    """A wire whose app holds only `roles` (a new identity client, so no token from before is reused)."""
    wire.sandbox.knobs(roles={GRAPH: roles})
    return Wire(wire.sandbox, Clients.from_settings(settings))


# -- PATCH and its answers ---------------------------------------------------------------------------------


def test_a_patch_true_converts_a_synced_group_and_answers_204_without_a_body(wire: Wire) -> None:
    """PATCH {"isCloudManaged": true} on a synced group answers 204 with no body, and the group reads converted."""
    answer = _patch(wire, "SoaChild", True)
    assert answer.status == 204 and answer.raw == b""
    assert _managed(wire, "SoaChild") is True


@pytest.mark.parametrize("version", ["v1.0", "beta"])
def test_a_contact_is_converted_on_v1_and_on_beta(wire: Wire, version: str) -> None:
    """PATCH contacts/{id}/onPremisesSyncBehavior is served on v1.0 and beta alike, with an @odata.type member."""
    beta = {"Authorization": f"Bearer {wire.clients.tokens.get(GRAPH).value}"}  # Wire picks Exchange off v1.0
    body = {"@odata.type": "#microsoft.graph.onPremisesSyncBehavior", "isCloudManaged": True}
    answer = wire.send("PATCH", _path(wire, "SoaContact", "contacts", version), body, beta)
    assert answer.status == 204
    assert _managed(wire, "SoaContact", "contacts") is True and _synced(wire, "SoaContact", "contacts") is None


def test_the_patch_200_knob_answers_the_entity_as_the_earlier_doc_did(wire: Wire) -> None:
    """With graph_sync_behavior_patch_200 a PATCH answers 200 with @odata.type, id and the new isCloudManaged."""
    wire.sandbox.knobs(graph_sync_behavior_patch_200=True)
    answer = _patch(wire, "SoaChild", True)
    assert answer.status == 200
    assert answer.body() == {
        "@odata.type": "#microsoft.graph.onPremisesSyncBehavior",
        "id": directory_id(wire, "groups", "SoaChild"),
        "isCloudManaged": True,
    }


@pytest.mark.parametrize(
    ("kind", "name", "other_role"), [("groups", "SoaChild", CONTACT_ROLE), ("contacts", "SoaContact", GROUP_ROLE)]
)
def test_a_patch_needs_the_onpremisessyncbehavior_role_of_its_kind(
    wire: Wire, settings: Settings, kind: str, name: str, other_role: str
) -> None:
    """Without its own kind's ReadWrite role (the other kind's or Directory.ReadWrite.All do not do) a PATCH is 403."""
    path = _path(wire, name, kind)
    restricted = _restricted(wire, settings, [*ROLES, other_role, "Directory.ReadWrite.All", "Group.ReadWrite.All"])
    answer = restricted.send("PATCH", path, {"isCloudManaged": True})
    assert _error(answer) == (403, "Authorization_RequestDenied")
    assert answer.body()["error"]["message"] == "Insufficient privileges to complete the operation."
    assert wire.sandbox.authority_log() == []


@pytest.mark.parametrize(
    "body",
    [{"isCloudManaged": "true"}, {}, {"isCloudManaged": None}, {"isCloudManaged": True, "blockOnPremisesSync": True}],
    ids=["a string", "missing", "null", "another member"],
)
def test_a_value_that_is_not_a_json_boolean_is_refused(wire: Wire, body: dict[str, Any]) -> None:
    """A string, null or missing isCloudManaged, or another member beside it, answers 400 and changes nothing."""
    answer = wire.send("PATCH", _path(wire, "SoaChild"), body)
    assert _error(answer) == (400, "Request_BadRequest")
    assert _managed(wire, "SoaChild") is False


def test_a_patch_of_an_unknown_object_answers_404(wire: Wire) -> None:
    """An id the tenant does not know answers 404 Request_ResourceNotFound."""
    path = "/v1.0/groups/3b6f0c2a-0000-4000-8000-000000000404/onPremisesSyncBehavior"
    assert _error(wire.send("PATCH", path, {"isCloudManaged": True})) == (404, "Request_ResourceNotFound")


def test_deleting_the_source_of_authority_is_not_served(wire: Wire) -> None:
    """DELETE onPremisesSyncBehavior (in the SDK, undocumented) answers 405 and is counted as a write all the same."""
    assert wire.send("DELETE", _path(wire, "SoaChild")).status == 405
    assert wire.sandbox.stats()["graphWrites"] == 1


def test_every_patch_is_counted_as_a_graph_write_even_when_refused(wire: Wire) -> None:
    """Accepted, malformed and unknown-object PATCHes each count as "write: PATCH groups/onPremisesSyncBehavior"."""
    _patch(wire, "SoaChild", True)
    _patch(wire, "SoaChild", "yes")
    wire.send("PATCH", "/v1.0/groups/3b6f0c2a-0000-4000-8000-000000000404/onPremisesSyncBehavior", {})
    stats = wire.sandbox.stats()
    assert stats["graphCalls"][PATCH_KIND] == 3 and stats["graphWrites"] == 3


# -- the state table ----------------------------------------------------------------------------------------


def test_a_converted_group_leaves_the_synced_listing_and_keeps_its_security_identifier(wire: Wire) -> None:
    """After conversion onPremisesSyncEnabled reads null (not false), so the eq true listing omits the group."""
    assert "SoaChild" in _synced_names(wire)
    _patch(wire, "SoaChild", True)
    assert "SoaChild" not in _synced_names(wire) and _synced(wire, "SoaChild") is None
    listed = wire.send("GET", "/v1.0/groups?$select=displayName,onPremisesSecurityIdentifier&$top=999").body()
    sids = {g["displayName"]: g["onPremisesSecurityIdentifier"] for g in listed["value"]}
    assert sids["SoaChild"].startswith("S-1-5-21-") and sids["SoaCloudBorn"] is None


def test_a_rollback_reads_false_and_null_until_the_sync_cycle_takes_the_group_back(wire: Wire) -> None:
    """PATCH false leaves isCloudManaged false and onPremisesSyncEnabled null until sync_cycle_seconds have passed."""
    wire.sandbox.knobs(sync_cycle_seconds=0.4)
    _patch(wire, "SoaChild", True)
    assert _patch(wire, "SoaChild", False).status == 204
    assert _managed(wire, "SoaChild") is False and _synced(wire, "SoaChild") is None
    time.sleep(0.5)
    assert _synced(wire, "SoaChild") is True and "SoaChild" in _synced_names(wire)


def test_resync_takes_every_rolled_back_object_over_at_once(wire: Wire) -> None:
    """SandboxControl.resync() runs the sync cycle now, whatever sync_cycle_seconds says."""
    for name, kind in (("SoaParent", "groups"), ("SoaContact", "contacts")):
        _patch(wire, name, True, kind)
        _patch(wire, name, False, kind)
        assert _synced(wire, name, kind) is None
    wire.sandbox.resync()
    assert _synced(wire, "SoaParent") is True and _synced(wire, "SoaContact", "contacts") is True


def test_the_sync_cycle_follows_the_tenants_clock() -> None:
    """A rollback is taken over when the tenant clock passes the PATCH time plus the cycle; nothing sleeps."""
    now = [1000.0]
    tenant = Tenant(authority_seed(), clock=lambda: now[0])
    graph = GraphApi(tenant, Knobs(sync_cycle_seconds=60.0))
    child = next(g for g in tenant.groups.values() if g.name == "SoaChild")
    path = f"/v1.0/groups/{child.id}/onPremisesSyncBehavior"
    for managed in (True, False):
        assert graph.handle("PATCH", path, {}, {"isCloudManaged": managed}, [GROUP_ROLE]).status == 204
    listing = "/v1.0/groups"
    query = {"$filter": ["onPremisesSyncEnabled eq true"], "$select": ["displayName"], "$top": ["999"]}
    now[0] += 59.9
    assert "SoaChild" not in str(graph.handle("GET", listing, query, None, ROLES).body)
    now[0] += 0.2
    assert "SoaChild" in str(graph.handle("GET", listing, query, None, ROLES).body)


def test_a_cloud_born_group_or_contact_is_refused_and_recorded_as_a_hazard(wire: Wire) -> None:
    """PATCH on an object never synced (unverified behaviour) answers 400 and leaves a hazard naming it."""
    assert _error(_patch(wire, "SoaCloudBorn", True)) == (400, "Request_BadRequest")
    assert _error(_patch(wire, "SoaCloudContact", True, "contacts")) == (400, "Request_BadRequest")
    assert wire.sandbox.stats()["hazards"] == [
        "PATCH onPremisesSyncBehavior on cloud-born group SoaCloudBorn",
        "PATCH onPremisesSyncBehavior on cloud-born contact SoaCloudContact",
    ]
    assert _managed(wire, "SoaCloudBorn") is False and wire.sandbox.authority_log() == []


def test_converting_a_converted_group_again_changes_nothing(wire: Wire) -> None:
    """A second PATCH true answers 204 (unverified) and the authority log holds one change only."""
    assert _patch(wire, "SoaChild", True).status == 204
    assert _patch(wire, "SoaChild", True).status == 204
    assert [entry["isCloudManaged"] for entry in wire.sandbox.authority_log()] == [True]


def test_takeover_drops_cloud_only_members_and_records_a_hazard(wire: Wire) -> None:
    """A group rolled back with a cloud-only member loses it when AD takes the group over, and that is a hazard."""
    _patch(wire, "SoaWithCloudMember", True)
    _patch(wire, "SoaWithCloudMember", False)
    assert wire.sandbox.stats()["hazards"] == []
    wire.sandbox.resync()
    state = {g["name"]: g for g in wire.sandbox.directory_state()["groups"]}
    assert state["SoaWithCloudMember"]["members"] == ["UserNoMailWithEXO@contoso.com"]
    assert wire.sandbox.stats()["hazards"] == [
        "cloud-only members of SoaWithCloudMember lost at takeover: CloudOnlyMember@contoso.onmicrosoft.com"
    ]


def test_the_authority_log_and_directory_state_show_what_changed(wire: Wire) -> None:
    """authority_log lists each change in order; directory_state shows the truth, members by name."""
    _patch(wire, "SoaChild", True)
    _patch(wire, "SoaParent", True)
    _patch(wire, "SoaContact", True, "contacts")
    _patch(wire, "SoaChild", False)
    log = wire.sandbox.authority_log()
    assert [(e["kind"], e["name"], e["isCloudManaged"]) for e in log] == [
        ("groups", "SoaChild", True),
        ("groups", "SoaParent", True),
        ("contacts", "SoaContact", True),
        ("groups", "SoaChild", False),
    ]
    assert log[0]["id"] == directory_id(wire, "groups", "SoaChild") and log[0]["at"] <= log[-1]["at"]
    state = wire.sandbox.directory_state()
    groups = {g["name"]: g for g in state["groups"]}
    assert groups["SoaParent"] == {
        "id": directory_id(wire, "groups", "SoaParent"),
        "name": "SoaParent",
        "mailEnabled": False,
        "securityEnabled": True,
        "isCloudManaged": True,
        "onPremisesSyncEnabled": None,
        "members": ["SoaChild", "UserWithMailNoEXO@contoso.com"],
    }
    assert groups["SoaChild"]["isCloudManaged"] is False and groups["SoaChild"]["onPremisesSyncEnabled"] is None
    contacts = {c["name"]: c for c in state["contacts"]}
    assert contacts["SoaContact"]["isCloudManaged"] is True


# -- read-after-write lag ------------------------------------------------------------------------------------


def test_reads_show_the_old_value_for_the_authority_read_lag(wire: Wire) -> None:
    """For authority_read_lag seconds after a PATCH, direct and batched reads still show the previous value."""
    wire.sandbox.knobs(authority_read_lag=0.5)
    _patch(wire, "SoaChild", True)
    url = _path(wire, "SoaChild").removeprefix("/v1.0") + "?$select=isCloudManaged"
    assert _managed(wire, "SoaChild") is False
    assert _items(graph_batch(wire, [{"id": "1", "method": "GET", "url": url}]))["1"]["body"]["isCloudManaged"] is False
    assert _synced(wire, "SoaChild") is None  # listings do not lag: only onPremisesSyncBehavior reads do
    time.sleep(0.6)
    assert _managed(wire, "SoaChild") is True


# -- $batch ----------------------------------------------------------------------------------------------------


def test_a_batched_patch_is_applied_like_a_direct_one(wire: Wire) -> None:
    """PATCH items of a $batch answer 204 each, change the objects, and count as writes."""
    items = _items(
        graph_batch(
            wire, [_patch_item(wire, "1", "SoaChild", True), _patch_item(wire, "2", "SoaContact", True, "contacts")]
        )
    )
    assert items["1"]["status"] == 204 and "body" not in items["1"] and items["2"]["status"] == 204
    assert _managed(wire, "SoaChild") is True and _managed(wire, "SoaContact", "contacts") is True
    assert wire.sandbox.stats()["graphCalls"][PATCH_KIND] == 1


def test_a_batched_write_without_content_type_refuses_the_whole_batch(wire: Wire) -> None:
    """A PATCH item without Content-Type in its own headers is a 400 for the batch; nothing runs, the write counts."""
    bare = {**_patch_item(wire, "7", "SoaChild", True), "headers": {}}
    answer = graph_batch(wire, [_patch_item(wire, "1", "SoaParent", True), bare])
    assert _error(answer) == (400, "BadRequest")
    assert answer.body()["error"]["message"] == "Write request id : 7 does not contain Content-Type header or body."
    assert wire.sandbox.authority_log() == []
    assert wire.sandbox.stats()["graphCalls"][PATCH_KIND] == 2


def test_a_throttled_batched_patch_is_not_applied(wire: Wire) -> None:
    """graph_batch_item_429_rate answers a PATCH item 429 with Retry-After and leaves the object unchanged."""
    wire.sandbox.knobs(graph_batch_item_429_rate=1.0, retry_after=1)
    items = _items(graph_batch(wire, [_patch_item(wire, "1", "SoaChild", True)]))
    assert items["1"]["status"] == 429 and items["1"]["headers"]["Retry-After"] == "1"
    wire.sandbox.knobs(graph_batch_item_429_rate=0.0)
    assert _managed(wire, "SoaChild") is False and wire.sandbox.stats()["graphWrites"] == 1


def test_a_batched_patch_can_be_applied_and_answered_503(wire: Wire) -> None:
    """graph_batch_item_503_after_write_rate applies a PATCH item, then answers it 503 without Retry-After."""
    wire.sandbox.knobs(graph_batch_item_503_after_write_rate=1.0)
    items = _items(graph_batch(wire, [_patch_item(wire, "1", "SoaChild", True)]))
    assert items["1"]["status"] == 503 and "Retry-After" not in items["1"]["headers"]
    assert _managed(wire, "SoaChild") is True
    assert wire.sandbox.stats()["faults"]["graph_batch_item_503_after_write"] == 1


# -- group members -----------------------------------------------------------------------------------------------

MEMBER_SELECT = "id,displayName,onPremisesSyncEnabled,onPremisesSecurityIdentifier,mail,userPrincipalName"


def test_group_members_list_users_groups_and_contacts_with_their_types(wire: Wire) -> None:
    """members lists every direct member with its @odata.type and the selected properties its type has."""
    group = directory_id(wire, "groups", "SoaDistributionList")
    body = wire.send("GET", f"/v1.0/groups/{group}/members?$select={MEMBER_SELECT}").body()
    assert body["@odata.context"] == f"https://graph.microsoft.com/v1.0/$metadata#directoryObjects({MEMBER_SELECT})"
    user, child, contact = body["value"]
    assert (
        user["@odata.type"] == "#microsoft.graph.user"
        and user["userPrincipalName"] == "UserWithMailWithEXO@contoso.com"
    )
    assert user["onPremisesSecurityIdentifier"].startswith("S-1-5-21-") and user["onPremisesSyncEnabled"] is True
    assert child["@odata.type"] == "#microsoft.graph.group" and child["displayName"] == "SoaChild"
    assert "userPrincipalName" not in child
    assert contact["@odata.type"] == "#microsoft.graph.orgContact" and contact["mail"] == "supplier@fabrikam.com"


def test_a_cloud_only_member_has_no_security_identifier(wire: Wire) -> None:
    """A cloud-only user member reads onPremisesSyncEnabled and onPremisesSecurityIdentifier null."""
    group = directory_id(wire, "groups", "SoaWithCloudMember")
    members = wire.send("GET", f"/v1.0/groups/{group}/members?$select={MEMBER_SELECT}").body()["value"]
    cloud = next(m for m in members if m["displayName"] == "Cloud Only Member")
    assert cloud["onPremisesSyncEnabled"] is None and cloud["onPremisesSecurityIdentifier"] is None


def test_group_members_are_paged_with_next_links(wire: Wire) -> None:
    """$top pages the members; the nextLink keeps the query, and with the advanced parameters @odata.count is all."""
    group = directory_id(wire, "groups", "SoaDistributionList")
    first = wire.send("GET", f"/v1.0/groups/{group}/members?$select=id&$top=2&$count=true", headers=EVENTUAL).body()
    assert len(first["value"]) == 2 and first["@odata.count"] == 3
    link = first["@odata.nextLink"]
    assert link.startswith(f"{wire.sandbox.url}/v1.0/groups/{group}/members?") and "$top=2" in link
    rest = wire.send("GET", link[len(wire.sandbox.url) :], headers=EVENTUAL).body()
    assert len(rest["value"]) == 1 and "@odata.nextLink" not in rest
    assert wire.send("GET", f"/v1.0/groups/{group}/members?$top=1000").status == 400


def test_group_members_need_a_member_read_role_and_a_known_group(wire: Wire, settings: Settings) -> None:
    """An unknown group answers 404; without GroupMember.Read.All (or a higher role) the listing is 403."""
    missing = wire.send("GET", "/v1.0/groups/3b6f0c2a-0000-4000-8000-000000000404/members")
    assert _error(missing) == (404, "Request_ResourceNotFound")
    group = directory_id(wire, "groups", "SoaParent")
    restricted = _restricted(wire, settings, ["User.Read.All", "OrgContact.Read.All", GROUP_ROLE])
    assert _error(restricted.send("GET", f"/v1.0/groups/{group}/members")) == (403, "Authorization_RequestDenied")


def test_group_members_are_served_inside_a_batch(wire: Wire) -> None:
    """A members item of a $batch answers as the single call does, and counts as a read."""
    group = directory_id(wire, "groups", "SoaGrandparent")
    items = _items(
        graph_batch(wire, [{"id": "m", "method": "GET", "url": f"/groups/{group}/members?$select=displayName"}])
    )
    assert items["m"]["body"]["value"] == [{"@odata.type": "#microsoft.graph.group", "displayName": "SoaParent"}]
    assert wire.sandbox.stats()["graphCalls"]["read: GET groups/members"] == 1


# -- Exchange ------------------------------------------------------------------------------------------------------


def test_exchange_shows_a_converted_group_not_dir_synced_after_the_replication_lag(wire: Wire) -> None:
    """Get-DistributionGroup reads IsDirSynced true until replication_lag after the conversion, then false."""
    wire.sandbox.knobs(replication_lag=0.4)

    def dir_synced() -> bool:
        answer = wire.invoke("Get-DistributionGroup", {"Identity": "SoaDistributionList"}, "Name,IsDirSynced")
        return bool(answer.body()["value"][0]["IsDirSynced"])

    assert dir_synced() is True
    _patch(wire, "SoaDistributionList", True)
    assert dir_synced() is True
    time.sleep(0.5)
    assert dir_synced() is False


# -- seeds ------------------------------------------------------------------------------------------------------------


def test_the_authority_seed_adds_its_objects_only_when_asked() -> None:
    """The default seed stays as it was; withSourceOfAuthority adds nested synced groups, a DL, a cloud-born group."""
    plain = Tenant(load_seed("default"))
    assert not any(g.name.startswith("Soa") for g in plain.groups.values())
    tenant = Tenant(authority_seed())
    groups = {g.name: g for g in tenant.groups.values()}
    assert groups["SoaGrandparent"].members == ["SoaParent"] and groups["SoaParent"].members[0] == "SoaChild"
    assert groups["SoaDistributionList"].mail and not groups["SoaDistributionList"].security_enabled
    assert groups["SoaMailSecurity"].mail and groups["SoaMailSecurity"].security_enabled
    assert not groups["SoaCloudBorn"].dir_synced
    cloud_only = [u for u in tenant.users.values() if u.upn == "CloudOnlyMember@contoso.onmicrosoft.com"]
    assert len(cloud_only) == 1 and not cloud_only[0].dir_synced and cloud_only[0].mailbox is None


def test_the_generator_makes_ten_thousand_nested_groups_with_a_mail_enabled_share_quickly() -> None:
    """`groups` and `mailEnabledShare` make 10,000 groups chained in threes, the share with mail, in well under 2 s."""
    started = time.monotonic()
    tenant = Tenant({"generate": {"mailboxes": 0, "groups": 10000, "mailEnabledShare": 0.25}})
    assert time.monotonic() - started < 2.0
    groups = list(tenant.groups.values())
    assert len(groups) == 10000 and sum(1 for g in groups if g.mail) == 2500
    assert all(g.security_enabled for g in groups if not g.mail)
    assert groups[0].members == ["group00001"] and groups[1].members == ["group00002"] and groups[2].members == []
    default = Tenant({"generate": {"mailboxes": 0, "groups": 6}})
    assert all(g.mail for g in default.groups.values())  # without the key, every group has mail, as before
