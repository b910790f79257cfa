"""The readiness report on a generated tenant: wall time, requests by service, peak memory, and zero writes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.common import Tenant, base_env, run_child
from sandbox.server import load_seed
from sandbox.tokens import DEFAULT_ROLES, GRAPH_RESOURCE
from shared.auth import GRAPH_APP_ROLES

LATENCY = 0.020
EXCHANGE_PAGE = 1000
GRAPH_PAGE = 999
GRAPH_BATCH = 20
EXCHANGE_BATCH = 10


@dataclass
class ReadinessRow:
    mailboxes: int
    groups: int
    contacts: int
    seconds: float
    requests: dict[str, int]
    expected: dict[str, int]
    writes: int
    peak_rss_mb: float
    ready: bool


def expected_requests(
    mailboxes: int, mail_users: int, users: int, groups: int, contacts: int, shared: int
) -> dict[str, int]:
    """docs/readiness.md's cost with the deployed roles: pages, one organization $batch, member reads 20 a batch."""
    exchange = max(1, math.ceil(mailboxes / EXCHANGE_PAGE)) + max(1, math.ceil(mail_users / EXCHANGE_PAGE)) + 1
    exchange += math.ceil(shared / EXCHANGE_BATCH)
    graph = 1 + max(1, math.ceil(users / GRAPH_PAGE)) + max(1, math.ceil(groups / GRAPH_PAGE))
    graph += max(1, math.ceil(contacts / GRAPH_PAGE))
    graph += math.ceil(groups / GRAPH_BATCH)  # every generated group has mail: its member groups are read
    return {"exchange": exchange, "graph": graph}


def run_readiness(tenant: Tenant, size: int, groups: int, contacts: int, log: Any) -> ReadinessRow:
    """One report over a generated tenant of `size` mailboxes, with the sandbox's latency on every request."""
    generate = {"mailboxes": size, "candidates": size // 10, "groups": groups, "contacts": contacts, "seed": 7}
    # The roles the deployment grants: not the optional source-of-authority ones, so no state is read.
    roles = {resource: list(names) for resource, names in DEFAULT_ROLES.items()}
    roles[GRAPH_RESOURCE] += list(GRAPH_APP_ROLES)
    tenant.reset({"skus": load_seed("default")["skus"], "generate": generate}, latency=LATENCY, roles=roles)
    before = tenant.stats()
    child = run_child(["-m", "shared.cli", "readiness", "--json"], base_env(tenant.sandbox))
    if child.returncode not in (0, 4):
        raise RuntimeError(f"exoprov readiness exited {child.returncode}: {child.stderr[-2000:]}")
    document = child.json()
    after = tenant.stats()
    writes = _writes(after) - _writes(before)
    row = ReadinessRow(
        size,
        groups,
        contacts,
        child.wall_seconds,
        document["requests"],
        expected_requests(size, 0, size, groups, contacts, 0),
        writes,
        child.peak_rss_mb,
        document["ready"],
    )
    log(f"readiness {size:,} mailboxes: {row.seconds:.1f} s, {row.requests}, writes {writes}")
    return row


def _writes(stats: dict[str, Any]) -> int:
    commands: dict[str, int] = stats.get("commands") or {}
    exchange = sum(int(count) for name, count in commands.items() if not str(name).startswith("Get-"))
    return exchange + int(stats.get("graphWrites") or 0)


def readiness_table(rows: list[ReadinessRow]) -> str:
    lines = [
        "| mailboxes | groups | contacts | wall s | Exchange requests (expected) | Graph requests (expected) | writes "
        "| peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.mailboxes:,} | {r.groups:,} | {r.contacts:,} | {r.seconds:.1f} "
        f"| {r.requests.get('exchange', 0)} ({r.expected['exchange']}) | {r.requests.get('graph', 0)} "
        f"({r.expected['graph']}) | {r.writes} | {r.peak_rss_mb:.0f} |"
        for r in rows
    ]
    return "\n".join(lines)
