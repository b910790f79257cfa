"""What every adapter does first on the host: logging set up for this invocation, the core's threads included."""

from __future__ import annotations

import azure.functions as func


def enter(context: func.Context) -> None:
    """Host logging (shared.logs.configure_host), with the core's own threads tied to this invocation: the host
    drops a record whose thread names no running invocation (Learn, Python guide: "Logging from created threads")."""
    # Imported here so that indexing the app (cold start) does not pay for the core.
    from shared.logs import configure_host

    def bind() -> None:
        # setattr: azure-functions types thread_local_storage as the threading.local class, not an instance.
        setattr(context.thread_local_storage, "invocation_id", context.invocation_id)  # noqa: B010

    configure_host(bind)
