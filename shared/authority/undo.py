"""Undo of one kind's conversions: set isCloudManaged back to false where the object still reads what the run
wrote, is not excluded, and (for a group) has no cloud-only member that the next sync would drop.

Undo removes nothing: Microsoft's rollback steps remove the cloud members first, and an object rolled back
waits for the next sync cycle of the sync client before AD takes it over again (docs/exchange-behaviour.md, B33).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from shared.authority.apply import AuthorityWriter
from shared.authority.objects import GROUPS, Kind, SyncedObject
from shared.authority.read import read_states
from shared.authority.report import KindReport
from shared.directory import GraphCall, GraphDirectory
from shared.enforcement import Progress
from shared.errors import first_line
from shared.journal import Entry, Session
from shared.settings import Settings

__all__ = ["CLOUD_ONLY_SELECT", "undo_kind"]

log = logging.getLogger("exoprov.authority")

CLOUD_ONLY_SELECT = "id,displayName,mail,userPrincipalName,onPremisesSyncEnabled,onPremisesSecurityIdentifier"
TAKEOVER_NOTE = (
    "a rollback completes at the next sync cycle: until then the object reads isCloudManaged false and "
    "onPremisesSyncEnabled null, and can still be changed in the cloud; then AD takes it over again"
)


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
    """Plan (and with `apply`, write) the rollback of the conversions in `entries`; returns the section and any
    journal error."""
    report = KindReport(kind, "apply" if apply else "report", settings.enforce_max_changes, undoes=undoes)
    started = directory.sent
    latest = {e.target_id.lower(): e for e in entries if e.action == kind.action and e.outcome == "applied"}
    report.changed_by_run = len(latest)
    found = _read(directory, kind, report, [e for e in latest.values() if e.after is True])
    kept = {object_id: o for object_id, o in found.items() if not o.keys & settings.enforce_exclude}
    report.excluded = len(found) - len(kept)
    members = _cloud_only_members(directory, list(kept), report) if kind is GROUPS else {}
    candidates: list[SyncedObject] = []
    for object_id, o in kept.items():
        if object_id not in members and kind is GROUPS:
            continue  # its members could not be read: a failure already
        cloud_only = [name for member_id, name in members.get(object_id, []) if member_id not in kept]
        if cloud_only:
            report.blocked.append({**o.to_json(), "cloudOnlyMembers": cloud_only})
        else:
            candidates.append(o)
    report.candidates = len(candidates)
    report.candidate_list = [o.to_json() for o in candidates]
    _explain(report)
    writer = None
    limit = settings.enforce_max_changes
    if limit and len(candidates) > limit:
        report.brake_engaged = True
        report.notes.append(
            f"{len(candidates)} {kind.name} would be set back, more than ENFORCE_MAX_CHANGES={limit}; none was changed"
        )
    elif apply and candidates:
        writer = AuthorityWriter(
            directory,
            kind,
            report,
            settings,
            value=False,
            session=session,
            deadline=deadline,
            cancel=cancel,
            progress=progress,
        )
        writer.run([candidates], {})
        if report.changed:
            report.notes.append(TAKEOVER_NOTE)
    report.requests = directory.sent - started
    return report, writer.journal_error if writer else None


def _read(directory: GraphDirectory, kind: Kind, report: KindReport, wanted: list[Entry]) -> dict[str, SyncedObject]:
    """The objects the run converted that still read as converted; the rest go to changedSince or failures."""
    calls = [
        GraphCall(f"{e.target_id}/object", f"/{kind.name}/{e.target_id}?$select={kind.select}", kind.list_role)
        for e in wanted
    ]
    answers = directory.batch(calls)
    states = read_states(directory, kind, [e.target_id for e in wanted])
    found: dict[str, SyncedObject] = {}
    for entry in wanted:
        answer, state = answers[f"{entry.target_id}/object"], states[entry.target_id]
        if answer.status == 404:
            report.changed_since.append({"identity": entry.target, "reason": "it no longer exists"})
        elif answer.error is not None or isinstance(state, str):
            why = first_line(answer.error) if answer.error is not None else state
            _fail(report, entry.target, f"it could not be read ({why}); not set back")
        elif state is not True:
            reason = "reads isCloudManaged false now, not the true this run wrote (rolled back since)"
            report.changed_since.append({"identity": entry.target, "reason": reason})
        else:
            o = SyncedObject.from_json(answer.body, kind)
            found[o.id] = o
    return found


def _cloud_only_members(
    directory: GraphDirectory, group_ids: list[str], report: KindReport
) -> dict[str, list[tuple[str, str]]]:
    """Each group's members that AD does not know (born in the cloud), by group; a group whose members could not
    be read is a failure and has no entry. A member with an on-premises SID came from AD and is not counted."""
    url = "/groups/{}/members?$select=" + CLOUD_ONLY_SELECT + "&$top=999"
    answers = directory.batch([GraphCall(gid, url.format(gid), GROUPS.list_role) for gid in group_ids])
    members: dict[str, list[tuple[str, str]]] = {}
    for gid in group_ids:
        answer = answers[gid]
        if answer.error is not None or not isinstance(answer.body, dict):
            why = first_line(answer.error) if answer.error is not None else f"HTTP {answer.status}"
            _fail(
                report, gid, f"its members could not be read ({why}); not set back, since cloud members would be lost"
            )
            continue
        listed = [m for m in answer.body.get("value") or [] if isinstance(m, dict)]
        link = answer.body.get("@odata.nextLink")
        if isinstance(link, str) and link:
            for page in directory.follow(link, role=GROUPS.list_role):
                listed += page
        members[gid] = [(str(m.get("id", "")).lower(), _member_name(m)) for m in listed if _born_in_cloud(m)]
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
        report.notes.append(
            f"{len(report.blocked)} group(s) keep their cloud source of authority: they have members born in the "
            "cloud, which AD would drop when it takes the group over. Remove those members (in Exchange Online for "
            "a mail-enabled group) and run the undo again; exoprov removes nothing"
        )
    if report.changed_since:
        report.notes.append(
            f"{len(report.changed_since)} {report.kind.name} changed since the run and are left as they are"
        )
