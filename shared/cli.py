"""The `exoprov` command: sweep, undo, journal, readiness, doctor, worker, submit, results, sandbox (see the README)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from shared import logs
from shared.errors import ConfigurationError, ExoprovError

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.enforcement import Report

__all__ = ["format_kind", "format_report", "format_undo", "main"]

EXIT_OK, EXIT_FAILED, EXIT_BRAKE, EXIT_NOT_READY, EXIT_INTERRUPTED = 0, 1, 2, 4, 130
CANDIDATES_SHOWN = 20  # a table lists this many candidates; --json gives all (--csv: every mailbox candidate)


SETTINGS_HELP = {
    "sweep": "EXCHANGE_ENDPOINT, GRAPH_ENDPOINT, CLOUD, AZURE_*, ENFORCE_MODE, ENFORCE_OBJECTS, "
    "ENFORCE_MAIL_ENABLED_GROUPS, ENFORCE_MAX_CHANGES, ENFORCE_RECIPIENT_TYPES, ENFORCE_EXCLUDE, "
    "ENFORCE_CONCURRENCY, ENFORCE_TIME_BUDGET_SECONDS, HTTP_*, AzureWebJobsStorage (the journal; "
    "not needed with --report)",
    "doctor": "every setting (it checks them all)",
    "worker": "AzureWebJobsStorage, ALLOWED_LICENSES, DEFAULT_*, *_WAIT_MINUTES, POLL_*, REPLICATION_WAIT_SECONDS, "
    "WORKER_*, QUEUE_RETRY_SECONDS, ENFORCE_SCHEDULE and the sweep's settings, READINESS_SCHEDULE, HTTP_*",
    "submit": "AzureWebJobsStorage, ALLOWED_LICENSES, DEFAULT_LICENSE",
    "results": "AzureWebJobsStorage",
    "undo": "the sweep's settings (ENFORCE_EXCLUDE and ENFORCE_MAX_CHANGES apply), AzureWebJobsStorage",
    "journal": "AzureWebJobsStorage",
    "readiness": "EXCHANGE_ENDPOINT, GRAPH_ENDPOINT, CLOUD, AZURE_*, ENFORCE_RECIPIENT_TYPES, ENFORCE_EXCLUDE, HTTP_*",
}
EXIT_HELP = {
    "sweep": "0 nothing failed; 1 a write failed, a kind could not be read, or a setting is wrong (whatever else "
    "happened); 2 the brake engaged for a kind (none of that kind changed); "
    "130 interrupted (the report says what was done)",
    "doctor": "0 every check passed; 1 a check failed (each says how to fix it)",
    "worker": "0 stopped, or idle with --until-idle; 1 a setting is wrong; 3 --timeout ran out with work left",
    "submit": "0 queued (prints the requestId); 1 refused (names the field) or storage unreachable",
    "results": "0 done; 1 storage unreachable",
    "undo": "0 nothing failed; 1 a write failed, a group stays converted because of its cloud members, the run is "
    "unknown or unsettled, or a setting is wrong; 2 the brake engaged (nothing changed); 130 interrupted (the "
    "report says what was done)",
    "journal": "0 done (also when nothing matches); 1 storage unreachable or a malformed --run",
    "readiness": "0 ready (no check fails, every check could be read); 1 a setting is wrong or the report could "
    "not be written; 4 not ready",
}
EXIT_ALWAYS = "for every command, 2 before anything runs when the command line is wrong, and 130 on Ctrl-C"
JOURNAL_DEFAULT_HOURS = 24


def _seconds(text: str) -> float:
    """A command-line duration: a finite number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number of seconds, 0 or more")
    return value


def _moment(text: str) -> datetime:
    """A command-line point in time: ISO 8601, UTC unless it says otherwise."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time such as 2026-11-29T08:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exoprov",
        description="Exchange Online provisioning and cloud-management enforcement for hybrid-identity tenants.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log every call to stderr"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every call to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=f"exit codes: {EXIT_HELP[name]}; {EXIT_ALWAYS}\nsettings read: {SETTINGS_HELP[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[verbose],
        )

    sweep = command("sweep", "make dir-synced mailboxes (and groups, contacts: ENFORCE_OBJECTS) cloud-managed, once")
    mode = sweep.add_mutually_exclusive_group()
    mode.add_argument(
        "--apply",
        action="store_const",
        const="apply",
        dest="mode",
        help="change mailboxes (default: ENFORCE_MODE, which defaults to report)",
    )
    mode.add_argument(
        "--report",
        action="store_const",
        const="report",
        dest="mode",
        help="change nothing, only report what would change",
    )
    sweep.add_argument("--json", action="store_true", help="print the report as JSON")
    sweep.add_argument("--csv", metavar="FILE", help="also write every mailbox candidate to FILE (identity, UPN, type)")

    undo = command("undo", "set back what one sweep (or undo) run changed, from the journal")
    undo.add_argument("--run", required=True, metavar="ID", help="the runId of the run to take back")
    undo.add_argument("--apply", action="store_true", help="change mailboxes (default: only report the plan)")
    undo.add_argument("--json", action="store_true", help="print the report as JSON")

    journal = command("journal", "list the writes exoprov made (the change journal)")
    which = journal.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="ID", help="the writes of one sweep or undo run")
    which.add_argument("--request", metavar="ID", help="the writes of one provisioning request")
    which.add_argument(
        "--since",
        type=_moment,
        metavar="ISO",
        help=f"every write since then (default: the last {JOURNAL_DEFAULT_HOURS} hours)",
    )
    journal.add_argument("--json", action="store_true", help="print JSON lines, one entry each")

    readiness = command("readiness", "report what still ties the tenant to on-premises Exchange (reads only)")
    readiness.add_argument("--json", action="store_true", help="print the report as JSON")
    readiness.add_argument("--html", metavar="FILE", help="also write the report as one self-contained HTML page")
    readiness.add_argument("--csv", metavar="DIR", help="also write one CSV file per check into DIR")

    command("doctor", "check settings, identity, permissions and reachability")

    worker = command("worker", "process the provisioning queues; run the sweep and the readiness report on schedule")
    worker.add_argument(
        "--until-idle",
        action="store_true",
        help="exit 0 once every queue of the chain (delayed messages included) is empty",
    )
    worker.add_argument("--timeout", type=_seconds, metavar="S", help="give up after S seconds (exit 3)")
    worker.add_argument("--no-sweep", action="store_true", help="do not run the sweep on ENFORCE_SCHEDULE")
    worker.add_argument(
        "--no-readiness", action="store_true", help="do not write the readiness report on READINESS_SCHEDULE"
    )

    submit = command("submit", "validate one provisioning request and put it on the queue")
    source = submit.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", metavar="F", help="a JSON request (docs/contracts.md); - reads standard input")
    source.add_argument("--upn", metavar="U", help="the user principal name")
    submit.add_argument("--type", dest="mailbox_type", choices=["User", "Shared", "Room", "Equipment"])
    submit.add_argument("--license", metavar="L", help="SKU part number or skuId (default: DEFAULT_LICENSE)")
    submit.add_argument("--usage-location", metavar="CC", help="ISO 3166 alpha-2, used if the user has none")
    submit.add_argument("--keep-license", action="store_true", help="keep the license on a Shared/Room/Equipment")
    submit.add_argument("--no-cloud-managed", action="store_true", help="do not set IsExchangeCloudManaged")
    submit.add_argument("--request-id", metavar="ID", help="default: a new one")

    results = command("results", "print (and take) result messages as JSON lines")
    results.add_argument("--wait", type=_seconds, default=0.0, metavar="S", help="keep reading for S seconds")

    # Its options belong to sandbox.main; they are passed through untouched.
    commands.add_parser("sandbox", help="run the sandbox tenant on loopback (--help for its options)", add_help=False)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("exoprov")
    except PackageNotFoundError:
        return "(source checkout)"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = 0
    while verbose < len(argv) and argv[verbose] in ("-v", "--verbose"):
        verbose += 1
    if argv[verbose : verbose + 1] == ["sandbox"]:
        # The sandbox parses its own options; a -v in front of it means its --verbose.
        return _sandbox(argv[verbose + 1 :] + (["--verbose"] if verbose else []))
    args = build_parser().parse_args(argv)
    logs.configure(verbose=args.verbose)
    try:
        if args.command == "sweep":
            return _sweep(args.mode, args.json, args.csv)
        if args.command == "undo":
            return _undo(args.run, args.apply, args.json)
        if args.command == "journal":
            return _journal(args)
        if args.command == "readiness":
            return _readiness(args.json, args.html, args.csv)
        if args.command == "doctor":
            from shared.doctor import run_doctor

            return run_doctor(sys.stdout)
        if args.command == "worker":
            return _worker(args.until_idle, args.timeout, not args.no_sweep, not args.no_readiness)
        if args.command == "submit":
            return _submit(args)
        if args.command == "results":
            return _results(args.wait)
    except ExoprovError as exc:
        print(f"exoprov {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        if not type(exc).__module__.startswith("azure."):
            raise
        from shared.queues import storage_failure
        from shared.settings import Settings

        print(f"exoprov {args.command}: {storage_failure(exc, Settings.from_env())}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"exoprov {args.command}: interrupted", file=sys.stderr)
        return 130
    raise AssertionError(args.command)


def _sweep(mode: str | None, as_json: bool, csv_path: str | None) -> int:
    from shared.runs import run_sweep
    from shared.settings import Settings
    from shared.wiring import Clients

    settings = Settings.from_env()
    clients = Clients.from_settings(settings)
    apply = (mode or settings.enforce_mode) == "apply"
    report = _cancellable(
        "sweep", lambda cancel: run_sweep(clients, apply=apply, progress=_Progress(sys.stderr), cancel=cancel)
    )
    if csv_path:
        _write_candidates(csv_path, report.candidate_list)
    print(json.dumps(report.to_json(), indent=2) if as_json else format_report(report.to_json()))
    return _exit_code(report)


def _readiness(as_json: bool, html_path: str | None, csv_dir: str | None) -> int:
    from pathlib import Path

    from shared.readiness import build_report
    from shared.readiness.csv_export import write_csv
    from shared.readiness.html import render_html
    from shared.readiness.table import format_table
    from shared.settings import Settings
    from shared.wiring import Clients

    clients = Clients.from_settings(Settings.from_env())
    print("reading the tenant (listings and batches only; nothing is changed) ...", file=sys.stderr)
    document = build_report(clients).to_json()
    written = []
    try:
        if html_path:
            Path(html_path).write_text(render_html(document), encoding="utf-8")
            written.append(html_path)
    except OSError as exc:
        raise ConfigurationError("--html", f"the page could not be written: {exc}") from exc
    try:
        if csv_dir:
            written += [str(path) for path in write_csv(document, Path(csv_dir))]
    except OSError as exc:
        raise ConfigurationError("--csv", f"the CSV files could not be written: {exc}") from exc
    print(json.dumps(document, indent=2) if as_json else format_table(document))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK if document["ready"] else EXIT_NOT_READY


def _undo(run_id: str, apply: bool, as_json: bool) -> int:
    from shared.runs import run_undo
    from shared.settings import Settings
    from shared.wiring import Clients

    clients = Clients.from_settings(Settings.from_env())
    report = _cancellable(
        "undo", lambda cancel: run_undo(clients, run_id, apply=apply, progress=_Progress(sys.stderr), cancel=cancel)
    )
    print(json.dumps(report.to_json(), indent=2) if as_json else format_undo(report.to_json()))
    return _exit_code(report)


def _cancellable(name: str, run: Callable[[threading.Event], Report]) -> Report:
    """Run a sweep or undo with Ctrl-C wired to its cancel event (a second Ctrl-C aborts)."""
    import signal

    cancel = threading.Event()

    def stop_submitting(*_: object) -> None:
        # The first Ctrl-C lets the writes in flight finish and still prints the report; a second one aborts.
        print(f"exoprov {name}: stopping after the writes in flight (Ctrl-C again to abort)", file=sys.stderr)
        cancel.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, stop_submitting)
    try:
        return run(cancel)
    finally:
        signal.signal(signal.SIGINT, previous)


def _exit_code(report: Report) -> int:
    if report.interrupted:
        return EXIT_INTERRUPTED
    if report.broken:
        return EXIT_FAILED  # before the brake: one kind's brake must not hide another kind's failure
    return EXIT_BRAKE if report.braked else EXIT_OK


def _journal(args: argparse.Namespace) -> int:
    from shared.settings import Settings
    from shared.wiring import Clients

    journal = Clients.from_settings(Settings.from_env()).journal()
    if args.run:
        entries = journal.run_entries(args.run)
    elif args.request:
        entries = journal.request_entries(args.request)
    else:
        entries = journal.since(args.since or datetime.now(UTC) - timedelta(hours=JOURNAL_DEFAULT_HOURS))
    if args.json:
        for entry in entries:
            print(json.dumps(entry.to_json(), ensure_ascii=False))
    else:
        print(format_entries([entry.to_json() for entry in entries]))
    return EXIT_OK


def _write_candidates(path: str, candidates: list[dict[str, str]]) -> None:
    import csv

    try:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["identity", "userPrincipalName", "recipientTypeDetails"])
            writer.writeheader()
            writer.writerows(candidates)
    except OSError as exc:
        raise ConfigurationError("--csv", f"cannot write {path}: {exc.strerror}") from exc


def _worker(until_idle: bool, timeout: float | None, with_sweep: bool, with_readiness: bool) -> int:
    from shared.cron import Schedule
    from shared.runtime import run_scheduled_readiness, run_scheduled_sweep
    from shared.wiring import process_clients
    from shared.worker import Job, Worker, progress_line

    clients = process_clients()
    settings = clients.settings
    storage = clients.storage()
    storage.ensure()
    worker = Worker(
        storage,
        clients.dispatcher(),
        concurrency=settings.worker_concurrency,
        retry_seconds=settings.queue_retry_seconds,
        lease_seconds=settings.worker_lease_seconds,
        jobs=tuple(
            Job(name, Schedule.parse(schedule), run)
            for name, schedule, run, wanted in (
                ("sweep", settings.enforce_schedule, run_scheduled_sweep, with_sweep),
                ("readiness report", settings.readiness_schedule, run_scheduled_readiness, with_readiness),
            )
            if wanted
        ),
        progress=lambda handled, queued: print(progress_line(handled, queued), file=sys.stderr),
    )
    worker.install_signal_handlers()
    print(
        f"exoprov worker: {settings.worker_concurrency} at a time; sweep "
        f"{'on ' + settings.enforce_schedule + ' (UTC)' if with_sweep else 'off'}; readiness report "
        f"{'on ' + settings.readiness_schedule + ' (UTC)' if with_readiness else 'off'}; Ctrl-C stops",
        file=sys.stderr,
    )
    code = worker.run(until_idle=until_idle, timeout=timeout)
    print(f"exoprov worker: {worker.handled} message(s) handled", file=sys.stderr)
    return code


def _submit(args: argparse.Namespace) -> int:
    import uuid

    from shared.messages import parse_request
    from shared.queues import REQUESTS, Storage
    from shared.settings import Settings

    settings = Settings.from_env()
    if args.file:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            try:
                with open(args.file, encoding="utf-8-sig") as handle:
                    text = handle.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError("--file", f"cannot read {args.file}: {getattr(exc, 'strerror', exc)}") from exc
    else:
        body: dict[str, object] = {
            "requestId": args.request_id or f"cli-{uuid.uuid4().hex[:12]}",
            "userPrincipalName": args.upn,
        }
        optional = {"mailboxType": args.mailbox_type, "license": args.license, "usageLocation": args.usage_location}
        body.update({k: v for k, v in optional.items() if v})
        if args.keep_license:
            body["keepLicense"] = True
        if args.no_cloud_managed:
            body["cloudManaged"] = False
        text = json.dumps(body)
    request = parse_request(text, settings)  # refuse locally what the chain would refuse
    storage = Storage(settings)
    storage.ensure()
    storage.send(REQUESTS, text)
    print(request.request_id)
    return EXIT_OK


def _results(wait: float) -> int:
    from shared.queues import RESULTS, Storage
    from shared.settings import Settings

    storage = Storage(Settings.from_env())
    storage.ensure()
    queue = storage.queue(RESULTS)
    deadline = time.monotonic() + wait
    while True:
        messages = list(queue.receive_messages(max_messages=32, visibility_timeout=60))
        for message in messages:
            print(message.content, flush=True)
            queue.delete_message(message)
        if not messages:
            if time.monotonic() >= deadline:
                return EXIT_OK
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def _sandbox(argv: list[str]) -> int:
    try:
        from sandbox.main import main as sandbox_main
    except ImportError:
        print(
            "exoprov sandbox: the sandbox package is not installed here (it ships with the source "
            "checkout, not with the deployed app)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return sandbox_main(argv)


class _Progress:
    """Prints a progress line at most every few seconds, so long runs show they are alive."""

    def __init__(self, stream: TextIO, every: float = 2.0) -> None:
        self._stream = stream
        self._every = every
        self._started = self._last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self._every:
            return
        if done == total and now - self._started < self._every:
            return  # short runs need no progress line
        self._last = now
        percent = 100 * done // max(total, 1)
        self._stream.write(f"progress: {done}/{total} mailboxes ({percent}%), {now - self._started:.0f} s\n")
        self._stream.flush()


def format_entries(entries: list[dict[str, Any]]) -> str:
    """The journal as a table: one line per write, oldest first."""
    if not entries:
        return "no journal entries match"
    rows = [
        (
            e["time"][:19].replace("T", " "),
            e["runId"] or e["requestId"] or "-",
            e["action"],
            e["target"],
            f"{_value(e['before'])} -> {_value(e['after'])}",
            e["outcome"] + (f": {e['error']}" if e["error"] else ""),
        )
        for e in entries
    ]
    header = ("time (UTC)", "run or request", "action", "target", "change", "outcome")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(5)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[5]])
        for row in (header, *rows)
    ]
    return "\n".join(line.rstrip() for line in lines) + f"\n{len(entries)} entries"


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "-" if value is None else str(value)


def _brake(report: Mapping[str, Any]) -> str:
    return f"{'YES' if report['brakeEngaged'] else 'no'} (limit {report['maxChanges'] or 'none'})"


def _summary(heading: str, rows: list[tuple[str, object]], report: Mapping[str, Any]) -> list[str]:
    """A report's first lines: the heading, one aligned line per count, then its notes."""
    return [heading, *(f"  {name:<24}{value}" for name, value in rows), *(f"  note: {n}" for n in report["notes"])]


def format_undo(report: dict[str, Any]) -> str:
    """A readable table of an undo report."""
    rows = [
        ("changed by that run", report["changedByRun"]),
        ("changed since (left)", len(report["changedSince"])),
        ("excluded", report["excluded"]),
        ("to set back", report["candidates"]),
        ("set back", report["changed"]),
        ("failed", report["failed"]),
        ("outcome unknown", report["unknown"]),
        ("not attempted", report["notAttempted"]),
        ("brake engaged", _brake(report)),
        ("complete", "yes" if report["complete"] else "no"),
    ]
    lines = _summary(f"exoprov undo of {report['undoes']} ({report['mode']} mode), run {report['runId']}", rows, report)
    for title, key, field_name in (
        ("to set back", "candidateList", "recipientTypeDetails"),
        ("changed since the run (left as they are)", "changedSince", "reason"),
        ("failures", "failures", "error"),
        ("outcome unknown", "unknowns", "error"),
    ):
        if report[key]:
            lines.append(f"  {title}:")
            lines += [
                f"    {item.get('userPrincipalName') or item['identity']}: {item[field_name]}" for item in report[key]
            ]
    for name in ("groups", "contacts"):
        if isinstance(report.get(name), dict):
            lines += format_kind(report[name])
    return "\n".join(lines)


def format_report(report: dict[str, object]) -> str:
    """A readable table of a sweep report."""
    tenant_default = report["tenantDefaultCloudManaged"]
    rows = [
        ("scanned", report["scanned"]),
        ("dir-synced", report["dirSynced"]),
        ("already cloud-managed", report["alreadyCloudManaged"]),
        ("out of scope (type)", report["outOfScope"]),
        ("excluded", report["excluded"]),
        ("candidates", report["candidates"]),
        ("changed", report["changed"]),
        ("failed", report["failed"]),
        ("outcome unknown", report["unknown"]),
        ("not attempted", report["notAttempted"]),
        ("brake engaged", _brake(report)),
        ("tenant default", {True: "on", False: "off", None: "unknown"}[tenant_default]),  # type: ignore[index]
        ("complete", "yes" if report["complete"] else "no"),
    ]
    heading = f"exoprov sweep ({report['mode']} mode), run {report['runId']}, in {report['durationSeconds']} s"
    objects: list[str] = report.get("objects") or ["mailboxes"]  # type: ignore[assignment]
    if "mailboxes" not in objects:
        rows = [("mailboxes", "not in ENFORCE_OBJECTS")]
    lines = _summary(heading, rows, report)
    lines += _mailbox_lists(report)
    for name in objects:
        if name != "mailboxes" and isinstance(report.get(name), dict):
            lines += format_kind(report[name])  # type: ignore[arg-type]
    return "\n".join(lines)


def format_kind(section: dict[str, Any]) -> list[str]:
    """The lines of one kind's section of a sweep or undo report (groups, contacts)."""
    undo = "changedByRun" in section
    title = f"  {section['kind']} (source of authority, Graph{'; a preview' if section.get('preview') else ''}):"
    if undo:
        rows: list[tuple[str, object]] = [
            ("changed by that run", section["changedByRun"]),
            ("changed since (left)", len(section["changedSince"])),
            ("blocked (cloud members)", len(section["blocked"])),
            ("excluded", section["excluded"]),
            ("held back", len(section["heldBackList"])),
            (
                "to set back",
                f"{section['candidates']} in {section['levels']} level(s), parents first"
                if section["kind"] == "groups"
                else section["candidates"],
            ),
            ("set back", section["changed"]),
        ]
    else:
        rows = [
            ("listed (synced)", section["scanned"]),
            ("already cloud-managed", section["alreadyCloudManaged"]),
            ("left alone (scope)", section["outOfScope"]),
            ("excluded", section["excluded"]),
            ("held back", section["heldBack"]),
            (
                "candidates",
                f"{section['candidates']} in {section['levels']} level(s), children first"
                if section["kind"] == "groups"
                else section["candidates"],
            ),
            ("changed", section["changed"]),
        ]
    rows += [
        ("failed", section["failed"]),
        ("outcome unknown", section["unknown"]),
        ("not attempted", section["notAttempted"]),
        ("brake engaged", _brake(section)),
        ("complete", "yes" if section["complete"] else "no"),
        ("requests", section["requests"]),
    ]
    lines = [title, *(f"    {name:<24}{value}" for name, value in rows)]
    lines += [f"    error: {section['error']}"] if section.get("error") else []
    lines += [f"    note: {note}" for note in section["notes"]]
    shown: list[dict[str, Any]] = section["candidateList"][:CANDIDATES_SHOWN]
    if shown:
        more = (
            f" (the first {len(shown)} of {section['candidates']}; all: --json)"
            if len(shown) < section["candidates"]
            else ""
        )
        lines.append(f"    candidates{more}:")
        # Groups convert level by level (children first); a contact has no level worth showing.
        grouped = section["kind"] == "groups"
        lines += [
            _kind_line(item, f"{item['type']}, level {item['level']}" if grouped else item["type"]) for item in shown
        ]
    for key, title_text, detail in (
        ("heldBackList", "held back", "reason"),
        ("outOfScopeList", "left alone", "reason"),
        ("changedSince", "changed since the run (left as they are)", "reason"),
        ("blocked", "not set back: cloud-only members would be lost", "cloudOnlyMembers"),
        ("failures", "failures", "error"),
        ("unknowns", "outcome unknown (the next run settles them)", "error"),
    ):
        items = section.get(key) or []
        if items:
            lines.append(f"    {title_text}:")
            lines += [_kind_line(item, _value(item.get(detail))) for item in items[:CANDIDATES_SHOWN]]
            lines += (
                [f"      ... and {len(items) - CANDIDATES_SHOWN} more (--json)"]
                if len(items) > CANDIDATES_SHOWN
                else []
            )
    return lines


def _kind_line(item: Mapping[str, Any], detail: str) -> str:
    name = item.get("displayName") or item.get("identity") or item.get("id")
    mail = f" <{item['mail']}>" if item.get("mail") else ""
    return f"      {name}{mail}: {detail}"


def _mailbox_lists(report: dict[str, object]) -> list[str]:
    """The mailbox candidates (the first CANDIDATES_SHOWN), failures and unknowns of a sweep report."""
    lines: list[str] = []
    candidates: list[dict[str, str]] = report["candidateList"]  # type: ignore[assignment]
    if candidates:
        shown = candidates[:CANDIDATES_SHOWN]
        title = "candidates" if report["mode"] == "report" else "candidates of this run"
        more = (
            f" (the first {len(shown)} of {len(candidates)}; all: --json or --csv FILE)"
            if len(shown) < len(candidates)
            else ""
        )
        lines.append(f"  {title}{more}:")
        names = [c["userPrincipalName"] or c["identity"] for c in shown]
        width = max(len(name) for name in names)
        lines += [f"    {name:<{width}}  {c['recipientTypeDetails']}" for name, c in zip(names, shown, strict=True)]
    for title, key in (("failures", "failures"), ("outcome unknown (the next run settles them)", "unknowns")):
        entries = report[key]
        if entries:
            lines.append(f"  {title}:")
            lines += [f"    {f['identity']}: {f['error']}" for f in entries]  # type: ignore[attr-defined]
    return lines


if __name__ == "__main__":
    sys.exit(main())
