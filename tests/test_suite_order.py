"""The suite's own order (tests/durations.py): long tests first, busy and waiting ones alternating."""

from __future__ import annotations

from tests.durations import Measured, order


def test_long_tests_go_first_alternating_busy_and_waiting_then_the_unmeasured_as_they_came() -> None:
    """Busy and waiting tests take turns, each kind longest first; tests the file does not know keep their order."""
    units = {
        "new-b": None,
        "wait-20": Measured(20.0, 0.5),
        "busy-30": Measured(30.0, 9.0),
        "new-a": None,
        "busy-10": Measured(10.0, 4.0),
        "busy-40": Measured(40.0, 8.0),
        "wait-12": Measured(12.0, 0.0),
    }
    assert order(units) == ["busy-40", "wait-20", "busy-30", "wait-12", "busy-10", "new-b", "new-a"]


def test_a_test_computing_for_15_percent_of_its_time_is_busy() -> None:
    """BUSY_SHARE is of the test's whole time, setup and teardown included."""
    assert Measured(6.0, 1.0).busy and not Measured(10.0, 1.0).busy
