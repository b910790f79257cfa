"""Storage for the test processes: with xdist, a storage account of each process's own on one of a few Azurites.

Starting an Azurite costs about 0.8 s of CPU; eleven processes each starting their own spent 9 s of the suite's
CPU on it, on two cores. So the main process starts SHARED_AZURITES before xdist starts its processes, and gives
each process an account of its own (AZURITE_ACCOUNTS): its queues and containers are apart from every other
process's, as they were on an Azurite of its own. Measured with eleven processes: 88 to 89 s before, 79 to 80 s
after (two or three runs each). Run without xdist, or recording durations (whose CPU seconds
count the storage work of each test), a process starts its own Azurite.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.azurite import Azurite

__all__ = ["SHARED_AZURITES", "StorageAccount", "azurite"]

# Azurite answers on one thread, and the suite's busiest stretch keeps about 0.7 of a core busy with storage
# calls: one Azurite would queue them, two each stay about a third busy. Measured (eleven processes, pytest alone):
# one 81.5 s, two 79.0 and 79.3 s, three 82.2 s.
SHARED_AZURITES = 2
_WORKERINPUT_KEY = "exoprov_storage_account"


@dataclass(frozen=True)
class StorageAccount:
    """An account on a running Azurite, as the app's AzureWebJobsStorage setting names it."""

    connection_string: str


@pytest.fixture(scope="session")
def azurite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageAccount]:
    """This process's storage account for the whole session, its data in memory: the one the main process gave
    it, or one on an Azurite of its own (a test that restarts storage starts its own, folder-backed one)."""
    given = getattr(request.config, "workerinput", {}).get(_WORKERINPUT_KEY)
    if given:  # None without xdist, when recording durations, or for a process xdist started again beyond the
        # accounts made at the start
        yield StorageAccount(given)
        return
    emulator = Azurite.on_free_ports(tmp_path_factory.mktemp("azurite"), in_memory=True)
    emulator.start()
    try:
        yield StorageAccount(emulator.connection_string)
    finally:
        emulator.stop()


def pytest_configure(config: pytest.Config) -> None:
    workers = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput") or not isinstance(workers, int) or workers < 1 or config.option.collectonly:
        return
    if config.getoption("record_durations", False):
        # Recording each test's CPU (tests/durations.py) counts the processes it works with, storage included:
        # only an Azurite of the process's own is one of them.
        return
    shared = _SharedAzurites(workers)
    config.add_cleanup(shared.stop)  # before the first spawn, so that a failed start stops what it started
    shared.spawn()
    config.pluginmanager.register(shared, "exoprov-shared-azurites")


class _SharedAzurites:
    """The main process's Azurites: spawned at configure, so that they boot together, and waited for when xdist
    configures its first process."""

    def __init__(self, workers: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="exoprov-azurites-"))
        # Twice the processes: xdist names a process it starts again after a crash gw<n> with a new n.
        accounts = [f"exoprovgw{n}" for n in range(2 * workers)]
        count = min(SHARED_AZURITES, workers)
        self.emulators = [
            Azurite.on_free_ports(self.root / str(i), in_memory=True, accounts=tuple(accounts[i::count]))
            for i in range(count)
        ]
        self.listening = False

    def spawn(self) -> None:
        for emulator in self.emulators:
            emulator.spawn()

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if not self.listening:
            for emulator in self.emulators:
                emulator.wait_until_listening()
            self.listening = True
        account = f"exoprov{node.gateway.id}"
        for emulator in self.emulators:
            if account in emulator.accounts:
                node.workerinput[_WORKERINPUT_KEY] = emulator.account_connection_string(account)

    def stop(self) -> None:
        for emulator in self.emulators:
            emulator.stop()
        shutil.rmtree(self.root, ignore_errors=True)
