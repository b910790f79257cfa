"""Fixtures: one sandbox tenant process per session, reset for every test, and settings pointing at it."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from hypothesis import settings as hypothesis_settings

from sandbox.control import SandboxControl
from sandbox.faults import Knobs
from sandbox.main import SandboxProcess
from shared.logs import CorrelationFilter
from shared.queues import CHAIN_QUEUES, POISON_QUEUES, RESULTS, UNREADABLE, Storage
from shared.settings import SETTINGS, Settings
from shared.wiring import Clients, reset_process_clients

if TYPE_CHECKING:
    from tests.storage_accounts import StorageAccount

ROOT = Path(__file__).resolve().parent.parent
# The suite's order (longest tests first, from tests/durations.json) and its storage accounts (one per process).
pytest_plugins = ["tests.durations", "tests.storage_accounts"]
# The same examples on every run (CI must not flake), and no per-example deadline on a shared 2-core machine.
hypothesis_settings.register_profile("exoprov", derandomize=True, deadline=None, max_examples=150)
hypothesis_settings.load_profile("exoprov")
# Every setting the app reads, and what the identity libraries read; tests start from none of them so the
# developer's shell cannot leak in.
APP_SETTINGS = [
    *(setting.name for setting in SETTINGS),
    "AZURE_CLIENT_SECRET",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
]


SandboxHandle = SandboxControl  # the name the tests use for it
REPLICATION_LAG = Knobs().replication_lag  # the sandbox's default: reads lag behind writes, as Entra's do


@pytest.fixture(scope="session")
def sandbox_process() -> Iterator[SandboxHandle]:
    """The sandbox on a free loopback port; stopped by its own pid, and by its lifetime if we die."""
    started = SandboxProcess.start(lifetime=3000)
    try:
        yield SandboxHandle(started.url, started.env, started.pid)
    finally:
        started.stop()


@pytest.fixture
def sandbox(sandbox_process: SandboxHandle, request: pytest.FixtureRequest) -> SandboxHandle:
    """The sandbox reset to the default seed with no latency, no faults and no replication lag.

    Entra's replication lag (the sandbox's default, REPLICATION_LAG) costs a chain seconds of waiting. The fault
    suite (marker `faults`) keeps it, so that its figures are those of faults and lag together; other tests of
    waiting for it turn it on (`replication_lag`); the rest would only wait.
    """
    sandbox_process.reset(replication_lag=REPLICATION_LAG if request.node.get_closest_marker("faults") else 0)
    return sandbox_process


@pytest.fixture
def replication_lag(sandbox: SandboxHandle) -> SandboxHandle:
    """The sandbox with its default replication lag: for the tests of waiting for Entra to show a write."""
    sandbox.knobs(replication_lag=REPLICATION_LAG)
    return sandbox


@pytest.fixture
def env(sandbox: SandboxHandle, azurite: StorageAccount, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings that point at the sandbox and an empty journal, with short waits; tests add their own on top."""
    for name in APP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    values = {
        **sandbox.env,
        "AzureWebJobsStorage": azurite.connection_string,
        "HTTP_BACKOFF_SECONDS": "0.05",
        "HTTP_READ_TIMEOUT_SECONDS": "5",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    empty_journal(Storage(Settings.from_env()))
    return values


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env()


@pytest.fixture
def clients(settings: Settings) -> Clients:
    return Clients.from_settings(settings)


CHAIN_SETTINGS = {
    "ALLOWED_LICENSES": "EXCHANGESTANDARD,EXCHANGEENTERPRISE",
    "DEFAULT_LICENSE": "EXCHANGESTANDARD",
    "DEFAULT_USAGE_LOCATION": "DE",
    "POLL_MIN_SECONDS": "0.5",
    "POLL_MAX_SECONDS": "1",
    "SYNC_WAIT_MINUTES": "0.1",
    "MAILBOX_WAIT_MINUTES": "0.2",
    "CONVERSION_WAIT_MINUTES": "0.2",
    "LICENSE_WAIT_MINUTES": "0.02",
    "QUEUE_RETRY_SECONDS": "0",
    "HTTP_MAX_ATTEMPTS": "2",
}


@pytest.fixture
def chain_env(env: dict[str, str], azurite: StorageAccount, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings for the chain (short waits) over empty queues and an empty ledger."""
    values = {**CHAIN_SETTINGS, "AzureWebJobsStorage": azurite.connection_string}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    empty_storage(Storage(Settings.from_env()))
    return {**env, **values}


def empty_storage(storage: Storage) -> None:
    """Empty the queues, the ledger and the journal; create them first where missing (a new Azurite, or a test
    that removed one): creating all thirteen before every test was a fifth of the fixture's storage calls."""
    try:
        _empty(storage)
    except ResourceNotFoundError:
        storage.ensure()
        _empty(storage)


def _empty(storage: Storage) -> None:
    for name in (*CHAIN_QUEUES, *POISON_QUEUES, RESULTS, UNREADABLE):
        storage.queue(name).clear_messages()
    if _holds_blobs(storage.ledger_container):
        storage.ledger_container.delete_container()
        storage.ledger_container.create_container()
    empty_journal(storage)


def empty_journal(storage: Storage) -> None:
    """Empty the journal's container, if there is one."""
    with contextlib.suppress(ResourceNotFoundError):
        if _holds_blobs(storage.journal_container):
            storage.journal_container.delete_container()
            with contextlib.suppress(ResourceExistsError):  # a journal write of a thread still ending made it again
                storage.journal_container.create_container()


def _holds_blobs(container: Any) -> bool:
    """Whether a container holds a blob, in one call. One that does is dropped and made again (two calls), not
    emptied blob by blob: Azurite drops a container at once (the service would take its time)."""
    return next(iter(container.list_blobs(results_per_page=1)), None) is not None


@pytest.fixture(autouse=True)
def _fresh_process_clients() -> Iterator[None]:
    """Every test builds the process's clients from its own environment."""
    reset_process_clients()
    yield
    reset_process_clients()


@pytest.fixture(autouse=True)
def _no_host_logging_left() -> Iterator[None]:
    """A test that runs a Functions adapter leaves no host log filter on pytest's own (session-long) handlers."""
    yield
    for handler in logging.getLogger().handlers:
        for stamp in [f for f in handler.filters if isinstance(f, CorrelationFilter)]:
            handler.removeFilter(stamp)


# Figures recorded by the fault suite, printed at the end of the run for the README's reliability table. The
# tests run in several processes (pytest-xdist), so each appends its row to a file the main process reads.
FIGURES_FILE = ROOT / ".run" / "fault-figures.jsonl"


def record_figures(figures: dict[str, Any]) -> None:
    FIGURES_FILE.parent.mkdir(exist_ok=True)
    with FIGURES_FILE.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(figures) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the main process: a fresh table for this run
        FIGURES_FILE.unlink(missing_ok=True)


def pytest_collection_finish(session: pytest.Session) -> None:
    # What import and collection made (modules, test items, hypothesis and playwright) lives as long as the
    # process: leave it out of every garbage collection from here on, the final five of pytest's included (4.2 s
    # of the suite's CPU went to collecting garbage, 2.9 s after). Collected first, so that no cycle dead by now
    # is frozen with its warnings unsaid.
    gc.collect()
    gc.freeze()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES_FILE.exists():
        return
    figures = [json.loads(line) for line in FIGURES_FILE.read_text(encoding="utf-8").splitlines() if line]
    figures.sort(key=lambda f: ORDER.index(f["scenario"]) if f["scenario"] in ORDER else len(ORDER))
    lines = [
        "| scenario | faults injected | requests | exactly one result | lost | tenant hazards "
        "| Retry-After violations |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {f['scenario']} | {f['faults']} | {f['requests']} | {f['exactlyOne']} | {f['lost']} | {f['hazards']} "
        f"| {f['retryAfterViolations']} |"
        for f in figures
    ]
    terminalreporter.write_sep("-", "fault suite figures")
    for line in lines:
        terminalreporter.write_line(line)
    (ROOT / ".run" / "fault-figures.md").write_text("\n".join(lines) + "\n")


ORDER = [
    "storm-ra",
    "storm-no-ra",
    "503-burst",
    "hangs",
    "drops",
    "token-outage",
    "azurite-restart",
    "worker-sigkill",
    "kill-loop",
    "sweep-sigkill",
]
