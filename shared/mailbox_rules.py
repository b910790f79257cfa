"""What a mailbox record from Exchange means for its license: its archive, its size, the 50 GB rule.

The chain (removing a temporary license) and the readiness report (licenses a shared mailbox does not need)
both judge by these; docs/exchange-behaviour.md B25 gives the rule and its evidence.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RESOURCE_TYPES", "SHARED_LICENSE_FREE_BYTES", "has_archive", "size_bytes"]

SHARED_LICENSE_FREE_BYTES = 50 * 1024**3  # a shared mailbox needs no license below 50 GB
RESOURCE_TYPES = ("SharedMailbox", "RoomMailbox", "EquipmentMailbox")  # the mailboxes that may go unlicensed


def has_archive(box: dict[str, Any]) -> bool:
    """Whether the mailbox has an archive; on synced mailboxes ArchiveStatus can read None while one exists.

    Any of the properties saying so is enough: a license kept by mistake costs money, one removed by mistake data.
    """
    guid = str(box.get("ArchiveGuid") or "").strip("{}")
    return (
        guid.replace("0", "").replace("-", "") != ""
        or bool(box.get("ArchiveDatabase"))
        or box.get("ArchiveState") not in (None, "", "None")
        or box.get("ArchiveStatus") not in (None, "", "None")
    )


def size_bytes(total_item_size: Any) -> int | None:
    """The byte count Exchange prints in parentheses: "1.2 GB (1,288,490,188 bytes)"; None when there is none."""
    text = str(total_item_size or "")
    if "(" not in text:
        return None
    digits = text.rsplit("(", 1)[1].split("bytes")[0].replace(",", "").strip()
    return int(digits) if digits.isdigit() else None
