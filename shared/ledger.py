"""One result per request, whatever the queues redeliver: a small ledger of blobs keyed by requestId.

`requests/{id}` is claimed once, by the chain that accepted the request (its first message id), so a
duplicate request is not run twice. `results/{id}` is written before the result is sent and marked
sent after, so a redelivered or duplicated chain never reports twice.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("exoprov.ledger")


class Ledger:
    """Claims and result markers in the ledger container."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def claim(self, request_id: str, chain_id: str) -> bool:
        """True when this chain owns the request (first claim, or a redelivery of the same message)."""
        from azure.core.exceptions import ResourceExistsError

        blob = self._container.get_blob_client(f"requests/{request_id}")
        try:
            blob.upload_blob(chain_id.encode(), overwrite=False)
            return True
        except ResourceExistsError:
            owner = blob.download_blob().readall().decode()
            return bool(owner == chain_id)

    def should_send(self, request_id: str, result_json: str) -> bool:
        """True unless a result for the request has already been sent."""
        from azure.core.exceptions import ResourceExistsError

        blob = self._container.get_blob_client(f"results/{request_id}")
        try:
            blob.upload_blob(result_json.encode(), overwrite=False, metadata={"state": "pending"})
            return True
        except ResourceExistsError:
            # "pending": an earlier attempt died between writing the marker and sending; send again.
            state = blob.get_blob_properties().metadata.get("state")
            return bool(state != "sent")

    def mark_sent(self, request_id: str) -> None:
        self._container.get_blob_client(f"results/{request_id}").set_blob_metadata({"state": "sent"})
