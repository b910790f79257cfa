"""The correlation id of the unit of work in hand, and the log format the runtimes share."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import uuid
from collections.abc import Iterator

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


def configure(verbose: bool = False) -> None:
    """Log to stderr with timestamps; the CLI and the worker call this once, the Functions host has its own."""
    root = logging.getLogger("exoprov")
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.propagate = False
