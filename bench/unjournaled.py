"""The sweep exactly as `exoprov sweep --apply --json` runs it, but without a journal: no entries, no storage.

Only the benchmark uses it: the difference to the journaled sweep is everything the journal costs (building
entries, JSON, appends to storage, settling earlier runs first).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from shared.enforcement import sweep
from shared.journal import Entry, Session, new_run_id
from shared.settings import Settings
from shared.wiring import Clients

_NOTHING = Entry("-", "", "", "", "", None, None)


class _NoJournal(Session):
    """A session that records nothing and costs nothing."""

    def entry(self, action: str, target_id: str, target: str, before: Any, after: Any) -> Entry:
        return _NOTHING

    def intend(self, entries: Iterable[Entry]) -> None:
        pass

    def record(self, entry_id: str, outcome: str, error: str | None = None) -> None:
        pass

    def withdraw(self, entry_ids: Iterable[str]) -> None:
        pass


def main() -> int:
    settings = Settings.from_env()
    clients = Clients.from_settings(settings)
    run_id = new_run_id()
    session = _NoJournal(None, f"runs/{run_id}.jsonl", "sweep", {"runId": run_id}, {})
    report = sweep(clients.exchange(), settings, apply=True, session=session)
    print(json.dumps(report.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
