"""`make bench` stays runnable: its harness, on tiny sizes (a smoke test; measuring is the benchmark's job)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import APP_SETTINGS, ROOT


@pytest.mark.timeout(240)
def test_the_benchmark_harness_runs_and_writes_its_tables(tmp_path, monkeypatch) -> None:
    """A small `python -m bench.run` writes every section, with the sweeps' exact request counts."""
    for name in APP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    output = tmp_path / "RESULTS.md"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--sizes",
            "500",
            "--chain",
            "10",
            "--coldstart-runs",
            "1",
            "--groups",
            "60",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    text = output.read_text()
    assert "| 500 | 50 | serial |" in text and "| 500 | 50 | exoprov |" in text
    assert "exactly that at every size" in text and "Retry-After violations: 0" in text
    assert "10 succeeded" in text and "| `function_app` |" in text
    # The readiness report: its requests exactly as docs/readiness.md counts them, and no write.
    assert "| 500 | 10 | 5 |" in text and "| 3 (3) | 5 (5) | 0 |" in text
    # The group sweep: 60 groups in chains of three, converted children first, requests exactly the formula.
    assert "| 60 | 3 | 60 |" in text and "| 13 (13) | 60 | yes |" in text
