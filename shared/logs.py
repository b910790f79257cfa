"""The correlation id of the unit of work in hand, and the log format the runtimes share."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import TextIO

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
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        logger.addHandler(handler)
