"""Tie the core's own threads to the invocation, so that the Functions host keeps what they log."""

from __future__ import annotations

from collections.abc import Callable

import azure.functions as func


def thread_binder(context: func.Context) -> Callable[[], None]:
    """A callable that marks the calling thread as this invocation's (Learn, Python developer guide: "Logging
    from created threads"); the host drops a record whose thread names no running invocation."""

    def bind() -> None:
        # setattr: azure-functions types thread_local_storage as the threading.local class, not an instance.
        setattr(context.thread_local_storage, "invocation_id", context.invocation_id)  # noqa: B010

    return bind
