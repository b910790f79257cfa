"""`make bench`: run every benchmark against the sandbox, print the tables, write bench/RESULTS.md.

python -m bench.run [--sizes 10000,50000,100000] [--chain 500] [--no-serial]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.authority_bench import authority_table, run_authority
from bench.chain_bench import calls_table, run_chain
from bench.coldstart import coldstart_table, measure
from bench.common import ROOT, Tenant, machine
from bench.readiness_bench import readiness_table, run_readiness
from bench.sweep_bench import (
    CONCURRENCY_LIMIT,
    LATENCY,
    expected_requests,
    journal_cost,
    journal_table,
    read_journal,
    run_sweeps,
    sweep_table,
)
from sandbox.azurite import Azurite
from sandbox.main import SandboxProcess

RESULTS = ROOT / "bench" / "RESULTS.md"
# Synced groups and contacts per mailbox in the readiness report's tenant: 2,000 and 1,000 at 100,000 mailboxes.
READINESS_GROUPS_PER_MAILBOX = 0.02
READINESS_CONTACTS_PER_MAILBOX = 0.01


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,100000", help="tenant sizes for the sweep")
    parser.add_argument("--chain", type=int, default=500, help="requests through the chain")
    parser.add_argument("--no-serial", action="store_true", help="skip the (slow) serial pipeline")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--coldstart-runs", type=int, default=7, help="fresh interpreters per import measured")
    parser.add_argument("--groups", type=int, default=10000, help="synced groups for the group sweep")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    started = time.monotonic()
    sandbox = SandboxProcess.start(lifetime=7200)
    azurite = Azurite.on_free_ports(Path(tempfile.mkdtemp(prefix="exoprov-bench-azurite-")))
    try:
        azurite.start()
        tenant = Tenant(sandbox)
        log(f"sweep: latency {LATENCY * 1000:.0f} ms, Exchange concurrency limit {CONCURRENCY_LIMIT}, 10% candidates")
        sweeps = run_sweeps(tenant, azurite, sizes, not args.no_serial, log)
        largest = max(sizes)
        log(f"journal: {largest:,} mailboxes, every one a candidate, with and without the journal")
        everyone = run_sweeps(tenant, azurite, [largest], False, log, share=100)
        journaled = next(r for r in everyone if r.method == "exoprov")
        read = read_journal(tenant, azurite, journaled.run_id)
        if read.entries != largest:
            raise RuntimeError(f"the journal of {journaled.run_id} lists {read.entries} entries, not {largest}")
        log(f"chain: {args.chain} requests")
        chain = run_chain(tenant, azurite, args.chain, ["User", "Shared", "Shared", "Room", "Equipment"])
        shared = run_chain(tenant, azurite, 1, ["Shared"])
        groups, contacts = int(largest * READINESS_GROUPS_PER_MAILBOX), int(largest * READINESS_CONTACTS_PER_MAILBOX)
        log(f"readiness: {largest:,} mailboxes, {groups:,} synced groups, {contacts:,} contacts")
        readiness = [run_readiness(tenant, largest, groups, contacts, log)]
        log(f"groups: {args.groups:,} synced security groups, nested in threes, converted")
        authority = [run_authority(tenant, azurite, args.groups, log)]
        log(f"cold start: python -X importtime, {args.coldstart_runs} runs each")
        imports = measure(args.coldstart_runs)
    finally:
        azurite.stop()
        sandbox.stop()

    extra = [r.mailboxes for r in sweeps if r.method != "serial" and r.requests != expected_requests(r)]
    costs = journal_cost(sweeps + everyone)
    worst = max(cost for _, _, cost in costs)
    request_verdict = (
        f"MORE than that at {extra}" if extra else "exactly that at every size (no unclear writes to settle)"
    )
    report = f"""# Benchmark results

Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}, by `make bench` in {time.monotonic() - started:.0f} s.
Everything runs on this machine: the sandbox tenant (one process), Azurite, and exoprov in child processes
(peak RSS is that child's own `ru_maxrss`). Wall time is the sweep's own duration (listing + writes, the
organization read included), not interpreter start-up.

## Sweep: exoprov against the serial pipeline

Sandbox latency {LATENCY * 1000:.0f} ms per request, Exchange concurrency limit {CONCURRENCY_LIMIT} (429 + Retry-After
beyond it), 10% candidates. Serial = the reference pipeline over the same REST API: unfiltered listing, then
one `Set-Mailbox` per candidate in series (bench/serial.py). exoprov = `exoprov sweep --apply --json`
(server-side `IsDirSynced` filter, `$select`, `$batch` of 10, `ENFORCE_CONCURRENCY={CONCURRENCY_LIMIT}` in
flight). Lower bound =
`(pages + ceil(candidates / 10) / concurrency) x latency`.

{sweep_table(sweeps)}

Requests per exoprov sweep = 1 organization read + pages + ceil(candidates / 10):
{request_verdict}.
Throttled answers: {", ".join(f"{r.method} {r.mailboxes:,}: {r.throttled}" for r in sweeps)};
Retry-After violations: {sum(r.retry_after_violations for r in sweeps)}.

## The journal's cost

Each sweep again without the journal (`bench/unjournaled.py`: the same sweep, with a journal that stores
nothing), so the difference is what writing intents and outcomes to Azurite costs. The last row flips every
one of {largest:,} mailboxes, so its journal holds {largest:,} entries.

{journal_table(costs)}

Worst: **{worst * 100:+.1f}%** (target: at most +10%). `exoprov journal --run ID --json` read the
{read.entries:,} entries of the last run back in {read.seconds:.1f} s ({read.size_mb:.1f} MB of JSON lines, process
start included).

## Chain throughput

{chain.requests} requests (20% user, 40% shared, 20% room, 20% equipment mailboxes) through `exoprov worker
--until-idle` (8 at a time) over Azurite and the sandbox, with no provisioning or conversion delay and no
latency: **{chain.requests / chain.seconds:.1f} requests per second** ({chain.seconds:.1f} s, worker start-up
included), {chain.succeeded} succeeded, worker peak RSS {chain.peak_rss_mb:.0f} MB.
Tokens acquired: {", ".join(f"{k}: {v}" for k, v in chain.tokens.items())} (one per resource, whatever the
number of messages). Retry-After violations: {chain.retry_after_violations}.

Calls per request, by type (Graph and Exchange):

{calls_table(chain)}

A shared mailbox alone, happy path: **{sum(shared.per_request.values()):.0f} calls** to Graph and Exchange
together (target: at most 10, plus the waiting polls):

{calls_table(shared)}

## Readiness report

`exoprov readiness --json` on a generated tenant with {LATENCY * 1000:.0f} ms of sandbox latency per request:
{largest:,} mailboxes (as many users), {groups:,} synced groups nested in chains of three, and
{contacts:,} synced contacts. Writes are what the sandbox counted: Exchange cmdlets other than `Get-`
and Graph writes.

{readiness_table(readiness)}

## Groups: moving the source of authority

`exoprov sweep --apply --json` with `ENFORCE_OBJECTS=groups` and no brake on {args.groups:,} synced security
groups nested in chains of three ({LATENCY * 1000:.0f} ms per request; no read lag). Expected requests =
listing pages + ceil(2 x groups / 20) batches of reads (state and member groups) + per level ceil(groups in
it / 20) PATCH batches and as many read-back batches. Graph writes are what the sandbox counted (each
PATCH item one); "children first" checks the order the sandbox recorded against the plan's levels.

{authority_table(authority)}

## Cold start

{coldstart_table(imports, args.coldstart_runs)}

`function_app` imports only `azure.functions` and the thin adapters; the core is imported by the first
invocation, so indexing the app costs {imports[0].ratio:.2f}x the bare `azure.functions` import (target: at
most 1.2x).
"""
    args.output.write_text(report)
    print(report)
    log(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
