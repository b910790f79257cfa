"""Reading one kind of synced object: the listing, then each one's state and nested groups through `$batch`.

Requests: the listing's pages, then ceil(N / 20) batches of state reads, and for groups as many again for their
member groups (docs/wire-protocols.md, "Nested groups"). Nothing is read one object per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from shared.authority.objects import GROUPS, Kind, SyncedObject, cloud_managed
from shared.directory import ADVANCED, BatchAnswer, GraphCall, GraphDirectory
from shared.errors import PermissionDeniedError, first_line

__all__ = ["Listing", "listed_keys", "read_states", "read_synced", "state_read"]

log = logging.getLogger("exoprov.authority")

SYNCED_FILTER = "onPremisesSyncEnabled eq true"
# Direct member groups: a cast is an advanced query ($count, and ConsistencyLevel in the item's own headers).
CHILDREN_URL = (
    "/groups/{}/members/microsoft.graph.group?$select=id,displayName,onPremisesSyncEnabled&$count=true&$top=999"
)


@dataclass
class Listing:
    """What one read of a kind found: the synced objects, each one's state, and each group's synced member groups."""

    kind: Kind
    objects: list[SyncedObject] = field(default_factory=list)
    states: dict[str, bool] = field(default_factory=dict)  # isCloudManaged, by id; absent when unread
    children: dict[str, tuple[str, ...]] = field(default_factory=dict)  # synced member group ids; absent: unread
    child_names: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # why an object's state or members could not be read
    requests: int = 0


def read_synced(directory: GraphDirectory, kind: Kind) -> Listing:
    """List every synced object of `kind`, then read their states (and member groups) in batches of 20."""
    started = directory.sent
    listing = Listing(kind)
    query = {"$filter": SYNCED_FILTER, "$select": kind.select}  # the doctor's listed_keys reads the same
    # eq works without the advanced query parameters; sending them is allowed, and needed for the casts anyway.
    for page in directory.pages(f"/{kind.name}", query, role=kind.list_role, advanced=True):
        listing.objects += [SyncedObject.from_json(item, kind) for item in page if item.get("id")]
    log.info("%d synced %s listed", len(listing.objects), kind.name)
    reads = [state_read(kind, o.id) for o in listing.objects]
    if kind is GROUPS:
        reads += [
            GraphCall(f"{o.id}/children", CHILDREN_URL.format(o.id), kind.list_role, ADVANCED) for o in listing.objects
        ]
    answers = directory.batch(reads)
    denied = next((a.error for a in answers.values() if isinstance(a.error, PermissionDeniedError)), None)
    if denied is not None:
        raise denied  # a role is missing: every object would fail alike, so the kind fails once, naming it
    for o in listing.objects:
        _take_state(listing, o.id, answers.get(f"{o.id}/state"))
        if kind is GROUPS:
            _take_children(listing, directory, o.id, answers.get(f"{o.id}/children"))
    listing.requests = directory.sent - started
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


def read_states(directory: GraphDirectory, kind: Kind, ids: list[str]) -> dict[str, bool | str]:
    """Each object's isCloudManaged, or the reason it could not be read, in batches of 20."""
    answers = directory.batch([state_read(kind, object_id) for object_id in ids])
    found: dict[str, bool | str] = {}
    for object_id in ids:
        answer = answers.get(f"{object_id}/state")
        value = cloud_managed(answer.body) if answer and not answer.error else None
        found[object_id] = value if value is not None else _why(answer)
    return found


def _take_state(listing: Listing, object_id: str, answer: BatchAnswer | None) -> None:
    value = cloud_managed(answer.body) if answer and not answer.error else None
    if value is None:
        listing.errors[object_id] = f"its onPremisesSyncBehavior could not be read: {_why(answer)}"
    else:
        listing.states[object_id] = value


def _take_children(listing: Listing, directory: GraphDirectory, group_id: str, answer: BatchAnswer | None) -> None:
    if answer is None or answer.error or not isinstance(answer.body, dict):
        listing.errors.setdefault(group_id, f"its member groups could not be read: {_why(answer)}")
        return
    members = [m for m in answer.body.get("value") or [] if isinstance(m, dict)]
    link = answer.body.get("@odata.nextLink")
    if isinstance(link, str) and link:
        for page in directory.follow(link, role=listing.kind.list_role, advanced=True):
            members += page
    synced = [m for m in members if m.get("id") and m.get("onPremisesSyncEnabled") is True]
    for member in synced:
        listing.child_names[str(member["id"]).lower()] = str(member.get("displayName") or member["id"])
    listing.children[group_id] = tuple(str(m["id"]).lower() for m in synced)


def _why(answer: BatchAnswer | None) -> str:
    if answer is None:
        return "no answer"
    if answer.error is not None:
        return first_line(answer.error)
    return f"HTTP {answer.status} without isCloudManaged"
