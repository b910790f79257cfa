"""Which Graph application roles the sandbox lets read subscribedSkus (Learn "List subscribedSkus", Permissions)."""

from __future__ import annotations

import pytest

from sandbox.tokens import DEFAULT_ROLES
from shared.auth import GRAPH_APP_ROLES
from shared.settings import Settings
from shared.wiring import Clients
from tests.conftest import SandboxHandle
from tests.test_contracts import GRAPH, Wire


def _skus_with(sandbox: SandboxHandle, settings: Settings, roles: list[str]) -> int:
    """The status of GET /subscribedSkus for an identity that holds exactly these Graph roles."""
    sandbox.knobs(roles={GRAPH: roles})
    wire = Wire(sandbox, Clients.from_settings(settings))  # a new identity client: no cached token
    return wire.send("GET", "/v1.0/subscribedSkus").status


@pytest.mark.parametrize(
    "role",
    [
        "LicenseAssignment.Read.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
        "Organization.Read.All",
        "Organization.ReadWrite.All",
    ],
)
def test_subscribed_skus_answer_to_each_role_graph_documents(
    sandbox: SandboxHandle, settings: Settings, role: str
) -> None:
    """The least privileged LicenseAssignment.Read.All and each higher role Graph lists read subscribedSkus."""
    assert _skus_with(sandbox, settings, [role]) == 200


def test_the_license_write_role_alone_cannot_read_subscribed_skus(sandbox: SandboxHandle, settings: Settings) -> None:
    """LicenseAssignment.ReadWrite.All is not among subscribedSkus' roles, which is why the Read role is granted too."""
    assert _skus_with(sandbox, settings, ["LicenseAssignment.ReadWrite.All"]) == 403


def test_the_sandbox_identity_holds_the_subscribed_skus_role_the_app_is_granted() -> None:
    """The sandbox's default Graph roles include LicenseAssignment.Read.All, as GRAPH_APP_ROLES does."""
    assert "LicenseAssignment.Read.All" in GRAPH_APP_ROLES
    assert "LicenseAssignment.Read.All" in DEFAULT_ROLES[GRAPH]
    assert "Organization.Read.All" not in GRAPH_APP_ROLES
