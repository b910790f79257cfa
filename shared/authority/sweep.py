"""One kind's part of a sweep: read (listing, states, nesting) -> plan (pure) -> apply (levels, verified)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from shared.authority.apply import write_levels
from shared.authority.objects import Kind
from shared.authority.plan import MAIL_ENABLED_LEFT, AuthorityPlan, plan_kind
from shared.authority.read import read_synced
from shared.authority.report import KindReport
from shared.directory import GraphDirectory
from shared.errors import BudgetExhaustedError, ExoprovError, first_line
from shared.journal import Session
from shared.run_control import Progress
from shared.settings import Settings

__all__ = ["KindSweep", "sweep_kind"]

log = logging.getLogger("exoprov.authority")

MAIL_ENABLED_NOTE = (
    "converted distribution lists and mail-enabled security groups are managed in Exchange Online from then on, "
    "read-only in Entra and Graph, and group writeback cannot provision them back to AD"
)
PREVIEW_NOTE = "moving a contact's source of authority is a preview feature of Microsoft Entra"


@dataclass
class KindSweep:
    """The result of one kind's sweep: its section, what it matched of ENFORCE_EXCLUDE (None: the kind could
    not be listed, so nothing can be said), and a journal error."""

    report: KindReport
    matched: set[str] | None
    journal_error: str | None = None


def sweep_kind(
    directory: GraphDirectory,
    kind: Kind,
    settings: Settings,
    *,
    apply: bool,
    session: Session,
    deadline: float,
    cancel: threading.Event,
    progress: Progress | None = None,
) -> KindSweep:
    """Plan one kind from a fresh read and, in apply mode and under its own brake, convert its candidates."""
    report = KindReport(kind, "apply" if apply else "report", settings.enforce_max_changes)
    if kind.preview:
        report.notes.append(PREVIEW_NOTE)
    started = directory.sent
    try:
        listing = read_synced(directory, kind, deadline)
    except ExoprovError as exc:
        log.error("the synced %s could not be read: %s", kind.name, exc)
        report.complete = False
        if isinstance(exc, BudgetExhaustedError):
            report.notes.append(f"reading the synced {kind.name} did not finish within the time budget; none changed")
        else:
            report.error = first_line(exc)
            report.notes.append(f"the synced {kind.name} could not be read ({first_line(exc)}); none was changed")
        report.requests = directory.sent - started
        return KindSweep(report, None)
    plan = plan_kind(listing, settings.enforce_exclude, mail_enabled=settings.enforce_mail_enabled_groups)
    _copy(plan, report)
    unread = [held for held in plan.held_back if held.object.id in listing.errors]
    if unread:
        report.complete = False
        report.notes.append(
            f"{len(unread)} {kind.name} could not be read and are held back (see heldBackList); the next run reads "
            "them again"
        )
    journal_error = write_levels(
        directory,
        kind,
        report,
        settings,
        plan.levels,
        plan.children,
        "its member group(s)",
        value=True,
        apply=apply,
        brake_note="would change, more than ENFORCE_MAX_CHANGES={limit}; none was changed. Review the report, "
        "then raise the limit or exclude some",
        session=session,
        deadline=deadline,
        cancel=cancel,
        progress=progress,
    )
    report.requests = directory.sent - started
    log.info(
        "%s: %d listed, %d candidates, %d changed, %d failed, %d unknown, %d held back",
        kind.name,
        report.scanned,
        report.candidates,
        report.changed,
        report.failed,
        report.unknown,
        len(report.held_back_list),
    )
    return KindSweep(report, plan.matched_exclusions, journal_error)


def _copy(plan: AuthorityPlan, report: KindReport) -> None:
    report.scanned = plan.scanned
    report.already_cloud_managed = plan.already_cloud_managed
    report.excluded = plan.excluded
    report.out_of_scope_list = [held.to_json() for held in plan.out_of_scope]
    for held in plan.held_back:
        report.hold(held.to_json())
    left = sum(held.reason == MAIL_ENABLED_LEFT for held in plan.out_of_scope)
    if left:
        report.notes.append(
            f"{left} mail-enabled group(s) are left in AD; ENFORCE_MAIL_ENABLED_GROUPS=true converts them too: "
            + MAIL_ENABLED_NOTE
        )
    elif any(o.mail_enabled for o in plan.candidates):
        report.notes.append(MAIL_ENABLED_NOTE)
