"""Cold start: the import time of `function_app` and of `exoprov`, against the bare import of their dependencies."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from dataclasses import dataclass

from bench.common import ROOT

RUNS = 7
CASES = {
    # what is imported -> the dependencies it imports at module level, imported bare
    "function_app": "azure.functions",
    "shared.cli": "argparse, json, logging, contextvars, uuid, dataclasses",
}
FULL_PATHS = {
    "a sweep's full import path": "shared.enforcement, shared.wiring",
    "the chain's full import path": "shared.dispatch, shared.wiring, shared.queues",
}
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


@dataclass
class ImportTime:
    name: str
    milliseconds: float
    baseline_milliseconds: float | None = None

    @property
    def ratio(self) -> float | None:
        return self.milliseconds / self.baseline_milliseconds if self.baseline_milliseconds else None


def import_ms(modules: str, runs: int = RUNS) -> float:
    """Median over `runs` fresh interpreters of the cumulative import time of the listed top-level modules."""
    names = [m.strip() for m in modules.split(",")]
    totals = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {modules}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        total = 0
        for line in done.stderr.splitlines():
            match = _LINE.match(line)
            # Top-level entries (no indentation) for the modules asked for carry the cumulative time.
            if match and not match.group(3).strip(" ") and match.group(4) in names and len(match.group(3)) <= 1:
                total += int(match.group(2))
        totals.append(total / 1000)
    return statistics.median(totals)


def measure(runs: int = RUNS) -> list[ImportTime]:
    rows = [ImportTime(name, import_ms(name, runs), import_ms(deps, runs)) for name, deps in CASES.items()]
    rows += [ImportTime(label, import_ms(modules, runs)) for label, modules in FULL_PATHS.items()]
    return rows


def coldstart_table(rows: list[ImportTime], runs: int = RUNS) -> str:
    lines = [f"| import | time (median of {runs}) | bare dependencies | ratio |", "|---|---:|---:|---:|"]
    for row in rows:
        base = f"{row.baseline_milliseconds:.0f} ms" if row.baseline_milliseconds else "-"
        ratio = f"{row.ratio:.2f}x" if row.ratio else "-"
        lines.append(f"| `{row.name}` | {row.milliseconds:.0f} ms | {base} | {ratio} |")
    return "\n".join(lines)
