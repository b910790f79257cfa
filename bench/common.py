"""What the benchmarks share: the sandbox, child processes with their peak RSS, the machine's description."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.control import SandboxControl
from sandbox.main import SandboxProcess

ROOT = Path(__file__).resolve().parent.parent


class Tenant(SandboxControl):
    """The sandbox under benchmark."""

    def __init__(self, sandbox: SandboxProcess) -> None:
        super().__init__(sandbox.url, sandbox.env, sandbox.pid)
        self.sandbox = sandbox


@dataclass
class ChildRun:
    """A finished child process: its output, wall time and peak resident memory."""

    stdout: str
    stderr: str
    returncode: int
    wall_seconds: float
    peak_rss_mb: float

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_child(args: list[str], env: dict[str, str]) -> ChildRun:
    """Run a Python child process and measure it (ru_maxrss of that process alone, via wait4)."""
    started = time.monotonic()
    out_path, err_path = ROOT / ".run" / "bench.out", ROOT / ".run" / "bench.err"
    out_path.parent.mkdir(exist_ok=True)
    with open(out_path, "w") as out, open(err_path, "w") as err:
        process = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        out_path.read_text(),
        err_path.read_text(),
        process.returncode,
        time.monotonic() - started,
        usage.ru_maxrss / 1024,
    )


def machine() -> str:
    """One line that says what the numbers were measured on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 1024**2:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{model}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def base_env(sandbox: SandboxProcess, **extra: str) -> dict[str, str]:
    """The environment of a child: pointed at the sandbox, nothing else from the shell's app settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENFORCE_", "HTTP_", "POLL_", "AZURE_"))}
    env.update(sandbox.env)
    env.update(extra)
    return env
