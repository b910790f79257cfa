"""The readiness report: what still ties the tenant to on-premises Exchange management.

`build_report` reads the tenant (collect.py, read-only), runs the checks (checks.py) and returns a
ReadinessReport (model.py); html.py and csv_export.py draw it, publish.py stores it as blobs.
"""

from __future__ import annotations

from datetime import UTC, datetime

from shared.readiness.checks import SweepScope, run_checks, tally
from shared.readiness.collect import CONTACT_STATE_VERSION, Reader
from shared.readiness.model import ReadinessReport
from shared.wiring import Clients

__all__ = ["build_report"]


def build_report(clients: Clients) -> ReadinessReport:
    """Read the tenant once and answer every check; nothing is written to the tenant."""
    settings = clients.settings
    roles = frozenset(clients.tokens.get(settings.graph_resource).roles)
    beta = clients.directory(CONTACT_STATE_VERSION)
    reader = Reader(clients.exchange(), clients.graph(), clients.directory(), beta, roles)
    inventory = reader.read()
    scope = SweepScope(settings.enforce_recipient_types, settings.enforce_exclude)
    return ReadinessReport(
        generated_at=datetime.now(UTC).replace(microsecond=0),
        tenant_id=clients.tenant_id(),
        checks=run_checks(inventory, scope),
        inventory=tally(inventory),
        requests=reader.requests(),
    )
