"""The sweep side by side with the serial pipeline, on generated tenants, in one run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.common import Tenant, base_env, run_child

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

    def lower_bound(self) -> float:
        pages = math.ceil(self.mailboxes / PAGE_SIZE)
        return (pages + math.ceil(self.candidates / BATCH) / CONCURRENCY_LIMIT) * LATENCY


def run_sweeps(tenant: Tenant, sizes: list[int], serial: bool, log: Any) -> list[SweepRow]:
    rows = []
    for size in sizes:
        candidates = size // 10
        methods = ["serial", "exoprov"] if serial else ["exoprov"]
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
            )
            args = ["-m", "bench.serial"] if method == "serial" else ["-m", "shared.cli", "sweep", "--apply", "--json"]
            log(f"  {method:<8} {size:>7,} mailboxes ...")
            child = run_child(args, env)
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
            rows.append(row)
            log(
                f"  {method:<8} {size:>7,} mailboxes: {row.seconds:.2f} s, {row.requests} requests, "
                f"{row.peak_rss_mb:.0f} MB peak"
            )
    return rows


def sweep_table(rows: list[SweepRow]) -> str:
    serial = {r.mailboxes: r for r in rows if r.method == "serial"}
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
