"""The chain's queues and the storage account behind them (AzureWebJobsStorage, key or identity).

Messages travel as plain UTF-8 JSON: host.json sets `messageEncoding: none`, so the Functions trigger
and the worker read exactly what the SDK sends, and HR systems may send plain or base64 text (the
request parser accepts both). Delays use the storage service's visibility timeout, never a sleep.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.errors import ConfigurationError, StorageUnavailableError, first_line
from shared.settings import Settings

__all__ = [
    "CHAIN_QUEUES",
    "JOURNAL_CONTAINER",
    "REPORTS_CONTAINER",
    "LEDGER_CONTAINER",
    "MAX_DEQUEUE_COUNT",
    "POISON_QUEUES",
    "POISON_SUFFIX",
    "REQUESTS",
    "RESULTS",
    "STEP_QUEUES",
    "UNREADABLE",
    "Storage",
    "environment_settings",
    "storage_endpoint",
    "storage_failure",
]

log = logging.getLogger("exoprov.queues")

REQUESTS = "provision-requests"
RESULTS = "provision-results"
STEP_QUEUES = {"license": "provision-license", "mailbox": "provision-mailbox", "configure": "provision-configure"}
CHAIN_QUEUES = (REQUESTS, *STEP_QUEUES.values())
POISON_SUFFIX = "-poison"  # what the Functions host appends
POISON_QUEUES = tuple(q + POISON_SUFFIX for q in CHAIN_QUEUES)
UNREADABLE = "provision-unreadable"  # kept for a person: no requestId, so no one to tell
LEDGER_CONTAINER = "exoprov-ledger"
JOURNAL_CONTAINER = "exoprov-journal"
REPORTS_CONTAINER = "exoprov-reports"
# The same retry rule as host.json (extensions.queues), so both runtimes give up at the same point.
MAX_DEQUEUE_COUNT = 5
MAX_DELAY_SECONDS = 7 * 24 * 3600 - 60  # the service's visibility-timeout limit, with a margin
STORAGE_CONNECT_TIMEOUT_SECONDS = 5


@dataclass
class Storage:
    """Queue and blob clients for one storage account, created once and shared by every thread."""

    settings: Settings
    _queues: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Told (queue, seconds until visible) after each send: the worker polls a queue it just fed when the message
    # shows, instead of when its idle backoff next comes round.
    _on_send: list[Callable[[str, float], None]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        from azure.storage.blob import BlobServiceClient
        from azure.storage.blob import ExponentialRetry as BlobRetry
        from azure.storage.queue import ExponentialRetry, QueueServiceClient

        settings = self.settings
        # The SDK's default retries take about 80 s to give up on an unreachable account; a person at a
        # prompt, and the worker's --timeout, need an answer in seconds. The queues retry work anyway.
        transport: dict[str, Any] = {
            "connection_timeout": STORAGE_CONNECT_TIMEOUT_SECONDS,
            "read_timeout": 60,
            **environment_settings(),
        }
        queues = {"retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=2), **transport}
        blobs = {"retry_policy": BlobRetry(initial_backoff=1, increment_base=2, retry_total=2), **transport}
        if settings.storage:
            self._service = QueueServiceClient.from_connection_string(settings.storage, **queues)
            self._blobs = BlobServiceClient.from_connection_string(settings.storage, **blobs)
        elif settings.storage_queue_service_uri and settings.storage_blob_service_uri:
            credential = _identity(settings)
            self._service = QueueServiceClient(settings.storage_queue_service_uri, credential=credential, **queues)
            self._blobs = BlobServiceClient(settings.storage_blob_service_uri, credential=credential, **blobs)
        else:
            raise ConfigurationError(
                "AzureWebJobsStorage",
                "set a connection string (UseDevelopmentStorage=true locally), or AzureWebJobsStorage__queueServiceUri "
                "and AzureWebJobsStorage__blobServiceUri with __credential=managedidentity and __clientId",
            )
        self.ledger_container = self._blobs.get_container_client(LEDGER_CONTAINER)
        self.journal_container = self._blobs.get_container_client(JOURNAL_CONTAINER)
        self.reports_container = self._blobs.get_container_client(REPORTS_CONTAINER)

    def queue(self, name: str) -> Any:
        with self._lock:
            if name not in self._queues:
                self._queues[name] = self._service.get_queue_client(name)
            return self._queues[name]

    def ensure(self) -> None:
        """Create every queue and the ledger, journal and reports containers if missing (idempotent)."""
        from azure.core.exceptions import ResourceExistsError

        for name in (*CHAIN_QUEUES, *POISON_QUEUES, RESULTS, UNREADABLE):
            with contextlib.suppress(ResourceExistsError):
                self.queue(name).create_queue()
        for container in (self.ledger_container, self.journal_container, self.reports_container):
            with contextlib.suppress(ResourceExistsError):
                container.create_container()

    def send(self, name: str, text: str, delay: float = 0.0) -> None:
        """Put a message on a queue, invisible for `delay` seconds (rounded up to whole seconds)."""
        seconds = min(MAX_DELAY_SECONDS, max(0, math.ceil(delay)))
        self.queue(name).send_message(text, visibility_timeout=seconds or None, time_to_live=-1)
        log.info("queue %s: sent %d bytes, visible in %d s", name, len(text), seconds)
        for listener in list(self._on_send):
            listener(name, seconds)

    def on_send(self, listener: Callable[[str, float], None]) -> Callable[[], None]:
        """Call `listener(queue, seconds until visible)` after every send; returns the call that stops it."""
        self._on_send.append(listener)
        return lambda: self._on_send.remove(listener)

    def pending(self, names: tuple[str, ...]) -> int:
        """Messages in the queues, invisible (delayed or in hand) ones included."""
        return sum(int(self.queue(n).get_queue_properties().approximate_message_count) for n in names)


def environment_settings() -> dict[str, Any]:
    """The storage clients' proxy and CA settings: what requests would find in the system, looked up once, when
    the clients are made (so a proxy set later in the process is not seen).

    Left to requests, the lookup runs again on every call: an eighth of the storage client's CPU (1.55 ms of it
    per call against Azurite, 1.37 ms without). Without a proxy, the CA bundle requests would read
    (REQUESTS_CA_BUNDLE, then CURL_CA_BUNDLE) is handed over once instead.
    """
    from urllib.request import getproxies

    proxies = getproxies()  # environment, Windows registry or macOS settings
    proxies.pop("no", None)  # NO_PROXY alone names no proxy
    if proxies:  # requests then reads them per call, NO_PROXY included
        return {"use_env_settings": True}
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return {"use_env_settings": False, **({"connection_verify": bundle} if bundle else {})}


def storage_endpoint(settings: Settings) -> str:
    """Where the queues live, for an error message (never with a key or a SAS)."""
    if settings.storage_queue_service_uri:
        return settings.storage_queue_service_uri
    parts = dict(p.partition("=")[::2] for p in (settings.storage or "").split(";") if "=" in p)
    parts = {k.strip().lower(): v.strip() for k, v in parts.items()}
    if "queueendpoint" in parts:
        return parts["queueendpoint"]
    if parts.get("accountname"):
        return f"https://{parts['accountname']}.queue.core.windows.net"
    return "the local storage emulator (UseDevelopmentStorage=true: 127.0.0.1:10001)"


def storage_failure(exc: BaseException, settings: Settings) -> StorageUnavailableError:
    """An Azure Storage SDK error as one sentence that names the endpoint."""
    return StorageUnavailableError(
        f"storage at {storage_endpoint(settings)} did not answer ({first_line(exc)}); check AzureWebJobsStorage "
        "and that the account (or Azurite) is reachable"
    )


def _identity(settings: Settings) -> Any:
    if (settings.storage_credential or "").lower() == "managedidentity":
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=settings.storage_client_id)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=settings.client_id)
