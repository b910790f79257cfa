"""Undo of one sweep (or undo) run: set back what it flipped, where the object still reads what it wrote.

Groups and contacts are taken back by `shared/authority/undo.py`, one section of the report per kind.

The run's journal says which mailboxes it changed (outcome `applied`); one fresh listing says what they read
now. A mailbox is set back only when it still reads the run's value, is still a directory-synced mailbox and
is not excluded (ENFORCE_EXCLUDE); the brake (ENFORCE_MAX_CHANGES) applies as in a sweep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.authority.objects import KINDS
from shared.authority.report import not_reached
from shared.authority.undo import undo_kind
from shared.directory import GraphDirectory
from shared.enforcement import Applier, ListedMailbox, Report, exclusion_keys, list_synced
from shared.errors import BudgetExhaustedError, ConfigurationError
from shared.exchange import ExchangeClient
from shared.journal import Entry, Journal, Session
from shared.recovery import CLOUD_MANAGED
from shared.run_control import INTERRUPTED_NOTE, Cancelled, Progress, StopSignal
from shared.settings import Settings

__all__ = ["undo"]

log = logging.getLogger("exoprov.undo")


def undo(
    exchange: Callable[[], ExchangeClient],
    journal: Journal,
    settings: Settings,
    run_id: str,
    *,
    apply: bool,
    session: Session,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    directory: Callable[[], GraphDirectory] | None = None,
) -> Report:
    """Plan the undo of `run_id` from its journal and a fresh read; with `apply`, write it (journaled).

    Mailboxes are read through `exchange`, groups and contacts through `directory`: each only when the run
    changed some."""
    started = time.monotonic()
    deadline = started + settings.enforce_time_budget_seconds
    cancel = cancel or threading.Event()
    report = Report(
        mode="apply" if apply else "report",
        run_id=session.who.get("runId", ""),
        max_changes=settings.enforce_max_changes,
        undoes=run_id,
    )
    entries = _entries(journal, run_id)
    flips = _flips(entries, run_id, report)
    report.scanned = len(flips)
    try:
        candidates = _plan(exchange, settings, flips, report, deadline, cancel) if flips else []
    except (BudgetExhaustedError, Cancelled) as exc:
        report.complete, report.interrupted = False, isinstance(exc, Cancelled)
        report.notes.append(f"the listing did not finish ({exc or 'interrupted'}); no mailbox was changed")
        candidates = []
    report.candidates = len(candidates)
    report.candidate_list = [m.to_json() for m, _ in candidates]
    limit = settings.enforce_max_changes
    if limit and len(candidates) > limit:
        report.brake_engaged = True
        report.notes.append(
            f"{len(candidates)} mailboxes would be set back, more than ENFORCE_MAX_CHANGES={limit}; "
            "nothing was changed. Review the report, then raise the limit or exclude mailboxes"
        )
    elif apply and candidates:
        for value in (False, True):  # a run wrote one value; both loops only in a hand-edited journal
            group = [m for m, back in candidates if back is value]
            if group:
                Applier(exchange(), settings, report, deadline, progress, cancel, session, value).run(group)
        if report.changed:
            report.notes.append(
                "the next sweep in apply mode flips these mailboxes again unless they are in ENFORCE_EXCLUDE "
                "(or ENFORCE_MODE is report)"
            )
    stop = StopSignal(cancel, deadline)
    for kind in KINDS.values():
        if not any(e.action == kind.action for e in entries):
            continue
        if stop.check() or report.interrupted:
            why = stop.reason or INTERRUPTED_NOTE
            report.kinds.append(not_reached(kind, report.mode, settings.enforce_max_changes, why, undoes=run_id))
            continue
        assert directory is not None, "undoing group or contact conversions needs the Graph directory"
        section, journal_error = undo_kind(
            directory(),
            kind,
            settings,
            entries,
            undoes=run_id,
            apply=apply,
            session=session,
            deadline=deadline,
            cancel=cancel,
            progress=progress,
        )
        report.kinds.append(section)
        report.interrupted = report.interrupted or section.interrupted
        report.journal_error = report.journal_error or journal_error
    report.duration_seconds = time.monotonic() - started
    log.info("undo of %s finished: %s", run_id, report.to_json())
    return report


def _entries(journal: Journal, run_id: str) -> list[Entry]:
    """Every entry of the run; refused while one has no outcome (the run is alive, or not settled yet)."""
    info = journal.run_info(run_id)
    if info is None:
        raise ConfigurationError(
            "--run",
            f"the journal has no run {run_id}: it changed nothing, or it was journaled in another storage account",
        )
    entries = journal.run_entries(run_id)
    pending = [e for e in entries if e.outcome == "pending"]
    if pending:
        raise ConfigurationError(
            "--run",
            f"run {run_id} still has {len(pending)} write(s) without an outcome: it is still running, or it "
            "stopped and has not been settled yet (any sweep or undo settles it once its process is gone)",
        )
    return entries


def _flips(entries: list[Entry], run_id: str, report: Report) -> list[Entry]:
    """The run's applied cloud-management writes, one per mailbox (the last one counts)."""
    latest: dict[str, Entry] = {}
    for entry in entries:
        if entry.action == CLOUD_MANAGED and entry.outcome == "applied":
            latest[entry.target_id] = entry
    unknown = sum(e.action == CLOUD_MANAGED and e.outcome == "unknown" for e in entries)
    if unknown:
        report.notes.append(
            f"{unknown} write(s) of that run have an unknown outcome and are not set back; "
            f"see exoprov journal --run {run_id}"
        )
    settled = sum(e.settled_by is not None for e in latest.values())
    if settled:
        report.notes.append(
            f"{settled} of its writes were settled by reading the mailbox back after the run stopped: they read "
            "as the run wanted, which another writer could have done too"
        )
    return list(latest.values())


def _plan(
    exchange: Callable[[], ExchangeClient],
    settings: Settings,
    flips: list[Entry],
    report: Report,
    deadline: float,
    cancel: threading.Event,
) -> list[tuple[ListedMailbox, bool]]:
    """The mailboxes to set back, each with the value it goes back to; the rest are counted in the report."""
    wanted = {entry.target_id: entry for entry in flips}

    def keep(found: dict[str, dict[str, Any]], record: dict[str, Any]) -> None:
        identity = ListedMailbox.from_record(record).identity
        if identity in wanted:
            found[identity] = record

    found = list_synced(exchange(), dict, keep, deadline, cancel) if wanted else {}
    candidates: list[tuple[ListedMailbox, bool]] = []
    for target_id, entry in wanted.items():
        listed = found.get(target_id)
        if listed is None:
            report.changed_since.append({"identity": entry.target, "reason": "no longer a directory-synced mailbox"})
            continue
        mailbox = ListedMailbox.from_record(listed)
        if mailbox.cloud_managed is not entry.after:
            reason = f"reads IsExchangeCloudManaged {mailbox.cloud_managed} now, not the {entry.after} this run wrote"
            report.changed_since.append({"identity": mailbox.label, "reason": reason})
        elif exclusion_keys(listed) & settings.enforce_exclude:
            report.excluded += 1
        else:
            candidates.append((mailbox, not entry.after))
    if report.changed_since:
        report.notes.append(
            f"{len(report.changed_since)} mailbox(es) changed since the run and are left as they are (changedSince)"
        )
    return candidates
