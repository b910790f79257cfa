"""Undo of one kind's conversions: set isCloudManaged back to false where the object still reads what the run
wrote, is not excluded, and (for a group) has no member born in the cloud that the next sync would drop.

Undo removes nothing: Microsoft's rollback steps remove the cloud members first, and an object rolled back
waits for the next sync cycle before AD takes it over again (docs/exchange-behaviour.md, B33). Groups go back
parents first, the mirror of the sweep's children first: a group stays converted while a group holding it does.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from shared.authority.apply import write_levels
from shared.authority.objects import GROUPS, Kind, SyncedObject
from shared.authority.plan import in_levels
from shared.authority.read import all_members, read_states
from shared.authority.report import KindReport
from shared.directory import GraphCall, GraphDirectory
from shared.errors import BudgetExhaustedError, ExoprovError, first_line
from shared.journal import Entry, Session
from shared.run_control import Progress
from shared.settings import Settings

__all__ = ["CLOUD_ONLY_SELECT", "undo_kind"]

log = logging.getLogger("exoprov.authority")

CLOUD_ONLY_SELECT = "id,displayName,mail,userPrincipalName,onPremisesSyncEnabled,onPremisesSecurityIdentifier"
TAKEOVER_NOTE = (
    "a rollback completes at the next sync cycle: until then the object reads isCloudManaged false and "
    "onPremisesSyncEnabled null, and can still be changed in the cloud; then AD takes it over again. After that, "
    "the next sweep in apply mode converts it again unless ENFORCE_EXCLUDE names it (or ENFORCE_OBJECTS leaves "
    "the kind out)"
)
GROUP_TYPE = "#microsoft.graph.group"


def undo_kind(
    directory: GraphDirectory,
    kind: Kind,
    settings: Settings,
    entries: list[Entry],
    *,
    undoes: str,
    apply: bool,
    session: Session,
    deadline: float,
    cancel: threading.Event,
    progress: Progress | None = None,
) -> tuple[KindReport, str | None]:
    """Plan (and with `apply`, write) the rollback of the run's conversions in `entries`; returns the section
    and any journal error."""
    report = KindReport(kind, "apply" if apply else "report", settings.enforce_max_changes, undoes=undoes)
    started = directory.sent
    # An unknown outcome may have applied: a fresh read decides, as for an applied one.
    latest = {
        e.target_id.lower(): e for e in entries if e.action == kind.action and e.outcome in ("applied", "unknown")
    }
    report.changed_by_run = len(latest)
    rollbacks = [e for e in latest.values() if e.after is not True]
    if rollbacks:
        report.notes.append(
            f"{len(rollbacks)} of that run's writes set {kind.name} back to AD (an undo run); undo does not convert "
            "them again: the next sweep in apply mode does, children first"
        )
    try:
        found = _read(directory, kind, report, [e for e in latest.values() if e.after is True], deadline)
        kept = {object_id: o for object_id, o in found.items() if not o.keys & settings.enforce_exclude}
        report.excluded = len(found) - len(kept)
        # Every converted group's members: the cloud-born ones block its rollback, the groups among them must wait
        # for it (an excluded group still holds its members in the cloud).
        members = _members(directory, found, report, deadline) if kind is GROUPS else {}
    except ExoprovError as exc:
        report.complete = False
        if not isinstance(exc, BudgetExhaustedError):
            report.error = first_line(exc)
        report.notes.append(f"the {kind.name} could not be read back ({first_line(exc)}); none was set back")
        report.requests = directory.sent - started
        return report, None
    candidates, parents = _plan(kind, report, found, kept, members)
    unread = [f["identity"] for f in report.failures]
    if kind is GROUPS and unread and candidates:
        # A group that could not be read may hold one of these: setting a child back before it would leave a cloud
        # group holding a group AD manages again, so every group stays converted this time.
        for o in candidates.values():
            report.hold({**o.to_json(), "reason": f"some groups of the run could not be read ({', '.join(unread)})"})
        candidates, parents = {}, {}
    levels, cyclic = in_levels(candidates, parents)
    for o in cyclic:
        report.hold({**o.to_json(), "reason": "it nests in a cycle of groups the run converted; left converted"})
    _explain(report)
    journal_error = write_levels(
        directory,
        kind,
        report,
        settings,
        levels,
        parents,
        "the group holding it",
        value=False,
        apply=apply,
        brake_note="would be set back, more than ENFORCE_MAX_CHANGES={limit}; none was changed",
        session=session,
        deadline=deadline,
        cancel=cancel,
        progress=progress,
    )
    if report.changed:
        report.notes.append(TAKEOVER_NOTE)
    report.requests = directory.sent - started
    return report, journal_error


def _plan(
    kind: Kind,
    report: KindReport,
    found: dict[str, SyncedObject],
    kept: dict[str, SyncedObject],
    members: dict[str, list[dict[str, Any]]],
) -> tuple[dict[str, SyncedObject], dict[str, tuple[str, ...]]]:
    """The objects to set back, and for each the converted groups holding it that must go first; groups with
    cloud members, and the groups they hold, stay converted with the reason."""
    candidates: dict[str, SyncedObject] = {}
    for object_id, o in kept.items():
        cloud_only = [_member_name(m) for m in members.get(object_id, []) if _born_in_cloud(m)]
        if kind is GROUPS and object_id not in members:
            continue  # its members could not be read: already a failure
        if cloud_only:
            report.blocked.append({**o.to_json(), "cloudOnlyMembers": cloud_only})
        else:
            candidates[object_id] = o
    holders: dict[str, list[str]] = {}
    for parent, listed in members.items():
        for m in listed:
            child = str(m.get("id", "")).lower()
            if m.get("@odata.type") == GROUP_TYPE and child in found:
                holders.setdefault(child, []).append(parent)
    changed = True
    while changed:  # a group held by one that stays converted stays too, and so on down
        changed = False
        for object_id in list(candidates):
            staying = [p for p in holders.get(object_id, []) if p not in candidates]
            if staying:
                o = candidates.pop(object_id)
                names = ", ".join(sorted(found[p].name for p in staying))
                report.hold({**o.to_json(), "reason": f"the group holding it stays cloud-managed: {names}"})
                changed = True
    parents = {i: tuple(p for p in holders.get(i, []) if p in candidates) for i in candidates}
    return candidates, parents


def _read(
    directory: GraphDirectory, kind: Kind, report: KindReport, wanted: list[Entry], deadline: float
) -> dict[str, SyncedObject]:
    """The objects the run converted that still read as converted; the rest go to changedSince or failures."""
    calls = [
        GraphCall(f"{e.target_id}/object", f"/{kind.name}/{e.target_id}?$select={kind.select}", kind.list_role)
        for e in wanted
    ]
    answers = directory.batch(calls, deadline, partial=True)
    states = read_states(directory, kind, [e.target_id for e in wanted], deadline)
    found: dict[str, SyncedObject] = {}
    for entry in wanted:
        answer, state = answers[f"{entry.target_id}/object"], states[entry.target_id]
        if answer.status == 404:
            report.changed_since.append({"identity": entry.target, "reason": "it no longer exists"})
        elif answer.error is not None or not isinstance(state, bool):
            error = answer.error if answer.error is not None else state
            why = first_line(error) if isinstance(error, BaseException) else str(error)
            _fail(report, entry.target, f"it could not be read ({why}); not set back")
        elif state is not True:
            reason = "reads isCloudManaged false now, not the true this run wrote (rolled back since)"
            report.changed_since.append({"identity": entry.target, "reason": reason})
        else:
            o = SyncedObject.from_json(answer.body, kind)
            found[o.id] = o
    return found


def _members(
    directory: GraphDirectory, groups: dict[str, SyncedObject], report: KindReport, deadline: float
) -> dict[str, list[dict[str, Any]]]:
    """Each group's direct members; a group whose members could not be read is a failure and has no entry."""
    url = "/groups/{}/members?$select=" + CLOUD_ONLY_SELECT + "&$top=999"
    calls = [GraphCall(gid, url.format(gid), GROUPS.list_role) for gid in groups]
    answers = directory.batch(calls, deadline, partial=True)
    members: dict[str, list[dict[str, Any]]] = {}
    for gid, group in groups.items():
        listed = all_members(directory, answers[gid], GROUPS.list_role, deadline)
        if isinstance(listed, str):
            why = f"its members could not be read ({listed}); not set back, since cloud members would be lost"
            _fail(report, group.mail or group.name, why)
        else:
            members[gid] = listed
    return members


def _born_in_cloud(member: dict[str, Any]) -> bool:
    # A converted object reads onPremisesSyncEnabled null as a cloud-born one does; its on-premises SID stays.
    # Contacts have no SID, so a converted contact counts as cloud-only: the undo then leaves the group alone.
    return member.get("onPremisesSyncEnabled") is not True and not member.get("onPremisesSecurityIdentifier")


def _member_name(member: dict[str, Any]) -> str:
    kind = str(member.get("@odata.type", "")).rsplit(".", 1)[-1] or "member"
    name = member.get("userPrincipalName") or member.get("mail") or member.get("displayName") or member.get("id")
    return f"{name} ({kind})"


def _fail(report: KindReport, identity: str, error: str) -> None:
    report.failed += 1
    report.failures.append({"identity": identity, "error": error})


def _explain(report: KindReport) -> None:
    if report.blocked:
        report.complete = False
        report.notes.append(
            f"{len(report.blocked)} group(s) keep their cloud source of authority: they have members born in the "
            "cloud, which AD would drop when it takes the group over. Remove those members (in Exchange Online for "
            "a mail-enabled group) and run the undo again; exoprov removes nothing"
        )
    if report.changed_since:
        report.notes.append(
            f"{len(report.changed_since)} {report.kind.name} changed since the run and are left as they are"
        )
