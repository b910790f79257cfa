"""The plan of a group or contact sweep: pure, children before parents, and every object left alone says why."""

from __future__ import annotations

from typing import Any

from shared.authority.objects import CONTACTS, GROUPS, SyncedObject, cloud_managed, group_type
from shared.authority.plan import MAIL_ENABLED_LEFT, plan_kind
from shared.authority.read import Listing
from shared.settings import SETTINGS


def group(name: str, *, mail: bool = False, security: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"id-{name}",
        "displayName": name,
        "mail": f"{name}@contoso.com" if mail else None,
        "mailEnabled": mail,
        "securityEnabled": security,
        "groupTypes": [],
        **extra,
    }


def listing(*groups: dict[str, Any], children: dict[str, list[str]] | None = None, **states: bool) -> Listing:
    """A listing of these groups, all read as not converted unless `states` says otherwise."""
    found = Listing(GROUPS, objects=[SyncedObject.from_json(g, GROUPS) for g in groups])
    for o in found.objects:
        found.states[o.id] = states.get(o.name, False)
        found.children[o.id] = tuple(f"id-{c}" for c in (children or {}).get(o.name, []))
    return found


def names(levels: list[list[SyncedObject]]) -> list[list[str]]:
    return [sorted(o.name for o in level) for level in levels]


def reasons(plan: Any) -> dict[str, str]:
    return {held.object.name: held.reason for held in plan.held_back}


def test_b32_nested_groups_convert_children_first_level_by_level() -> None:
    """A group comes one level after the deepest synced group nested in it; unrelated groups go first."""
    tree = listing(
        group("grandparent"),
        group("parent"),
        group("child"),
        group("loner"),
        children={"grandparent": ["parent"], "parent": ["child"]},
    )
    plan = plan_kind(tree, frozenset(), mail_enabled=False)
    assert names(plan.levels) == [["child", "loner"], ["parent"], ["grandparent"]]
    assert plan.children == {"id-grandparent": ("id-parent",), "id-parent": ("id-child",)}
    assert plan_kind(tree, frozenset(), mail_enabled=False) == plan


def test_b32_a_parent_of_an_excluded_child_is_held_back_with_the_reason() -> None:
    """An excluded child stays in AD, so its parent and grandparent are held back, each naming why."""
    tree = listing(
        group("grandparent"),
        group("parent"),
        group("child"),
        children={"grandparent": ["parent"], "parent": ["child"]},
    )
    plan = plan_kind(tree, frozenset({"name:child"}), mail_enabled=False)
    assert plan.levels == [] and plan.excluded == 1
    assert reasons(plan) == {
        "parent": "its member group child is excluded (ENFORCE_EXCLUDE), and children are converted first",
        "grandparent": "its member group parent is held back, and children are converted first",
    }


def test_b31_mail_enabled_groups_are_left_alone_without_the_opt_in() -> None:
    """Distribution lists and mail-enabled security groups convert only with ENFORCE_MAIL_ENABLED_GROUPS=true."""
    tree = listing(group("dl", mail=True, security=False), group("mesg", mail=True), group("sg"))
    plan = plan_kind(tree, frozenset(), mail_enabled=False)
    assert names(plan.levels) == [["sg"]]
    assert {h.object.name: h.reason for h in plan.out_of_scope} == {"dl": MAIL_ENABLED_LEFT, "mesg": MAIL_ENABLED_LEFT}
    opted_in = plan_kind(tree, frozenset(), mail_enabled=True)
    assert names(opted_in.levels) == [["dl", "mesg", "sg"]] and opted_in.out_of_scope == []


def test_b32_a_security_parent_of_a_mail_enabled_child_waits_for_the_opt_in() -> None:
    """A child left alone for being mail-enabled holds its parent back too, and the reason says so."""
    tree = listing(group("parent"), group("dl", mail=True, security=False), children={"parent": ["dl"]})
    plan = plan_kind(tree, frozenset(), mail_enabled=False)
    assert reasons(plan) == {
        "parent": f"its member group dl is left alone ({MAIL_ENABLED_LEFT}), and children are converted first"
    }


def test_b32_a_converted_child_does_not_hold_its_parent_back() -> None:
    """A child already cloud-managed is done: its parent is a candidate on the first level."""
    tree = listing(group("parent"), group("child"), children={"parent": ["child"]}, child=True)
    plan = plan_kind(tree, frozenset(), mail_enabled=False)
    assert names(plan.levels) == [["parent"]] and plan.already_cloud_managed == 1


def test_b32_groups_nested_in_a_cycle_are_held_back() -> None:
    """AD allows a cycle of nested groups; no order converts children first, so all of it is held back."""
    tree = listing(group("a"), group("b"), group("outside"), children={"a": ["b"], "b": ["a"]})
    plan = plan_kind(tree, frozenset(), mail_enabled=False)
    assert names(plan.levels) == [["outside"]]
    assert "nests in a cycle of groups (with b)" in reasons(plan)["a"]
    assert "nests in a cycle of groups (with a)" in reasons(plan)["b"]


def test_b32_a_synced_child_missing_from_the_listing_holds_its_parent_back() -> None:
    """Listings lag: a synced member group the listing did not return is waited for, not ignored."""
    tree = listing(group("parent"), children={"parent": ["late"]})
    tree.child_names["id-late"] = "late"
    tree.child_synced["id-late"] = True
    plan = plan_kind(tree, frozenset(), mail_enabled=False)
    assert plan.levels == []
    assert "its member group late is synced but was not in the listing" in reasons(plan)["parent"]


def test_b32_a_member_group_that_left_directory_sync_does_not_hold_its_parent() -> None:
    """onPremisesSyncEnabled false (sync turned off for it) leaves the child in the cloud: the parent goes."""
    tree = listing(group("parent"), children={"parent": ["gone"]})
    tree.child_synced["id-gone"] = False
    assert names(plan_kind(tree, frozenset(), mail_enabled=False).levels) == [["parent"]]


def test_an_object_whose_state_could_not_be_read_is_held_back_and_so_is_its_parent() -> None:
    """A failed state read is never taken for "not converted": the object and its parents wait for the next run."""
    tree = listing(group("parent"), group("child"), children={"parent": ["child"]})
    del tree.states["id-child"]
    tree.errors["id-child"] = "its onPremisesSyncBehavior could not be read: throttled"
    plan = plan_kind(tree, frozenset(), mail_enabled=False)
    assert reasons(plan) == {
        "child": "its onPremisesSyncBehavior could not be read: throttled",
        "parent": "its member group child could not be read, and children are converted first",
    }


def test_exclusions_match_ids_display_names_and_every_smtp_address() -> None:
    """ENFORCE_EXCLUDE names a group or contact by id, `name:` display name, mail or any smtp proxy address."""
    parse = next(s.parse for s in SETTINGS if s.name == "ENFORCE_EXCLUDE")
    data = group("Finance  Team", proxyAddresses=["SMTP:finance@contoso.com", "smtp:fin@contoso.com"])
    data |= {"id": "3B6F0C2A-0000-4000-8000-000000000001", "mail": "team@contoso.com"}
    keys = SyncedObject.from_json(data, GROUPS).keys
    entries = ("3b6f0c2a-0000-4000-8000-000000000001", "name: finance team", "SMTP:fin@contoso.com", "Team@contoso.com")
    for entry in entries:
        assert parse(entry) <= keys, entry  # type: ignore[operator]
    assert not parse("name:finance") & keys  # type: ignore[operator]


def test_graph_group_types_follow_graphs_table() -> None:
    """groupTypes, mailEnabled and securityEnabled tell the four kinds of group apart."""
    assert group_type({"groupTypes": ["Unified"], "mailEnabled": True}) == "Microsoft 365 group"
    assert group_type({"mailEnabled": True, "securityEnabled": True}) == "mail-enabled security group"
    assert group_type({"mailEnabled": True, "securityEnabled": False}) == "distribution list"
    assert group_type({"mailEnabled": False, "securityEnabled": True}) == "security group"
    assert SyncedObject.from_json({"id": "C1", "displayName": "c"}, CONTACTS).type == "contact"


def test_is_cloud_managed_is_read_plain_or_wrapped_and_never_guessed() -> None:
    """Both answer shapes are read; an answer without the boolean is unknown, never false."""
    assert cloud_managed({"isCloudManaged": True}) is True
    assert cloud_managed({"value": {"isCloudManaged": False}}) is False
    assert cloud_managed({"isCloudManaged": "true"}) is None
    assert cloud_managed(None) is None
