"""When a run's writers stop: Ctrl-C, the time budget, or a refusal that ends the run; and how they say so."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["BUDGET_NOTE", "INTERRUPTED_NOTE", "Cancelled", "Progress", "StopSignal"]

BUDGET_NOTE = "the time budget (ENFORCE_TIME_BUDGET_SECONDS) ran out; the next run carries on"
INTERRUPTED_NOTE = "interrupted: the writes in flight were finished, the rest was not attempted"

Progress = Callable[[int, int], None]  # (done, total), called as each object's outcome is known


class Cancelled(Exception):
    """The person running the sweep (or undo) asked it to stop."""


class _Section(Protocol):
    complete: bool
    interrupted: bool
    notes: list[str]


class StopSignal:
    """Whether a run's writers stop submitting, and the first reason, shared by the threads of one writer."""

    def __init__(self, cancel: threading.Event, deadline: float) -> None:
        self.cancel = cancel
        self.deadline = deadline
        self.reason = ""
        self.interrupted = False
        self._lock = threading.Lock()

    def check(self) -> bool:
        """True once the run should stop; a Ctrl-C or the deadline become the reason if none came first."""
        with self._lock:
            if not self.reason and self.cancel.is_set():
                self.interrupted = True
                self.reason = INTERRUPTED_NOTE
            if not self.reason and time.monotonic() >= self.deadline:
                self.reason = BUDGET_NOTE
            return bool(self.reason)

    def set(self, reason: str) -> None:
        with self._lock:
            self.reason = self.reason or reason

    def settle(self, report: _Section) -> None:
        """Tell the report how the writer ended: incomplete, and why, when it stopped early."""
        if self.reason:
            report.complete = False
            report.interrupted = report.interrupted or self.interrupted
            report.notes.append(self.reason)
