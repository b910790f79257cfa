"""`make run`: the main job on the embedded default, the sandbox tenant on loopback.

Starts the sandbox, points exoprov at it exactly as Azure would (managed identity endpoint, service
endpoints), runs `exoprov doctor`, then `exoprov sweep` in report mode and with --apply, and stops
the sandbox again by its process id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXOPROV = [sys.executable, "-m", "shared.cli"]


def main() -> int:
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", "0", "--json", "--lifetime", "600"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sandbox.stdout is not None
        ready = json.loads(sandbox.stdout.readline())
        env = {**os.environ, **ready["env"], "ENFORCE_EXCLUDE": "vip@contoso.com"}
        print(f"sandbox tenant on {ready['url']} (pid {ready['pid']}); seed: the objects of the original tests\n")
        steps = [
            ("exoprov doctor", ["doctor"]),
            ("exoprov sweep            (report mode: changes nothing)", ["sweep"]),
            ("exoprov sweep --apply    (ENFORCE_EXCLUDE=vip@contoso.com)", ["sweep", "--apply"]),
            ("exoprov sweep            (again: nothing left to do)", ["sweep"]),
        ]
        for title, args in steps:
            print(f"$ {title}", flush=True)
            code = subprocess.call(EXOPROV + args, cwd=ROOT, env=env)
            print(flush=True)
            if code != 0:
                print(f"make run: '{title.split('  ')[0]}' exited {code}", file=sys.stderr)
                return code
        return 0
    finally:
        os.kill(sandbox.pid, signal.SIGTERM)
        sandbox.wait(timeout=10)
        if sandbox.stdout:
            sandbox.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
