"""The sweep side by side with the serial pipeline, on generated tenants, in one run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.common import Tenant, base_env, run_child
from sandbox.azurite import Azurite

LATENCY = 0.020
CONCURRENCY_LIMIT = 4
PAGE_SIZE = 1000
BATCH = 10


@dataclass
class SweepRow:
    mailboxes: int
    candidates: int
    method: str
    seconds: float
    requests: int
    peak_rss_mb: float
    changed: int
    throttled: int
    retry_after_violations: int
    run_id: str = ""

    def lower_bound(self) -> float:
        pages = math.ceil(self.mailboxes / PAGE_SIZE)
        return (pages + math.ceil(self.candidates / BATCH) / CONCURRENCY_LIMIT) * LATENCY


COMMANDS = {
    "serial": ["-m", "bench.serial"],
    "exoprov": ["-m", "shared.cli", "sweep", "--apply", "--json"],
    "no journal": ["-m", "bench.unjournaled"],
}


def run_sweeps(
    tenant: Tenant, azurite: Azurite, sizes: list[int], serial: bool, log: Any, share: int = 10
) -> list[SweepRow]:
    """Each size with every method; `share` is the percentage of mailboxes that are candidates."""
    rows = []
    for size in sizes:
        candidates = size * share // 100
        methods = ["serial", "exoprov", "no journal"] if serial else ["exoprov", "no journal"]
        for method in methods:
            tenant.reset(
                {"generate": {"mailboxes": size, "candidates": candidates, "seed": 5}},
                latency=LATENCY,
                concurrency_limit=CONCURRENCY_LIMIT,
                concurrency_refusal_status=429,
                concurrency_retry_after=True,
                retry_after=0.05,
            )
            # As many in flight as this tenant takes (the default, 2, leaves room for other admin tools).
            env = base_env(
                tenant.sandbox,
                ENFORCE_MAX_CHANGES="0",
                HTTP_MAX_ATTEMPTS="20",
                ENFORCE_CONCURRENCY=str(CONCURRENCY_LIMIT),
                AzureWebJobsStorage=azurite.connection_string,
            )
            log(f"  {method:<10} {size:>7,} mailboxes, {candidates:,} candidates ...")
            child = run_child(COMMANDS[method], env)
            if child.returncode != 0:
                raise RuntimeError(f"{method} at {size}: exit {child.returncode}: {child.stderr[-1500:]}")
            report = child.json()
            stats = tenant.stats()
            row = SweepRow(
                size,
                candidates,
                method,
                float(report["durationSeconds"]),
                int(stats["requestsTotal"]),
                child.peak_rss_mb,
                int(report["changed"]),
                int(stats["throttled"]),
                len(stats["retryAfterViolations"]),
            )
            if row.changed != candidates:
                raise RuntimeError(f"{method} at {size} changed {row.changed} of {candidates}")
            row.run_id = str(report.get("runId", ""))
            rows.append(row)
            log(
                f"  {method:<10} {size:>7,} mailboxes: {row.seconds:.2f} s, {row.requests} requests, "
                f"{row.peak_rss_mb:.0f} MB peak"
            )
    return rows


def journal_cost(rows: list[SweepRow]) -> list[tuple[SweepRow, SweepRow, float]]:
    """Per size: the journaled run, the unjournaled one, and how much longer the first took (a fraction)."""
    plain = {(r.mailboxes, r.candidates): r for r in rows if r.method == "no journal"}
    return [
        (r, plain[r.mailboxes, r.candidates], r.seconds / plain[r.mailboxes, r.candidates].seconds - 1)
        for r in rows
        if r.method == "exoprov"
    ]


@dataclass
class JournalRead:
    """`exoprov journal --run ID --json` after a sweep: entries, seconds, bytes of JSON lines."""

    entries: int
    seconds: float
    size_mb: float


def read_journal(tenant: Tenant, azurite: Azurite, run_id: str) -> JournalRead:
    env = base_env(tenant.sandbox, AzureWebJobsStorage=azurite.connection_string)
    child = run_child(["-m", "shared.cli", "journal", "--run", run_id, "--json"], env)
    if child.returncode != 0:
        raise RuntimeError(f"exoprov journal --run {run_id}: exit {child.returncode}: {child.stderr[-1500:]}")
    lines = child.stdout.splitlines()
    return JournalRead(len(lines), child.wall_seconds, len(child.stdout.encode()) / 1e6)


def sweep_table(rows: list[SweepRow]) -> str:
    serial = {r.mailboxes: r for r in rows if r.method == "serial"}
    rows = [r for r in rows if r.method != "no journal"]
    ours = [r for r in rows if r.method == "exoprov"]
    first = ours[0] if ours else None
    lines = [
        "| mailboxes | candidates | method | wall time | requests | speed-up vs serial | ratio to lower bound "
        "| peak RSS | growth vs smallest (time / RSS) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        base = serial.get(row.mailboxes)
        speedup = f"{base.seconds / row.seconds:.1f}x" if base and row.method == "exoprov" else "-"
        growth = "-"
        if row.method == "exoprov" and first:
            growth = f"{row.seconds / first.seconds:.1f}x / {row.peak_rss_mb / first.peak_rss_mb:.2f}x"
        lines.append(
            f"| {row.mailboxes:,} | {row.candidates:,} | {row.method} | {row.seconds:.2f} s | {row.requests:,} "
            f"| {speedup} | {row.seconds / row.lower_bound():.2f} (bound {row.lower_bound():.2f} s) "
            f"| {row.peak_rss_mb:.0f} MB | {growth} |"
        )
    return "\n".join(lines)


def expected_requests(row: SweepRow) -> int:
    """What a sweep may send: the organization read, the pages, one $batch per ten candidates."""
    return 1 + math.ceil(row.mailboxes / PAGE_SIZE) + math.ceil(row.candidates / BATCH)


def journal_table(costs: list[tuple[SweepRow, SweepRow, float]]) -> str:
    lines = [
        "| mailboxes | candidates (journal entries) | with the journal | without | cost |",
        "|---:|---:|---:|---:|---:|",
    ]
    for journaled, plain, cost in costs:
        lines.append(
            f"| {journaled.mailboxes:,} | {journaled.candidates:,} | {journaled.seconds:.2f} s "
            f"| {plain.seconds:.2f} s | {cost * 100:+.1f}% |"
        )
    return "\n".join(lines)
