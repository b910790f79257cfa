"""What a listing of synced groups or contacts means: the candidates in levels, children before parents.

Pure: the same listing, exclusions and opt-in give the same plan. Conversion is per object and not recursive,
and Microsoft's guidance converts the lowest group first, so a group goes only after every synced group nested
in it: a parent whose synced child is excluded, left alone, unreadable or held back is held back too, with the
reason ("Nested groups" in docs/exchange-behaviour.md, rule B32).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.authority.objects import MICROSOFT_365, Kind, SyncedObject
from shared.authority.read import Listing

__all__ = ["MAIL_ENABLED_LEFT", "AuthorityPlan", "Held", "in_levels", "plan_kind"]

MAIL_ENABLED_LEFT = "mail-enabled; ENFORCE_MAIL_ENABLED_GROUPS is false"


@dataclass(frozen=True)
class Held:
    """An object the run leaves as it is, and why."""

    object: SyncedObject
    reason: str

    def to_json(self) -> dict[str, str | None]:
        return {**self.object.to_json(), "reason": self.reason}


@dataclass
class AuthorityPlan:
    """The listing's counts, the objects left alone with their reasons, and the candidates level by level."""

    kind: Kind
    scanned: int = 0
    already_cloud_managed: int = 0
    excluded: int = 0
    out_of_scope: list[Held] = field(default_factory=list)
    held_back: list[Held] = field(default_factory=list)
    levels: list[list[SyncedObject]] = field(default_factory=list)
    children: dict[str, tuple[str, ...]] = field(default_factory=dict)  # a candidate's candidate children
    matched_exclusions: set[str] = field(default_factory=set)

    @property
    def candidates(self) -> list[SyncedObject]:
        return [o for level in self.levels for o in level]


def plan_kind(listing: Listing, exclude: frozenset[str], *, mail_enabled: bool) -> AuthorityPlan:
    """Classify every listed object, hold back parents of what is not converted, and order the rest by level."""
    plan = AuthorityPlan(listing.kind)
    left: dict[str, str] = {}  # why an object that is not a candidate (and not converted) stays as it is
    candidates: dict[str, SyncedObject] = {}
    converted: set[str] = set()
    for o in listing.objects:
        plan.scanned += 1
        hits = o.keys & exclude
        plan.matched_exclusions |= hits
        if listing.states.get(o.id) is True:
            plan.already_cloud_managed += 1  # converted between the listing and the state read (replication lag)
            converted.add(o.id)
        elif o.type == MICROSOFT_365 or (o.mail_enabled and not mail_enabled):
            reason = (
                "a Microsoft 365 group, which has no source in AD" if o.type == MICROSOFT_365 else MAIL_ENABLED_LEFT
            )
            plan.out_of_scope.append(Held(o, reason))
            left[o.id] = f"is left alone ({reason})"
        elif hits:
            plan.excluded += 1
            left[o.id] = "is excluded (ENFORCE_EXCLUDE)"
        elif o.id in listing.errors:
            plan.held_back.append(Held(o, listing.errors[o.id]))
            left[o.id] = "could not be read"
        else:
            candidates[o.id] = o
    listed = {o.id for o in listing.objects}
    names = {**listing.child_names, **{o.id: o.name for o in listing.objects}}
    _hold_back_parents(plan, listing, candidates, converted, listed, left, names)
    _order(plan, listing, candidates, names)
    return plan


def _hold_back_parents(
    plan: AuthorityPlan,
    listing: Listing,
    candidates: dict[str, SyncedObject],
    converted: set[str],
    listed: set[str],
    left: dict[str, str],
    names: dict[str, str],
) -> None:
    """Hold back every candidate with a synced child that stays in AD, until no more are found."""
    changed = True
    while changed:
        changed = False
        for object_id, o in list(candidates.items()):
            for child in listing.children.get(object_id, ()):
                if child in candidates or child in converted or listing.outside.get(child) is True:
                    continue
                why = left.get(child) or _outside(listing, child, listed)
                if why is None:
                    continue
                reason = f"its member group {names.get(child, child)} {why}, and children are converted first"
                plan.held_back.append(Held(o, reason))
                left[object_id] = "is held back"
                del candidates[object_id]
                changed = True
                break


def _order(plan: AuthorityPlan, listing: Listing, candidates: dict[str, SyncedObject], names: dict[str, str]) -> None:
    """Levels over candidate children; what nests in a cycle is held back."""
    children = {i: tuple(c for c in listing.children.get(i, ()) if c in candidates) for i in candidates}
    plan.children = {i: kids for i, kids in children.items() if kids}
    plan.levels, cyclic = in_levels(candidates, children)
    stuck = {o.id for o in cyclic}
    for o in cyclic:
        cycle = ", ".join(sorted(names.get(c, c) for c in children[o.id] if c in stuck))
        plan.held_back.append(
            Held(o, f"it nests in a cycle of groups (with {cycle}), so no order converts children first")
        )


def in_levels(
    objects: dict[str, SyncedObject], first: dict[str, tuple[str, ...]]
) -> tuple[list[list[SyncedObject]], list[SyncedObject]]:
    """Kahn's algorithm: levels in which each object comes after every id `first` names for it (all ids among
    `objects`), and the objects no order can place (a cycle, or what depends on one)."""
    levels: list[list[SyncedObject]] = []
    done: set[str] = set()
    remaining = dict(objects)
    while remaining:
        level = [o for i, o in remaining.items() if all(c in done for c in first.get(i, ()))]
        if not level:
            break
        levels.append(level)
        for o in level:
            done.add(o.id)
            del remaining[o.id]
    return levels, list(remaining.values())


def _outside(listing: Listing, child: str, listed: set[str]) -> str | None:
    """Why a member group from AD that is neither a candidate nor converted keeps its parent back; None when it
    does not (it left directory sync: onPremisesSyncEnabled false, managed in the cloud since)."""
    if child in listed:
        return "stays in AD"
    synced = listing.child_synced.get(child)
    if synced is False:
        return None
    if synced is True:
        return "is synced but was not in the listing (directory lag; the next run reads it again)"
    state = listing.outside.get(child)
    if state is False:
        return "was rolled back to AD and waits for the next sync cycle"
    return f"could not be read ({state or 'no answer'})"
