"""Queue triggers of the provisioning chain: one per step, and one per poison queue.

Each adapter hands the message to the core and returns; raising lets host.json's retry rule apply.
"""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves its constructor untyped
CONNECTION = "AzureWebJobsStorage"


def _step(queue: str, msg: func.QueueMessage, context: func.Context) -> None:
    # Imported here so that indexing the app (cold start) does not pay for the core.
    from functions.invocation import enter
    from shared.runtime import handle_queue_message

    enter(context)
    handle_queue_message(queue, msg.get_body(), msg.id or "")


def _poison(queue: str, msg: func.QueueMessage, context: func.Context) -> None:
    from functions.invocation import enter
    from shared.runtime import handle_poison_message

    enter(context)
    handle_poison_message(queue, msg.get_body())


@bp.queue_trigger(arg_name="msg", queue_name="provision-requests", connection=CONNECTION)
def accept_request(msg: func.QueueMessage, context: func.Context) -> None:
    """An HR request: validate it and start the chain (or answer at once when it is invalid)."""
    _step("provision-requests", msg, context)


@bp.queue_trigger(arg_name="msg", queue_name="provision-license", connection=CONNECTION)
def license_user(msg: func.QueueMessage, context: func.Context) -> None:
    """Wait for the synced user, then license it."""
    _step("provision-license", msg, context)


@bp.queue_trigger(arg_name="msg", queue_name="provision-mailbox", connection=CONNECTION)
def wait_for_mailbox(msg: func.QueueMessage, context: func.Context) -> None:
    """Wait for Exchange Online to create the mailbox."""
    _step("provision-mailbox", msg, context)


@bp.queue_trigger(arg_name="msg", queue_name="provision-configure", connection=CONNECTION)
def configure_mailbox(msg: func.QueueMessage, context: func.Context) -> None:
    """Cloud-manage, convert, verify, then remove the temporary license."""
    _step("provision-configure", msg, context)


@bp.queue_trigger(arg_name="msg", queue_name="provision-requests-poison", connection=CONNECTION)
def request_gave_up(msg: func.QueueMessage, context: func.Context) -> None:
    _poison("provision-requests-poison", msg, context)


@bp.queue_trigger(arg_name="msg", queue_name="provision-license-poison", connection=CONNECTION)
def license_gave_up(msg: func.QueueMessage, context: func.Context) -> None:
    _poison("provision-license-poison", msg, context)


@bp.queue_trigger(arg_name="msg", queue_name="provision-mailbox-poison", connection=CONNECTION)
def mailbox_gave_up(msg: func.QueueMessage, context: func.Context) -> None:
    _poison("provision-mailbox-poison", msg, context)


@bp.queue_trigger(arg_name="msg", queue_name="provision-configure-poison", connection=CONNECTION)
def configure_gave_up(msg: func.QueueMessage, context: func.Context) -> None:
    _poison("provision-configure-poison", msg, context)
