"""Azurite, the local Azure Storage emulator, installed by `make` into node_modules and run on loopback.

Data lives in a folder, so stopping and restarting Azurite keeps the queues; the test suite's own Azurites keep it
in memory instead (cheaper per call), and a test that restarts storage starts a folder-backed one of its own. One
Azurite can serve several storage accounts (the test suite gives each of its processes one of its own).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
# The emulator's published, well-known development key (not a secret).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Azurite:
    """A running Azurite: its ports, its data folder and its process."""

    location: Path
    blob_port: int
    queue_port: int
    process: subprocess.Popen[bytes] | None = None
    # Keep the data in memory (about a sixth less CPU per call); lost when Azurite stops, so not for restarts.
    in_memory: bool = False
    # The accounts it serves, each with the development key, instead of the development account.
    accounts: tuple[str, ...] = ()

    @property
    def connection_string(self) -> str:
        return self.account_connection_string(self.accounts[0] if self.accounts else DEV_ACCOUNT)

    def account_connection_string(self, account: str) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{account};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{account};"
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start Azurite on its ports; on ports chosen by the system (0) the first time, the same ones after."""
        self.spawn()
        self.wait_until_listening(timeout)

    def spawn(self) -> None:
        """Start Azurite's process without waiting for it to listen (`wait_until_listening`), so that several boot
        at once."""
        if not AZURITE.exists():
            raise RuntimeError(f"{AZURITE} is missing; run 'make setup' (it installs Azurite with npm)")
        self.location.mkdir(parents=True, exist_ok=True)
        log_path = self.location / "azurite.log"
        log = open(log_path, "ab")  # noqa: SIM115  # closed in stop(), with the process
        said_before = log.tell()
        self.process = subprocess.Popen(
            [
                str(AZURITE),
                "--silent",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                *(["--inMemoryPersistence"] if self.in_memory else ["--location", str(self.location)]),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.blob_port),
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                str(self.queue_port),
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                "0",
            ],
            cwd=self.location,  # where an in-memory Azurite would put any file it still writes
            env=_node_environment(self.accounts),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._log, self._said_before = log, said_before

    def wait_until_listening(self, timeout: float = 30.0) -> None:
        """Wait until the spawned Azurite says where its blob and queue services listen."""
        assert self.process is not None, "spawn() first"
        log_path = self.location / "azurite.log"
        deadline = time.monotonic() + timeout
        while (ports := _listening_on(log_path, self._said_before)) is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                said = log_path.read_bytes()[self._said_before :].decode("utf-8", "replace").strip()[-600:]
                raise RuntimeError(f"Azurite did not start; see {log_path}; it said: {said or 'nothing'}")
            time.sleep(0.05)
        self.blob_port, self.queue_port = ports

    def stop(self) -> None:
        """Stop Azurite by its process id (its process group: npm's shim starts node as a child)."""
        if self.process is None:
            return
        from sandbox.main import terminate

        terminate(self.process, group=True)
        self._log.close()
        self.process = None

    @classmethod
    def on_free_ports(cls, location: Path, *, in_memory: bool = False, accounts: tuple[str, ...] = ()) -> Azurite:
        """An Azurite that takes the ports the system gives it when it starts: a port probed free beforehand can
        be taken meanwhile (by another Azurite, or as the local end of any outgoing connection)."""
        return cls(location, 0, 0, in_memory=in_memory, accounts=accounts)


def _node_environment(accounts: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment, with a larger young generation for Node: Azurite allocates much per request, and V8's
    default (16 MB semi-spaces) collects it often; 32 MB took 9% less of Azurite's CPU per storage call (measured
    on the chain's calls, 2 cores). With `accounts`, Azurite's AZURITE_ACCOUNTS lists them."""
    options = os.environ.get("NODE_OPTIONS", "")
    if "--max-semi-space-size" not in options and "--max_semi_space_size" not in options:
        options = f"{options} --max-semi-space-size=32".strip()
    environment = {**os.environ, "NODE_OPTIONS": options}
    environment.pop("AZURITE_ACCOUNTS", None)  # the development account unless we name others
    if accounts:
        environment["AZURITE_ACCOUNTS"] = ";".join(f"{account}:{DEV_KEY}" for account in accounts)
    return environment


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _listening_on(log: Path, offset: int) -> tuple[int, int] | None:
    """(blob port, queue port) once Azurite's log, from `offset` on, says both services listen."""
    with log.open("rb") as said:
        said.seek(offset)
        text = said.read().decode("utf-8", "replace")
    ports = {
        service: int(port)
        for service, port in re.findall(
            r"Azurite (Blob|Queue) service is successfully listening at \S+:(\d+)\r?\n", text
        )
    }
    return (ports["Blob"], ports["Queue"]) if len(ports) == 2 else None
