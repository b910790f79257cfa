"""Builds the clients once per process from the settings: one credential, one pool per service."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.auth import TokenProvider, build_credential
from shared.directory import GraphDirectory
from shared.errors import AuthenticationError
from shared.exchange import ExchangeClient
from shared.graph import GraphClient
from shared.http import Policy, ServiceClient
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.dispatch import Dispatcher
    from shared.journal import Journal
    from shared.queues import Storage

__all__ = ["Clients", "process_clients", "reset_process_clients"]


def policy_for(settings: Settings, max_in_flight: int = 0) -> Policy:
    """The HTTP policy the settings describe, with a pool large enough for the sweep's concurrency."""
    return Policy(
        max_in_flight=max_in_flight,
        connect_timeout=settings.http_connect_timeout_seconds,
        read_timeout=settings.http_read_timeout_seconds,
        max_attempts=settings.http_max_attempts,
        max_retry_after=settings.http_max_retry_after_seconds,
        backoff_base=settings.http_backoff_seconds,
        pool_size=max(8, settings.enforce_concurrency + 2),
    )


@dataclass
class Clients:
    """Everything that talks to the outside world, built lazily and shared by every thread."""

    settings: Settings
    tokens: TokenProvider
    _exchange: ExchangeClient | None = field(default=None, repr=False)
    _graph: GraphClient | None = field(default=None, repr=False)
    _storage: Storage | None = field(default=None, repr=False)
    _dispatcher: Dispatcher | None = field(default=None, repr=False)
    _journal: Journal | None = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Clients:
        return cls(settings, TokenProvider(build_credential(settings)))

    def tenant_id(self) -> str:
        """AZURE_TENANT_ID, or the `tid` claim of the Exchange token."""
        if self.settings.tenant_id:
            return self.settings.tenant_id
        tenant = self.tokens.get(self.settings.exchange_resource).tenant_id
        if not tenant:
            raise AuthenticationError("the Exchange token has no tid claim; set AZURE_TENANT_ID")
        return tenant

    def exchange(self) -> ExchangeClient:
        with self._lock:
            if self._exchange is None:
                # The tenant's Exchange concurrency budget is shared by the sweep and the chain of this process.
                http = self._service(
                    "exchange",
                    self.settings.exchange_endpoint,
                    self.settings.exchange_resource,
                    "EXCHANGE_ENDPOINT",
                    self.settings.enforce_concurrency,
                )
                self._exchange = ExchangeClient(http, self.tenant_id())
            return self._exchange

    def graph(self) -> GraphClient:
        with self._lock:
            if self._graph is None:
                self._graph = GraphClient(
                    self._service("graph", self.settings.graph_endpoint, self.settings.graph_resource, "GRAPH_ENDPOINT")
                )
            return self._graph

    def directory(self, version: str = "v1.0") -> GraphDirectory:
        """Graph listings and $batch reads, over the same connection pool as graph()."""
        return GraphDirectory(self.graph().http, version)

    def _service(self, name: str, endpoint: str, resource: str, setting: str, max_in_flight: int = 0) -> ServiceClient:
        return ServiceClient(name, endpoint, resource, setting, self.tokens, policy_for(self.settings, max_in_flight))

    def storage(self) -> Storage:
        """The storage account of AzureWebJobsStorage (queues and the result ledger)."""
        from shared.queues import Storage

        with self._lock:
            if self._storage is None:
                self._storage = Storage(self.settings)
            return self._storage

    def journal(self) -> Journal:
        """The change journal, in the same storage account as the queues."""
        from shared.journal import Journal
        from shared.queues import storage_endpoint

        with self._lock:
            if self._journal is None:
                self._journal = Journal(self.storage().journal_container, storage_endpoint(self.settings))
            return self._journal

    def dispatcher(self) -> Dispatcher:
        """The chain bound to this process's clients, with the ledger beside the queues."""
        from shared.dispatch import Dispatcher
        from shared.ledger import Ledger
        from shared.provisioning import Chain

        with self._lock:
            if self._dispatcher is None:
                storage = self.storage()
                chain = Chain(self.settings, self.graph(), self.exchange, self.journal())
                self._dispatcher = Dispatcher(chain, storage, Ledger(storage.ledger_container))
            return self._dispatcher


_process: Clients | None = None
_process_lock = threading.Lock()


def process_clients() -> Clients:
    """The clients of this process, built from the environment on first use (one credential per process)."""
    global _process
    with _process_lock:
        if _process is None:
            _process = Clients.from_settings(Settings.from_env())
        return _process


def reset_process_clients() -> None:
    """Forget the process's clients, so the next use reads the environment again (tests, reloads)."""
    global _process
    with _process_lock:
        _process = None
