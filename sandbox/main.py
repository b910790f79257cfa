"""Run the sandbox tenant on loopback: `exoprov sandbox` or `python -m sandbox`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.server import Sandbox, SandboxServer
from shared.settings import is_loopback_host


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="exoprov sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=_port, default=8765, help="port (0 picks a free one)")
    parser.add_argument("--seed", default="default", help="seed name in sandbox/seeds, or a JSON file")
    parser.add_argument("--knobs", default="{}", help="JSON object of knobs (latency, faults, limits)")
    parser.add_argument("--lifetime", type=float, default=0, help="stop after this many seconds (0: never)")
    parser.add_argument("--json", action="store_true", help="print one JSON line (url, pid, env) when ready")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not is_loopback_host(args.host):
        print(f"exoprov sandbox: refusing to listen on {args.host}; use a loopback address", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        knobs = json.loads(args.knobs)
        if not isinstance(knobs, dict):
            raise ValueError("--knobs must be a JSON object, e.g. '{\"latency\": 0.05}'")
        sandbox = Sandbox(args.seed, knobs)
    except json.JSONDecodeError as exc:
        print(f"exoprov sandbox: --knobs is not JSON ({exc.msg} at character {exc.pos})", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"exoprov sandbox: {exc}", file=sys.stderr)
        return 2
    try:
        server = SandboxServer(args.host, args.port, sandbox)
    except OSError as exc:
        print(f"exoprov sandbox: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    env = server.environment()
    if args.json:
        print(json.dumps({"url": server.url, "pid": os.getpid(), "env": env}), flush=True)
    else:
        print(f"sandbox tenant {sandbox.tenant.id} listening on {server.url} (Ctrl-C stops it)")
        print("point exoprov at it with:")
        for name, value in env.items():
            print(f"  export {name}={value}")
        sys.stdout.flush()
    stop.wait(args.lifetime or None)
    server.shutdown()
    server.server_close()
    return 0


@dataclass
class SandboxProcess:
    """A sandbox started as a child process on a free port; stopped by its pid (and by its lifetime)."""

    url: str
    env: dict[str, str]
    process: subprocess.Popen[str]

    @classmethod
    def start(cls, knobs: dict[str, Any] | None = None, seed: str = "default", lifetime: float = 900) -> SandboxProcess:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox",
                "--port",
                "0",
                "--json",
                "--lifetime",
                str(lifetime),
                "--seed",
                seed,
                "--knobs",
                json.dumps(knobs or {}),
            ],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            process.wait(timeout=10)
            raise RuntimeError(f"the sandbox did not start (exit code {process.returncode})")
        ready = json.loads(line)
        return cls(ready["url"], ready["env"], process)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        terminate(self.process)
        if self.process.stdout:
            self.process.stdout.close()


def terminate(process: subprocess.Popen[Any], *, group: bool = False) -> None:
    """Stop a child by its pid (or its process group): SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    kill = os.killpg if group else os.kill
    kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
