"""Helpers for the tests: submit requests, run the worker until idle, collect results, run `exoprov`."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sandbox.azurite import free_port
from shared.queues import REQUESTS, RESULTS
from shared.settings import Settings
from shared.wiring import Clients
from shared.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


def exoprov(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`exoprov ARGS` in a child process with this environment (plus `env`), its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def request(request_id: str, upn: str, **fields: Any) -> dict[str, Any]:
    return {"requestId": request_id, "userPrincipalName": upn, **fields}


def submit(clients: Clients, *messages: dict[str, Any] | str, base64_encoded: bool = False) -> None:
    storage = clients.storage()
    for message in messages:
        text = message if isinstance(message, str) else json.dumps(message)
        if base64_encoded:
            text = base64.b64encode(text.encode()).decode()
        storage.send(REQUESTS, text)


def run_worker(clients: Clients, timeout: float = 90, **options: Any) -> int:
    """The worker, in this process, until every queue of the chain is empty."""
    return in_process_worker(clients, **options).run(until_idle=True, timeout=timeout)


def in_process_worker(clients: Clients, **options: Any) -> Worker:
    """A worker as `exoprov worker` makes it (lease from the settings), in this process."""
    settings = clients.settings
    chosen: dict[str, Any] = {
        "concurrency": 6,
        "retry_seconds": settings.queue_retry_seconds,
        "lease_seconds": settings.worker_lease_seconds,
    }
    return Worker(clients.storage(), clients.dispatcher(), **{**chosen, **options})


def collect_results(clients: Clients) -> dict[str, list[dict[str, Any]]]:
    """Every result on the results queue, grouped by requestId (taken off the queue)."""
    queue = clients.storage().queue(RESULTS)
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    while True:
        messages = list(queue.receive_messages(max_messages=32))
        if not messages:
            return dict(results)
        for message in messages:
            result = json.loads(message.content)
            results[result["requestId"]].append(result)
            queue.delete_message(message)


def fresh_clients() -> Clients:
    return Clients.from_settings(Settings.from_env())


def unreachable_storage() -> tuple[str, int]:
    """A storage connection string for a loopback port where nothing listens, and that port."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/devstoreaccount1"
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"QueueEndpoint={endpoint};BlobEndpoint={endpoint}"
    )
    return connection, port


@contextlib.contextmanager
def fast_again_after_the_license_step(clients, sandbox) -> Iterator[None]:
    """Tenant calls back to no latency once the (slow) license step has sent the mailbox step: only it is slow."""
    done = threading.Event()

    def watch() -> None:
        storage = clients.storage()
        while not done.wait(0.25):
            if storage.pending(("provision-mailbox", "provision-configure", "provision-results")):
                sandbox.knobs(latency=0.0)
                return

    watcher = threading.Thread(target=watch, name="latency-off", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
