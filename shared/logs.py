"""The correlation id of the unit of work in hand, and the log format the runtimes share."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import Any, TextIO

_audit = logging.getLogger("exoprov.audit")
_correlation: contextvars.ContextVar[str] = contextvars.ContextVar("exoprov_correlation", default="-")


def correlation_id() -> str:
    """The id of the sweep run or provisioning request this thread is working on."""
    return _correlation.get()


@contextlib.contextmanager
def correlation_scope(value: str | None = None) -> Iterator[str]:
    """Bind a correlation id for the duration of a unit of work (a new one when none is given)."""
    value = value or uuid.uuid4().hex[:12]
    token = _correlation.set(value)
    try:
        yield value
    finally:
        _correlation.reset(token)


def audit(
    action: str, target: str, before: Any, after: Any, *, request_id: str | None = None, noop: bool = False
) -> None:
    """One structured event per write: what changed on whom, before and after, for which request or run.

    The event rides on the log record as `record.audit`, so log pipelines (and tests) read it as data.
    """
    event = {
        "action": action,
        "target": target,
        "before": before,
        "after": after,
        "noop": noop,
        "requestId": request_id,
        "correlationId": correlation_id(),
    }
    _audit.info(
        "write %s on %s (request %s, corr %s): %s -> %s%s",
        action,
        target,
        request_id or "-",
        event["correlationId"],
        before,
        after,
        " (no change)" if noop else "",
        extra={"audit": event},
    )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time, not the one it was created with."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure(verbose: bool = False) -> None:
    """Log to stderr with timestamps; the CLI and the worker call this, the Functions host has its own."""
    logger = logging.getLogger("exoprov")
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    # The Azure SDKs log every retry of theirs; exoprov says once, in one line, what failed and what it does.
    logging.getLogger("azure").setLevel(logging.INFO if verbose else logging.ERROR)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        logger.addHandler(handler)
