"""Store a readiness report as blobs: one JSON and one HTML per day, and the newest pair as `latest`."""

from __future__ import annotations

import json
import logging

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.errors import StorageUnavailableError
from shared.queues import REPORTS_CONTAINER, Storage
from shared.readiness.html import render_html
from shared.readiness.model import ReadinessReport

__all__ = ["publish"]

log = logging.getLogger("exoprov.readiness")
BLOB_PREFIX = "readiness/"


def publish(report: ReadinessReport, storage: Storage) -> list[str]:
    """Write readiness/{day}.json and .html and readiness/latest.*; returns the blob names written."""
    from azure.storage.blob import ContentSettings

    document = report.to_json()
    day = report.generated_at.strftime("%Y-%m-%d")
    bodies = {
        "json": (json.dumps(document, indent=2).encode(), "application/json"),
        "html": (render_html(document).encode(), "text/html; charset=utf-8"),
    }
    written: list[str] = []
    try:
        for stem in (day, "latest"):
            for extension, (body, content_type) in bodies.items():
                name = f"{BLOB_PREFIX}{stem}.{extension}"
                settings = ContentSettings(content_type=content_type)
                try:
                    storage.reports_container.upload_blob(name, body, overwrite=True, content_settings=settings)
                except ResourceNotFoundError:
                    # The deployment creates the container; a storage account set up by hand may lack it.
                    storage.reports_container.create_container()
                    storage.reports_container.upload_blob(name, body, overwrite=True, content_settings=settings)
                written.append(name)
    except AzureError as exc:
        raise StorageUnavailableError(
            f"the readiness report could not be written to the {REPORTS_CONTAINER} container: {exc}"
        ) from exc
    log.info("readiness report written to %s/%s", REPORTS_CONTAINER, ", ".join(written))
    return written
