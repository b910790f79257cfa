"""`make run`: both jobs on the embedded default, the sandbox tenant and Azurite on loopback.

Starts the sandbox and Azurite, points exoprov at them exactly as Azure would (managed-identity
endpoint, service endpoints, a storage connection string), runs `exoprov doctor`, the sweep in report
mode and with --apply, the group and contact sweep in report mode, then submits a small HR batch, runs
the worker until the queues are empty, writes the readiness report (.run/readiness.html) and prints the
results. Everything it started is stopped again by process id.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from sandbox.azurite import Azurite
from sandbox.control import SandboxControl
from sandbox.main import SandboxProcess

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / ".run" / "readiness.html"
EXIT_NOT_READY = 4
EXOPROV = [sys.executable, "-m", "shared.cli"]
# New hires created "on-premises": they reach the sandbox tenant after a short sync delay.
NEW_HIRES = [
    {"upn": "new.hire@contoso.com", "mail": "alex.wilber@contoso.com", "syncDelaySeconds": 2},
    {"upn": "helpdesk@contoso.com", "mail": "helpdesk@contoso.com", "accountEnabled": False},
    {"upn": "room.london@contoso.com", "mail": "room.london@contoso.com", "accountEnabled": False},
]
SETTINGS = {
    "ENFORCE_EXCLUDE": "vip@contoso.com",
    "ALLOWED_LICENSES": "EXCHANGESTANDARD",
    "DEFAULT_LICENSE": "EXCHANGESTANDARD",
    "DEFAULT_USAGE_LOCATION": "DE",
    "POLL_MIN_SECONDS": "1",
    "POLL_MAX_SECONDS": "2",
}


def main() -> int:
    run_dir = ROOT / ".run"
    shutil.rmtree(run_dir / "azurite", ignore_errors=True)
    azurite = Azurite.on_free_ports(run_dir / "azurite", in_memory=True)
    sandbox = SandboxProcess.start({"mailbox_delay": 3, "conversion_lag": 1})
    try:
        azurite.start()
        env = {**os.environ, **sandbox.env, **SETTINGS, "AzureWebJobsStorage": azurite.connection_string}
        print(
            f"sandbox tenant on {sandbox.url} (pid {sandbox.pid}); Azurite on ports "
            f"{azurite.blob_port}/{azurite.queue_port} (pid {azurite.process.pid if azurite.process else '-'})\n"
        )
        control = SandboxControl(sandbox.url)
        for user in NEW_HIRES:
            control.add_user(**user)
        _create_queues(env)
        code = _steps(env)
        if code == 0:
            _print_results(env)
        return code
    finally:
        azurite.stop()
        sandbox.stop()


def _steps(env: dict[str, str]) -> int:
    steps: list[tuple[str, list[str] | None]] = [
        ("exoprov doctor", ["doctor"]),
        ("exoprov sweep            (report mode: changes nothing)", ["sweep"]),
        ("exoprov sweep --apply    (ENFORCE_EXCLUDE=vip@contoso.com)", ["sweep", "--apply"]),
        ("exoprov sweep            (again: nothing left to do)", ["sweep"]),
        (
            "ENFORCE_OBJECTS=groups,contacts exoprov sweep    (their source of authority, through Graph; report mode)",
            ["sweep", "--report"],
        ),
        ("exoprov journal          (every write, with its run)", ["journal"]),
        ("exoprov undo --run ID    (the apply run: what undo would set back; changes nothing)", ["undo"]),
        (
            "exoprov submit --upn new.hire@contoso.com",
            ["submit", "--upn", "new.hire@contoso.com", "--request-id", "hr-1001"],
        ),
        (
            "exoprov submit --upn helpdesk@contoso.com --type Shared",
            ["submit", "--upn", "helpdesk@contoso.com", "--type", "Shared", "--request-id", "hr-1002"],
        ),
        (
            "exoprov submit --upn room.london@contoso.com --type Room",
            ["submit", "--upn", "room.london@contoso.com", "--type", "Room", "--request-id", "hr-1003"],
        ),
        ("(an HR system puts an invalid request straight on the queue)", None),
        ("exoprov worker --until-idle --timeout 120", ["worker", "--until-idle", "--timeout", "120", "--no-sweep"]),
        (
            "exoprov readiness --html .run/readiness.html --csv .run/readiness    (reads only)",
            ["readiness", "--html", str(REPORT), "--csv", str(REPORT.with_suffix(""))],
        ),
    ]
    for title, args in steps:
        print(f"$ {title}", flush=True)
        if args is None:
            _send_invalid(env)
            code = 0
        elif args == ["undo"]:
            code = subprocess.call(EXOPROV + ["undo", "--run", _last_run(env)], cwd=ROOT, env=env)
        elif title.startswith("ENFORCE_OBJECTS="):
            objects = title.split()[0].split("=", 1)[1]
            # Without the mailbox exclusion: nothing of these kinds is meant by it, and the report would say so.
            step_env = {**env, "ENFORCE_OBJECTS": objects, "ENFORCE_EXCLUDE": ""}
            code = subprocess.call(EXOPROV + args, cwd=ROOT, env=step_env)
        else:
            code = subprocess.call(EXOPROV + args, cwd=ROOT, env=env)
        if args and args[0] == "readiness" and code == EXIT_NOT_READY:
            # The sandbox tenant keeps its mail users, groups and hybrid leftovers: "not ready" is the right answer.
            print(f"\nThe readiness report: {REPORT} (open it in a browser)")
            code = 0
        print(flush=True)
        if code != 0:
            print(f"make run: '{title.split('  ')[0]}' exited {code}", file=sys.stderr)
            return code
    return 0


def _last_run(env: dict[str, str]) -> str:
    """The runId of the newest run in the journal (the apply sweep's)."""
    out = subprocess.run(EXOPROV + ["journal", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return str(json.loads(out.stdout.splitlines()[-1])["runId"])


def _create_queues(env: dict[str, str]) -> None:
    """What `azd provision` does in Azure: the chain's queues and the ledger container."""
    from shared.queues import Storage
    from shared.settings import Settings

    Storage(Settings.from_env(env)).ensure()


def _send_invalid(env: dict[str, str]) -> None:
    from shared.queues import REQUESTS, Storage
    from shared.settings import Settings

    bad = {"requestId": "hr-1004", "userPrincipalName": "someone@contoso.com", "mailboxType": "Castle"}
    Storage(Settings.from_env(env)).send(REQUESTS, json.dumps(bad))
    print(json.dumps(bad))


def _print_results(env: dict[str, str]) -> None:
    print("$ exoprov results", flush=True)
    output = subprocess.run(EXOPROV + ["results"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    print(output.stdout, end="")
    results: list[dict[str, Any]] = sorted(
        (json.loads(line) for line in output.stdout.splitlines()), key=lambda r: r["requestId"]
    )
    print(f"\n{'request':<9}{'status':<11}{'mailbox':<18}{'primary address':<27}{'license removed':<17}error")
    for r in results:
        error = (r.get("error") or {}).get("code", "")
        print(
            f"{r['requestId']:<9}{r['status']:<11}{str(r['recipientTypeDetails'] or '-'):<18}"
            f"{str(r['primarySmtpAddress'] or '-'):<27}{'yes' if r['licenseRemoved'] else 'no':<17}{error}"
        )


if __name__ == "__main__":
    sys.exit(main())
