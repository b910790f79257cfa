"""The group sweep on a generated tenant: wall time, requests against the formula, writes, order and memory."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.common import Tenant, base_env, run_child
from sandbox.azurite import Azurite
from sandbox.server import load_seed

LATENCY = 0.020
GRAPH_PAGE = 999
GRAPH_BATCH = 20


@dataclass
class AuthorityRow:
    groups: int
    levels: int
    converted: int
    seconds: float
    requests: int
    expected: int
    writes: int
    children_first: bool
    peak_rss_mb: float


def expected_requests(groups: int, level_sizes: list[int]) -> int:
    """Pages, one $batch per 20 state reads and per 20 member reads, then per level a PATCH and a read-back $batch
    per 20 groups (docs/contracts.md, "Sweep report")."""
    reads = max(1, math.ceil(groups / GRAPH_PAGE)) + math.ceil(2 * groups / GRAPH_BATCH)
    return reads + sum(2 * math.ceil(size / GRAPH_BATCH) for size in level_sizes)


def run_authority(tenant: Tenant, azurite: Azurite, groups: int, log: Any) -> AuthorityRow:
    """`exoprov sweep --apply` with ENFORCE_OBJECTS=groups over `groups` synced security groups nested in threes."""
    generate = {"mailboxes": 0, "groups": groups, "mailEnabledShare": 0.0, "seed": 7}
    tenant.reset({"skus": load_seed("default")["skus"], "generate": generate}, latency=LATENCY, replication_lag=0)
    env = base_env(
        tenant.sandbox,
        AzureWebJobsStorage=azurite.connection_string,
        ENFORCE_OBJECTS="groups",
        ENFORCE_MAX_CHANGES="0",
    )
    child = run_child(["-m", "shared.cli", "sweep", "--apply", "--json"], env)
    if child.returncode != 0:
        raise RuntimeError(f"exoprov sweep exited {child.returncode}: {child.stderr[-2000:]}")
    section = child.json()["groups"]
    sizes: dict[int, int] = {}
    for item in section["candidateList"]:
        sizes[item["level"]] = sizes.get(item["level"], 0) + 1
    log_entries = tenant.authority_log()
    position = {entry["id"].lower(): n for n, entry in enumerate(log_entries)}
    level_of = {item["id"]: item["level"] for item in section["candidateList"]}
    # Children first: every conversion of a level comes after every conversion of the level below it.
    ordered = sorted(position, key=position.__getitem__)
    children_first = [level_of.get(object_id, -1) for object_id in ordered] == sorted(level_of.values())
    row = AuthorityRow(
        groups,
        section["levels"],
        section["changed"],
        child.wall_seconds,
        section["requests"],
        expected_requests(groups, [sizes[level] for level in sorted(sizes)]),
        int(tenant.stats().get("graphWrites") or 0),
        children_first,
        child.peak_rss_mb,
    )
    log(f"groups {groups:,}: {row.seconds:.1f} s, {row.requests} requests ({row.expected} expected)")
    return row


def authority_table(rows: list[AuthorityRow]) -> str:
    lines = [
        "| synced groups | levels | converted | wall s | Graph requests (expected) | Graph writes | children first "
        "| peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    lines += [
        f"| {r.groups:,} | {r.levels} | {r.converted:,} | {r.seconds:.1f} | {r.requests} ({r.expected}) | {r.writes:,} "
        f"| {'yes' if r.children_first else 'NO'} | {r.peak_rss_mb:.0f} |"
        for r in rows
    ]
    return "\n".join(lines)
