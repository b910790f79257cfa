"""The readiness report as a terminal table: the verdict, one line per check, and the objects of failing checks."""

from __future__ import annotations

import textwrap
from typing import Any

__all__ = ["format_table"]

OBJECTS_SHOWN = 5  # per failing or warning check; --json, --html and --csv give them all
ADVICE_WIDTH = 100


def format_table(document: dict[str, Any]) -> str:
    """Plain text for a person at a terminal, drawn from the JSON document."""
    summary = document["summary"]
    verdict = "READY" if document["ready"] else "NOT READY"
    lines = [
        f"Readiness of tenant {document['tenantId']} at {document['generatedAt']}",
        f"{verdict}: {summary['fail']} fail, {summary['warn']} warn, {summary['manual']} manual, "
        f"{summary['pass']} pass",
        "",
    ]
    width = max(len(check["id"]) for check in document["checks"])
    lines.append(f"{'STATUS':<7} {'CHECK':<{width}} {'COUNT':>6}")
    for check in document["checks"]:
        lines.append(f"{check['status'].upper():<7} {check['id']:<{width}} {check['count']:>6}")
    for check in document["checks"]:
        if check["status"] == "pass":
            continue
        lines += ["", f"{check['status'].upper()} {check['id']}: {check['title']}"]
        if check.get("error"):
            lines.append(f"  could not be read: {check['error']}")
        lines += textwrap.wrap(check["advice"], ADVICE_WIDTH, initial_indent="  ", subsequent_indent="  ")
        for finding in check["objects"][:OBJECTS_SHOWN]:
            lines.append(f"  - {finding['name']} ({finding['kind']}): {finding['detail']}")
        if check["count"] > OBJECTS_SHOWN:
            lines.append(f"  ... and {check['count'] - OBJECTS_SHOWN} more (--json, --html or --csv list them all)")
    cost = document.get("requests") or {}
    if cost:
        lines += [
            "",
            "Read with " + ", ".join(f"{count} {service} requests" for service, count in sorted(cost.items())),
        ]
    return "\n".join(lines)
