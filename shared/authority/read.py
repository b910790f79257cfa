"""Reading one kind of synced object: the listing, then each one's state and nested groups through `$batch`.

Requests: the listing's pages, then ceil(N / 20) batches of state reads, and for groups as many again for their
member groups (docs/wire-protocols.md, "Nested groups"), plus one batch per 20 member groups that came from AD
but are no longer synced (converted, or rolled back and waiting for the sync cycle). Nothing is read one object
per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from shared.authority.objects import GROUPS, Kind, SyncedObject, cloud_managed
from shared.directory import ADVANCED, BatchAnswer, GraphCall, GraphDirectory
from shared.errors import ExoprovError, PermissionDeniedError, UnexpectedAnswerError, first_line

__all__ = ["Listing", "all_members", "listed_keys", "read_states", "read_synced", "state_read"]

log = logging.getLogger("exoprov.authority")

SYNCED_FILTER = "onPremisesSyncEnabled eq true"
# Direct member groups: a cast is an advanced query ($count, and ConsistencyLevel in the item's own headers).
# The SID tells a group that came from AD (converted, or rolled back and waiting) from one born in the cloud.
CHILDREN_URL = (
    "/groups/{}/members/microsoft.graph.group"
    "?$select=id,displayName,onPremisesSyncEnabled,onPremisesSecurityIdentifier&$count=true&$top=999"
)


@dataclass
class Listing:
    """What one read of a kind found: the synced objects, each one's state, and each group's member groups from AD."""

    kind: Kind
    objects: list[SyncedObject] = field(default_factory=list)
    states: dict[str, bool] = field(default_factory=dict)  # isCloudManaged, by id; absent when unread
    children: dict[str, tuple[str, ...]] = field(default_factory=dict)  # member groups from AD; absent: unread
    child_names: dict[str, str] = field(default_factory=dict)
    child_synced: dict[str, bool | None] = field(default_factory=dict)  # each member group's onPremisesSyncEnabled
    # Member groups from AD with onPremisesSyncEnabled null (converted, or rolled back and waiting for the sync):
    # their isCloudManaged, or why it could not be read.
    outside: dict[str, bool | str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # why an object's state or members could not be read


def read_synced(directory: GraphDirectory, kind: Kind, deadline: float | None = None) -> Listing:
    """List every synced object of `kind`, then read their states (and member groups) in batches of 20."""
    listing = Listing(kind)
    query = {"$filter": SYNCED_FILTER, "$select": kind.select}  # the doctor's listed_keys reads the same
    # eq works without the advanced query parameters; sending them is allowed, and needed for the casts anyway.
    for page in directory.pages(f"/{kind.name}", query, role=kind.list_role, advanced=True, deadline=deadline):
        # The filter is the server's; a cloud-born object must never be written, so the flag is checked here too.
        listing.objects += [SyncedObject.from_json(i, kind) for i in page if _synced(i) and i.get("id")]
    log.info("%d synced %s listed", len(listing.objects), kind.name)
    reads = [state_read(kind, o.id) for o in listing.objects]
    if kind is GROUPS:
        reads += [
            GraphCall(f"{o.id}/children", CHILDREN_URL.format(o.id), kind.list_role, ADVANCED) for o in listing.objects
        ]
    answers = directory.batch(reads, deadline)
    denied = next((a.error for a in answers.values() if isinstance(a.error, PermissionDeniedError)), None)
    if denied is not None:
        raise denied  # a role is missing: every object would fail alike, so the kind fails once, naming it
    for o in listing.objects:
        state = _state(answers.get(f"{o.id}/state"))
        if isinstance(state, bool):
            listing.states[o.id] = state
        else:
            listing.errors[o.id] = f"its onPremisesSyncBehavior could not be read: {first_line(state)}"
        if kind is GROUPS:
            _take_children(listing, directory, o.id, answers.get(f"{o.id}/children"), deadline)
    listed = {o.id for o in listing.objects}
    children = {c for kids in listing.children.values() for c in kids}
    gone = sorted(c for c in children - listed if listing.child_synced.get(c) is None)
    if gone:
        states = read_states(directory, kind, gone, deadline)
        listing.outside = {c: v if isinstance(v, bool) else first_line(v) for c, v in states.items()}
    return listing


def listed_keys(directory: GraphDirectory, kind: Kind) -> set[str]:
    """Every ENFORCE_EXCLUDE key of every synced object of `kind`, from the listing alone (the doctor's check)."""
    keys: set[str] = set()
    query = {"$filter": SYNCED_FILTER, "$select": kind.select}
    for page in directory.pages(f"/{kind.name}", query, role=kind.list_role, advanced=True):
        keys.update(*(SyncedObject.from_json(item, kind).keys for item in page if item.get("id")))
    return keys


def state_read(kind: Kind, object_id: str) -> GraphCall:
    """The batched read of one object's source of authority."""
    return GraphCall(f"{object_id}/state", kind.state_url(object_id) + "?$select=isCloudManaged", kind.state_role)


def read_states(
    directory: GraphDirectory, kind: Kind, ids: list[str], deadline: float | None = None
) -> dict[str, bool | ExoprovError]:
    """Each object's isCloudManaged, or the error its read ended with, in batches of 20 (never raises for one)."""
    answers = directory.batch([state_read(kind, object_id) for object_id in ids], deadline, partial=True)
    return {object_id: _state(answers.get(f"{object_id}/state")) for object_id in ids}


def all_members(
    directory: GraphDirectory, answer: BatchAnswer | None, role: str, deadline: float | None = None
) -> list[dict[str, Any]] | str:
    """The members one batched member read returned, following its nextLink; or why they could not all be read."""
    if answer is None or answer.error is not None or not isinstance(answer.body, dict):
        return _why(answer)
    members = [m for m in answer.body.get("value") or [] if isinstance(m, dict)]
    link = answer.body.get("@odata.nextLink")
    try:
        if isinstance(link, str) and link:
            for page in directory.follow(link, role=role, advanced=True, deadline=deadline):
                members += page
    except ExoprovError as exc:
        return f"a later page failed: {first_line(exc)}"  # one group's lost page is that group's problem only
    return members


def _take_children(
    listing: Listing, directory: GraphDirectory, group_id: str, answer: BatchAnswer | None, deadline: float | None
) -> None:
    members = all_members(directory, answer, listing.kind.list_role, deadline)
    if isinstance(members, str):
        listing.errors.setdefault(group_id, f"its member groups could not be read: {members}")
        return
    from_ad = [m for m in members if m.get("id") and (_synced(m) or m.get("onPremisesSecurityIdentifier"))]
    for member in from_ad:
        child = str(member["id"]).lower()
        listing.child_names[child] = str(member.get("displayName") or member["id"])
        synced = member.get("onPremisesSyncEnabled")
        listing.child_synced[child] = synced if isinstance(synced, bool) else None
    listing.children[group_id] = tuple(str(m["id"]).lower() for m in from_ad)


def _synced(item: dict[str, Any]) -> bool:
    return item.get("onPremisesSyncEnabled") is True


def _state(answer: BatchAnswer | None) -> bool | ExoprovError:
    if answer is not None and answer.error is not None:
        return answer.error
    value = cloud_managed(answer.body) if answer is not None else None
    return value if value is not None else UnexpectedAnswerError(_why(answer))


def _why(answer: BatchAnswer | None) -> str:
    if answer is None:
        return "no answer"
    if answer.error is not None:
        return first_line(answer.error)
    return f"HTTP {answer.status} without isCloudManaged"
