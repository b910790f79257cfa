"""Chain throughput: N requests through `exoprov worker` over Azurite and the sandbox, no artificial waits."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.common import Tenant, base_env, run_child
from sandbox.azurite import Azurite
from shared.queues import REQUESTS, Storage
from shared.settings import Settings

SKU = {
    "skuId": "4b9405b0-7788-4568-add1-99614e613b69",
    "skuPartNumber": "EXCHANGESTANDARD",
    "prepaidUnits": {"enabled": 100000},
    "consumedUnits": 0,
    "servicePlans": [
        {
            "servicePlanId": "9aaf7827-d63c-4b61-89c3-182f06f82e5c",
            "servicePlanName": "EXCHANGE_S_STANDARD",
            "appliesTo": "User",
        },
        {
            "servicePlanId": "5bfe124c-bbdc-4494-8835-f1297d457d79",
            "servicePlanName": "RMS_S_BASIC",
            "appliesTo": "User",
        },
    ],
}
TYPES = ["User", "Shared", "Shared", "Room", "Equipment"]  # 20% user, 40% shared, 20% room, 20% equipment


@dataclass
class ChainResult:
    requests: int
    seconds: float
    per_request: dict[str, float]
    tokens: dict[str, int]
    peak_rss_mb: float
    succeeded: int
    retry_after_violations: int


def run_chain(tenant: Tenant, azurite: Azurite, count: int, types: list[str]) -> ChainResult:
    """Provision `count` new users (mailbox types cycling through `types`) and measure the worker."""
    users = [{"upn": f"hire{i:05d}@contoso.com", "usageLocation": "DE"} for i in range(count)]
    tenant.reset({"skus": [SKU], "users": users}, replication_lag=0)  # the product's own cost, no waits
    env = base_env(
        tenant.sandbox,
        AzureWebJobsStorage=azurite.connection_string,
        ALLOWED_LICENSES="EXCHANGESTANDARD",
        DEFAULT_LICENSE="EXCHANGESTANDARD",
        POLL_MIN_SECONDS="0",
        POLL_MAX_SECONDS="0",
        WORKER_CONCURRENCY="8",
    )
    storage = Storage(Settings.from_env(env))
    storage.ensure()
    for name in ("provision-results",):
        storage.queue(name).clear_messages()
    run = uuid.uuid4().hex[:8]  # the ledger remembers requestIds: every run needs its own
    for i, user in enumerate(users):
        request = {
            "requestId": f"bench-{run}-{i}",
            "userPrincipalName": user["upn"],
            "mailboxType": types[i % len(types)],
        }
        storage.send(REQUESTS, json.dumps(request))
    child = run_child(["-m", "shared.cli", "worker", "--until-idle", "--timeout", "900", "--no-sweep"], env)
    if child.returncode != 0:
        raise RuntimeError(f"worker exit {child.returncode}: {child.stderr[-1500:]}")
    stats = tenant.stats()
    results = _drain(storage)
    succeeded = sum(1 for r in results if r["status"] == "succeeded")
    calls = Counter({k: v for k, v in stats["requests"].items()})
    return ChainResult(
        count,
        child.wall_seconds,
        {k: v / count for k, v in sorted(calls.items())},
        dict(stats["tokens"]),
        child.peak_rss_mb,
        succeeded,
        len(stats["retryAfterViolations"]),
    )


def _drain(storage: Storage) -> list[dict[str, Any]]:
    queue = storage.queue("provision-results")
    results: list[dict[str, Any]] = []
    while True:
        messages = list(queue.receive_messages(max_messages=32))
        if not messages:
            return results
        for message in messages:
            results.append(json.loads(message.content))
            queue.delete_message(message)


def calls_table(result: ChainResult) -> str:
    lines = ["| call | per request |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in result.per_request.items()]
    lines.append(f"| **total** | **{sum(result.per_request.values()):.2f}** |")
    return "\n".join(lines)
