"""`make run`, the README's first command, end to end: it must keep working at every commit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import APP_SETTINGS, ROOT


@pytest.mark.timeout(180)
def test_make_run_shows_both_jobs_working(monkeypatch) -> None:
    """The demo passes the doctor, sweeps (report, apply, nothing left), shows the journal and undo's plan,
    provisions its batch, and writes the readiness report where it says."""
    for name in APP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    demo = subprocess.run(
        [sys.executable, "-m", "sandbox.demo"], cwd=ROOT, capture_output=True, text=True, timeout=170, check=False
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    out = demo.stdout
    assert "all checks passed" in out
    assert "changed                 5" in out and out.count("\n  candidates              0\n") == 1
    assert "5 entries" in out and out.count("False -> True  applied") == 5  # the journal of the apply run
    assert "to set back             5" in out  # undo's plan for that run, in report mode
    # The group and contact sweep (report mode): the mail-enabled groups are left alone, the synced contact listed.
    assert "GroupGDWithMail <gd@contoso.com>: mail-enabled; ENFORCE_MAIL_ENABLED_GROUPS is false" in out
    assert "ContactWithMail <partner@fabrikam.com>: contact" in out
    assert "match nothing the sweep listed" not in out
    for line in (
        "hr-1001  succeeded  UserMailbox",
        "hr-1002  succeeded  SharedMailbox",
        "hr-1003  succeeded  RoomMailbox",
        "hr-1004  failed",
    ):
        assert line in out
    report = ROOT / ".run" / "readiness.html"
    assert f"The readiness report: {report}" in out and "NOT READY" in out
    assert "Not ready yet" in report.read_text()
