"""Longest tests first: the suite's order, from the durations a previous run recorded in tests/durations.json.

pytest-xdist hands tests out in collection order as its processes free up. Most long tests mostly wait (leases,
replication lags, worker processes, storage retries); started late, they make the run's tail while the cores
idle, started first they wait while the many short tests keep the cores busy. A test that is not in the file
(new, or renamed) keeps its place after the known ones. Tests of one xdist group keep their order and stay
together (test_chain's module fixture runs once), ranked by their sum. The Makefile turns off xdist's own
reordering (`--no-loadscope-reorder`, which would put the groups first by their number of tests).

`make durations` runs the suite with `--record-durations` and writes the file again (a run of some tests updates
theirs and keeps the others').
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

FILE = Path(__file__).with_name("durations.json")
# Shorter tests are left in collection order: their place does not change the run's length.
RECORD_FROM_SECONDS = 2.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-durations",
        action="store_true",
        help=f"write each test's duration (setup, call and teardown) to {FILE.name}, for the order of later runs",
    )


def _plain(nodeid: str) -> str:
    """The test's id without the "@group" xdist's loadgroup appends (an "@" inside [parameters] stays)."""
    return re.sub(r"@[^@\[\]]*$", "", nodeid)


def _known() -> dict[str, float]:
    """What the file says; nothing when it is missing or unreadable (the header says so): the order is never worth a
    failed run."""
    try:
        known = json.loads(FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if isinstance(known, dict) and all(isinstance(s, int | float) for s in known.values()):
        return known
    return {}


def pytest_report_header(config: pytest.Config) -> str | None:
    if FILE.exists() and not _known():
        return f"{FILE.name}: not a JSON object of seconds; tests run in collection order (make durations)"
    return None


def _group(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("xdist_group")
    return str(mark.args[0]) if mark and mark.args else None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook appends "@group" to the grouped tests' ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    known = _known()
    seconds = {item.nodeid: known.get(item.nodeid, 0.0) for item in items}
    by_group: dict[str, float] = defaultdict(float)
    for item in items:
        if (group := _group(item)) is not None:
            by_group[group] += seconds[item.nodeid]  # a group runs in one process: its length is the sum
    items.sort(key=lambda item: -(by_group[g] if (g := _group(item)) is not None else seconds[item.nodeid]))


class _Recorder:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[_plain(report.nodeid)] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus != 0:
            return  # a failed run's durations say little about a passing one
        # Merged into what the file knew, so that a run of some tests keeps the others' durations.
        merged = {nodeid: s for nodeid, s in _known().items() if nodeid not in self.seconds}
        merged |= {nodeid: round(s, 1) for nodeid, s in self.seconds.items() if s >= RECORD_FROM_SECONDS}
        ordered = dict(sorted(merged.items(), key=lambda pair: (-pair[1], pair[0])))
        FILE.write_text(json.dumps(ordered, indent=1) + "\n", encoding="utf-8")


def pytest_configure(config: pytest.Config) -> None:
    # Only the main process records: with xdist it receives every process's reports.
    if config.getoption("record_durations") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_Recorder(), "exoprov-durations-recorder")
