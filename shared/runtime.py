"""Entry points the runtimes (Functions, worker) call: process-wide clients, one call each."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.errors import ExoprovError
from shared.events import emit
from shared.wiring import process_clients

if TYPE_CHECKING:
    from shared.enforcement import Report

__all__ = ["handle_poison_message", "handle_queue_message", "run_scheduled_readiness", "run_scheduled_sweep"]

log = logging.getLogger("exoprov.runtime")


def run_scheduled_sweep() -> Report:
    """One sweep in ENFORCE_MODE with the process's clients; the report is logged as one line (and as the
    `run` event the alerts read, by `run_sweep`)."""
    # Imported here: a process that only runs the chain (a queue trigger's cold start, `exoprov worker --no-sweep`)
    # never loads the sweep (about 60 ms).
    from shared.runs import could_not_start, run_sweep

    try:
        clients = process_clients()
    except ExoprovError as exc:
        could_not_start("sweep", exc)
        raise
    report = run_sweep(clients, apply=clients.settings.enforce_mode == "apply")
    log.warning(
        "sweep %s (%s): %d candidates, %d changed, %d failed, brake %s, complete %s",
        report.run_id,
        report.mode,
        report.total("candidates"),
        report.total("changed"),
        report.total("failed"),
        report.braked,
        report.all_complete,
    )
    return report


def run_scheduled_readiness() -> list[str]:
    """One readiness report with the process's clients, stored in the reports container; returns the blob names."""
    from shared.readiness import build_report
    from shared.readiness.publish import publish

    clients = process_clients()
    report = build_report(clients)
    written = publish(report, clients.storage())
    log.warning(
        "readiness: %s, %s (%s)",
        "ready" if report.ready else "not ready",
        ", ".join(f"{count} {status}" for status, count in report.summary.items()),
        ", ".join(written),
    )
    summary = report.summary
    emit(
        "readiness",
        ready=report.ready,
        checksFailed=summary["fail"],
        checksWarned=summary["warn"],
        checksManual=summary["manual"],
        checksPassed=summary["pass"],
    )
    return written


def handle_queue_message(queue: str, body: bytes | str, message_id: str) -> None:
    """One message of a chain queue as the trigger got it (the dispatcher decodes it); raising asks for a retry."""
    process_clients().dispatcher().handle(queue, body, message_id)


def handle_poison_message(queue: str, body: bytes | str) -> None:
    """One message the chain gave up on: it becomes a failed result (or is kept, if unreadable)."""
    process_clients().dispatcher().handle_poison(queue, body)
