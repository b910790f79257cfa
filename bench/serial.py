"""The reference pipeline, over the same REST API: unfiltered listing, then one Set-Mailbox per candidate.

`Get-Mailbox -ResultSize Unlimited | Where {!$_.IsExchangeCloudManaged -and $_.IsDirSynced} | Set-Mailbox
-IsExchangeCloudManaged:$true` (exchange-behaviour.md B11), in series, honouring Retry-After (through the
same HTTP policy as exoprov). Prints one JSON object.
"""

from __future__ import annotations

import json
import time

from shared.exchange import Command
from shared.settings import Settings
from shared.wiring import Clients


def main() -> None:
    settings = Settings.from_env()
    exchange = Clients.from_settings(settings).exchange()
    started = time.monotonic()
    listing = Command(
        "Get-Mailbox",
        {"ResultSize": "Unlimited"},
        ("ExternalDirectoryObjectId", "IsDirSynced", "IsExchangeCloudManaged"),
    )
    mailboxes = [m for page in exchange.pages(listing) for m in page]
    candidates = [m for m in mailboxes if m.get("IsDirSynced") and not m.get("IsExchangeCloudManaged")]
    changed = 0
    for mailbox in candidates:
        exchange.invoke(
            Command("Set-Mailbox", {"Identity": mailbox["ExternalDirectoryObjectId"], "IsExchangeCloudManaged": True})
        )
        changed += 1
    print(
        json.dumps(
            {
                "durationSeconds": time.monotonic() - started,
                "scanned": len(mailboxes),
                "candidates": len(candidates),
                "changed": changed,
            }
        )
    )


if __name__ == "__main__":
    main()
