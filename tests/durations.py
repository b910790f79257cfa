"""The suite's order, from what a previous run recorded in tests/durations.json: each long test's seconds and CPU.

pytest-xdist hands tests out in collection order as its processes free up. Long tests are of two kinds: busy ones
(the fault suite, the demo: chains whose storage traffic keeps both cores working) and waiting ones (leases,
deadlines, storage retries: seconds of sleep for a fraction of a second of CPU). Started together, the busy ones
crowd the cores while the waiting ones, started next, leave them idle. So the long tests go first, longest first
within each kind, alternating between the kinds: the waits overlap the busy tests' work, and the many short tests
fill in after them. A test that is not in the file (new, renamed or short) keeps its place after the known ones.
Tests of one xdist group keep their order and stay together (test_chain's module fixture runs once), ranked by
their sum. The Makefile turns off xdist's own reordering (`--no-loadscope-reorder`, which would put the groups
first by their number of tests).

`make durations` runs the suite with `--record-durations` and writes the file again (a run of some tests updates
theirs and keeps the others'). A recording run gives each process an Azurite of its own (tests/storage_accounts.py),
so that a test's CPU seconds include the storage work it causes.
"""

from __future__ import annotations

import json
import os
import re
import resource
from collections import defaultdict
from collections.abc import Generator
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import pytest

FILE = Path(__file__).with_name("durations.json")
# Shorter tests are left in collection order: their place barely changes the run's length.
RECORD_FROM_SECONDS = 1.0
# A test is busy when it, with the processes it works with (Azurite, the sandbox, `exoprov` children), computes for
# at least this share of its time.
BUSY_SHARE = 0.15
_CPU = "cpu"  # the name of the CPU seconds a test process puts in each report's user_properties


@dataclass(frozen=True)
class Measured:
    """What a run recorded of one test (or a group, summed): its seconds, setup to teardown, and its CPU seconds."""

    seconds: float
    cpu: float

    @property
    def busy(self) -> bool:
        return self.cpu >= BUSY_SHARE * self.seconds


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-durations",
        action="store_true",
        help=f"write each test's seconds and CPU to {FILE.name}, for the order of later runs",
    )


def _plain(nodeid: str) -> str:
    """The test's id without the "@group" xdist's loadgroup appends (an "@" inside [parameters] stays)."""
    return re.sub(r"@[^@\[\]]*$", "", nodeid)


def _read() -> dict[str, Measured] | None:
    """What the file says; None when it is missing or unreadable (the header says so): the order is never worth a
    failed run."""
    try:
        known = json.loads(FILE.read_text(encoding="utf-8"))
        return {nodeid: Measured(float(seconds), float(cpu)) for nodeid, (seconds, cpu) in known.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _known() -> dict[str, Measured]:
    return _read() or {}


def pytest_report_header(config: pytest.Config) -> str | None:
    if FILE.exists() and _read() is None:
        return f"{FILE.name}: not a JSON object of [seconds, cpu]; tests run in collection order (make durations)"
    return None


def _group(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("xdist_group")
    return str(mark.args[0]) if mark and mark.args else None


def order(units: dict[str, Measured | None]) -> list[str]:
    """The order to hand out units (tests or groups) in: the measured ones longest first, alternating between the
    busy and the waiting ones (a busy one first), then the unmeasured ones as they came."""
    measured = {key: m for key, m in units.items() if m is not None}
    longest = sorted(measured, key=lambda key: -measured[key].seconds)
    busy = [key for key in longest if measured[key].busy]
    waiting = [key for key in longest if not measured[key].busy]
    alternating = [key for pair in zip_longest(busy, waiting) for key in pair if key is not None]
    return alternating + [key for key in units if key not in measured]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook appends "@group" to the grouped tests' ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    known = _known()
    units: dict[str, Measured | None] = {}
    members: dict[str, list[pytest.Item]] = defaultdict(list)
    for item in items:
        key = f"group {group}" if (group := _group(item)) is not None else item.nodeid
        members[key].append(item)
        measured = known.get(item.nodeid)
        if measured is not None:  # a group runs in one process: its length is the sum
            before = units.get(key) or Measured(0.0, 0.0)
            units[key] = Measured(before.seconds + measured.seconds, before.cpu + measured.cpu)
        else:
            units.setdefault(key, None)
    items[:] = [item for key in order(units) for item in members[key]]


def _cpu_seconds() -> float:
    """CPU seconds of this process and its descendants, live or reaped (from /proc, so that the session's Azurite and
    sandbox count for the test they work for); where there is no /proc, of this process and its reaped children."""
    try:
        return _tree_cpu_seconds(os.getpid())
    except OSError:
        own, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime


def _tree_cpu_seconds(root: int) -> float:
    ticks: dict[int, int] = {}
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        pid = int(entry.name)
        children[int(fields[1])].append(pid)
        ticks[pid] = sum(int(value) for value in fields[11:15])  # utime, stime, and those of its reaped children
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.config.getoption("record_durations"):
        item.stash[_started] = (_cpu_seconds(), _session_setup_cpu[0])


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    if fixturedef.scope != "session" or not request.config.getoption("record_durations"):
        return (yield)
    started = _cpu_seconds()
    try:
        return (yield)
    finally:
        _session_setup_cpu[0] += _cpu_seconds() - started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """The teardown's report, the last of a test, carries the CPU its process tree spent on it, setup to teardown;
    starting the session's Azurite and sandbox is not this test's work, only its turn to wait for it."""
    report = yield
    if report.when == "teardown" and _started in item.stash:
        cpu, session_setup = item.stash[_started]
        spent = _cpu_seconds() - cpu - (_session_setup_cpu[0] - session_setup)
        report.user_properties.append((_CPU, spent))
    return report


_started = pytest.StashKey[tuple[float, float]]()
_session_setup_cpu = [0.0]  # the CPU this process has spent starting session-scoped fixtures so far


class _Recorder:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = {}
        self.collected: set[str] = set()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.collected.update(item.nodeid for item in session.items)  # without xdist

    def pytest_xdist_node_collection_finished(self, node: object, ids: list[str]) -> None:
        self.collected.update(_plain(nodeid) for nodeid in ids)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid = _plain(report.nodeid)
        self.seconds[nodeid] += report.duration
        for name, value in report.user_properties:
            if name == _CPU and isinstance(value, float):
                self.cpu[nodeid] = value

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus != 0:
            return  # a failed run's durations say little about a passing one
        # Merged into what the file knew, so that a run of some tests keeps the others' durations; a run of the whole
        # suite drops the tests it no longer has (renamed, removed).
        whole = self.config.args_source == pytest.Config.ArgsSource.TESTPATHS and not (
            self.config.option.keyword or self.config.option.markexpr
        )
        kept = {nodeid: m for nodeid, m in _known().items() if not whole or nodeid in self.collected}
        merged = {nodeid: [m.seconds, m.cpu] for nodeid, m in kept.items() if nodeid not in self.seconds}
        merged |= {
            nodeid: [round(s, 1), round(self.cpu.get(nodeid, 0.0), 1)]
            for nodeid, s in self.seconds.items()
            if s >= RECORD_FROM_SECONDS
        }
        lines = [f" {json.dumps(nodeid)}: {json.dumps(m)}" for nodeid, m in sorted(merged.items(), key=_longest_first)]
        FILE.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")


def _longest_first(pair: tuple[str, list[float]]) -> tuple[float, str]:
    return -pair[1][0], pair[0]


def pytest_configure(config: pytest.Config) -> None:
    # Only the main process records: with xdist it receives every process's reports.
    if config.getoption("record_durations") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_Recorder(config), "exoprov-durations-recorder")
