"""Builds the clients once per process from the settings: one credential, one pool per service."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from shared.auth import TokenProvider, build_credential
from shared.errors import AuthenticationError
from shared.exchange import ExchangeClient
from shared.http import Policy, ServiceClient
from shared.settings import Settings


def policy_for(settings: Settings) -> Policy:
    """The HTTP policy the settings describe, with a pool large enough for the sweep's concurrency."""
    return Policy(
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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
                http = ServiceClient(
                    "exchange",
                    self.settings.exchange_endpoint,
                    self.settings.exchange_resource,
                    "EXCHANGE_ENDPOINT",
                    self.tokens,
                    policy_for(self.settings),
                )
                self._exchange = ExchangeClient(http, self.tenant_id())
            return self._exchange


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
