"""Journaled runs: a sweep or an undo under a new run id (its correlation id too), after settling crashed runs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shared.enforcement import Report, sweep
from shared.errors import ConfigurationError, JournalUnavailableError, first_line
from shared.events import emit
from shared.journal import Session, new_run_id, run_session
from shared.logs import correlation_scope
from shared.recovery import settle_runs
from shared.run_control import Progress
from shared.wiring import Clients

__all__ = ["could_not_start", "run_sweep", "run_undo"]

log = logging.getLogger("exoprov.runs")


def run_sweep(
    clients: Clients, *, apply: bool, progress: Progress | None = None, cancel: threading.Event | None = None
) -> Report:
    """One sweep with its own run id; every write it makes is in the journal under that id."""

    def work(session: Session) -> Report:
        exchange = clients.exchange() if "mailboxes" in clients.settings.enforce_objects else None
        return sweep(
            exchange,
            clients.settings,
            apply=apply,
            session=session,
            progress=progress,
            cancel=cancel,
            directory=clients.directory,
        )

    return _as_run(clients, "sweep", apply, work, apply=apply)


def run_undo(
    clients: Clients,
    undo_run_id: str,
    *,
    apply: bool,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Report:
    """Take back what run `undo_run_id` changed, as a run of its own (so that it can be undone too)."""
    from shared.journal import check_run_id
    from shared.undo import undo

    check_run_id(undo_run_id)

    def work(session: Session) -> Report:
        return undo(
            clients.exchange,
            clients.journal(),
            clients.settings,
            undo_run_id,
            apply=apply,
            session=session,
            progress=progress,
            cancel=cancel,
            directory=clients.directory,
        )

    # Even in report mode an undo reads the journal, so it needs one like a run that writes.
    return _as_run(clients, "undo", True, work, apply=apply, undoes=undo_run_id)


def _as_run(
    clients: Clients, kind: str, needs_journal: bool, work: Callable[[Session], Report], *, apply: bool, **meta: str
) -> Report:
    """Run `work` as a run: a new run id (its correlation id too), earlier crashed runs settled first, and a
    journal session kept alive while it runs and closed after, with what both said in the report's notes.
    How it ended is one `run` event (shared/events.py), a run that raised included."""
    run_id = new_run_id()
    started = time.monotonic()
    with correlation_scope(run_id):
        try:
            if needs_journal or clients.settings.has_storage:
                notes = _settle(clients, run_id, needed=needs_journal)
                session = clients.journal().run_session(run_id, kind, **meta)
                session.keep_alive()
            else:
                notes = [
                    "AzureWebJobsStorage is not set: no journal, so this report-only run did not settle earlier runs"
                ]
                session = run_session(None, run_id, kind)
            try:
                report = work(session)
            finally:
                closing = _close(session)
        except Exception as exc:
            _ended(kind, run_id, "apply" if apply else "report", None, time.monotonic() - started, exc)
            raise
        report.notes[:0] = notes
        report.notes += closing
        _ended(kind, run_id, report.mode, report, report.duration_seconds, None)
    return report


def could_not_start(kind: str, error: Exception) -> None:
    """The `run` event of a run that never began (its settings or its clients failed), so the alert on failed
    runs fires for the likeliest failure after a deployment too, not only the no-sweep alert hours later."""
    _ended(kind, new_run_id(), "unknown", None, 0.0, error)


def _ended(kind: str, run_id: str, mode: str, report: Report | None, seconds: float, error: Exception | None) -> None:
    """The `run` event: what the alerts and the workbook read of a run (the report's own names)."""
    emit(
        "run",
        kind=kind,
        runId=run_id,
        mode=mode,
        candidates=report and report.total("candidates"),
        changed=report and report.total("changed"),
        failed=report and report.total("failed"),
        unknown=report and report.total("unknown"),
        brakeEngaged=report and report.braked,
        complete=report and report.all_complete,
        durationSeconds=round(seconds, 3),
        journalError=report and report.journal_error,
        error=None if error is None else f"{type(error).__name__}: {first_line(error)}",
    )


def _settle(clients: Clients, run_id: str, *, needed: bool) -> list[str]:
    """Settle what crashed runs left; a journal that cannot be read stops a run that would write."""
    try:
        settlement = settle_runs(clients.journal(), clients.exchange, clients.graph, by=run_id)
    except ConfigurationError as exc:
        if exc.setting != "AzureWebJobsStorage":
            raise
        raise ConfigurationError(
            exc.setting,
            "a run that changes mailboxes records every write in the journal first, which lives in this storage "
            f"account; {str(exc).removeprefix(exc.setting + ': ')}",
        ) from exc
    except JournalUnavailableError as exc:
        if needed:
            raise
        log.warning("%s; the report goes on without it", exc)
        return [f"the journal could not be read ({exc}); earlier interrupted runs were not settled"]
    note = settlement.note()
    return [note] if note else []


def _close(session: Session) -> list[str]:
    try:
        session.close()
    except JournalUnavailableError as exc:
        log.error("%s; the next run settles this run's last outcomes by reading the mailboxes back", exc)
        return [f"the journal's last outcomes could not be written ({exc}); the next run settles them"]
    return []
