"""The deployment templates, checked structurally (no Bicep compiler or Azure here): settings, queues,
keys, roles, secrets and the post-provision hook. README 'Deploy' says what only this verifies."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from shared.auth import GRAPH_APP_ROLES
from shared.queues import CHAIN_QUEUES, JOURNAL_CONTAINER, LEDGER_CONTAINER, POISON_QUEUES, RESULTS, UNREADABLE
from shared.settings import Settings
from tests.conftest import ROOT

INFRA = ROOT / "infra"
# Settings the app reads that the Azure deployment deliberately leaves unset, each for a reason.
NOT_SET_IN_AZURE = {
    "AzureWebJobsStorage": "the identity-based __ settings are used instead of a connection string",
    "AZURE_CLIENT_CERTIFICATE_PATH": "certificate auth is for job servers; Azure uses the managed identity",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD": "as above",
    "GRAPH_ENDPOINT": "the cloud's own endpoint is the default; overrides are for the sandbox",
    "EXCHANGE_ENDPOINT": "as above",
    "HTTP_CONNECT_TIMEOUT_SECONDS": "tuning knob with a production default",
    "HTTP_READ_TIMEOUT_SECONDS": "as above",
    "HTTP_MAX_RETRY_AFTER_SECONDS": "as above",
    "HTTP_MAX_ATTEMPTS": "as above",
    "HTTP_BACKOFF_SECONDS": "as above",
    "REPLICATION_WAIT_SECONDS": "as above",
    "LICENSE_WAIT_MINUTES": "as above",
    "WORKER_CONCURRENCY": "the standalone worker only; host.json governs the function app",
    "QUEUE_RETRY_SECONDS": "as above (host.json visibilityTimeout)",
    "WORKER_LEASE_SECONDS": "as above (the host holds a message for 10 minutes)",
}
HOST_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}
BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"


@cache
def bicep(name: str) -> dict[str, Any]:
    parsed: Any = BicepParser().parse(file_path=INFRA / name)
    assert isinstance(parsed, dict)
    return parsed


def app_settings() -> set[str]:
    """Every app setting the templates give the function app."""
    main = bicep("main.bicep")["modules"]["api"]["config"]["params"]["appSettings"]
    connection = bicep("app/api.bicep")["variables"]["connectionSettings"]["value"]
    return set(main) | set(connection)


class _Recorder(dict[str, str]):
    """An empty environment that remembers every name the settings loader asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return default


def settings_the_app_reads() -> set[str]:
    recorder = _Recorder()
    Settings.from_env(recorder)
    return recorder.asked


def test_every_setting_the_app_reads_is_set_or_deliberately_left_out() -> None:
    """Each setting in SETTINGS is an app setting in Azure, or on the short list of reasoned exceptions."""
    read = settings_the_app_reads()
    assert set(NOT_SET_IN_AZURE) <= read, "an exception names a setting the app no longer reads"
    assert read - set(NOT_SET_IN_AZURE) <= app_settings()


def test_every_app_setting_is_one_the_app_or_the_host_reads() -> None:
    """No stray settings: each one the templates set is read by the app or by the Functions host."""
    assert app_settings() - HOST_SETTINGS <= settings_the_app_reads()


def test_the_sweep_is_deployed_in_report_mode() -> None:
    """ENFORCE_MODE defaults to report in the template and in the azd parameter mapping."""
    parameters = bicep("main.bicep")["parameters"]
    assert parameters["enforceMode"]["default"] == "report"
    mapping = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert mapping["enforceMode"]["value"] == "${ENFORCE_MODE=report}"


def test_every_queue_and_the_ledger_and_journal_containers_are_created() -> None:
    """The storage account gets every queue the app uses, the ledger container and the journal container."""
    params = bicep("main.bicep")["modules"]["storage"]["config"]["params"]
    assert set(bicep("main.bicep")["variables"]["queueNames"]["value"]) == {
        *CHAIN_QUEUES,
        *POISON_QUEUES,
        RESULTS,
        UNREADABLE,
    }
    assert params["queueServices"]["queues"]["loop_type"]["detail"]["array_name"] == "queueNames"
    assert {"name": LEDGER_CONTAINER} in params["blobServices"]["containers"]
    assert {"name": JOURNAL_CONTAINER} in params["blobServices"]["containers"]


def test_no_shared_key_and_no_local_auth_anywhere() -> None:
    """Shared keys are off on storage, local auth off on Application Insights; every connection uses the identity."""
    main = bicep("main.bicep")["modules"]
    assert main["storage"]["config"]["params"]["allowSharedKeyAccess"] is False
    assert main["monitoring"]["config"]["params"]["disableLocalAuth"] is True
    connection = bicep("app/api.bicep")["variables"]["connectionSettings"]["value"]
    assert connection["AzureWebJobsStorage__credential"] == "managedidentity"
    assert connection["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert {"AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage__queueServiceUri"} <= set(connection)


def test_the_app_runs_python_3_11_on_flex_with_only_the_user_assigned_identity() -> None:
    """Flex Consumption, Python 3.11, the user-assigned identity and no system identity."""
    assert bicep("main.bicep")["modules"]["plan"]["config"]["params"]["sku"] == {
        "name": "FC1",
        "tier": "FlexConsumption",
    }
    site = bicep("app/api.bicep")["modules"]["site"]["config"]["params"]
    assert site["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.11"}
    assert site["managedIdentities"] == {"systemAssigned": False, "userAssignedResourceIds": ["identityId"]}
    assert site["functionAppConfig"]["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"


def role_assignments() -> Iterator[dict[str, Any]]:
    for resource in bicep("app/rbac.bicep")["resources"].values():
        if resource["type"] == "Microsoft.Authorization/roleAssignments":
            yield resource["config"]


def test_the_identity_has_exactly_the_listed_azure_roles() -> None:
    """Blob Data Owner, Queue Data Contributor, Monitoring Metrics Publisher: no more, named with guid()."""
    variables = bicep("app/rbac.bicep")["variables"]
    roles = {
        variables[c["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]]["value"]
        for c in role_assignments()
    }
    assert roles == {BLOB_DATA_OWNER, QUEUE_DATA_CONTRIBUTOR, MONITORING_METRICS_PUBLISHER}
    for config in role_assignments():
        assert config["name"]["function"]["type"] == "guid"
        assert config["properties"]["principalType"] == "ServicePrincipal"
        assert config["properties"]["principalId"] == "principalId"


def test_the_identity_has_exactly_the_listed_app_roles() -> None:
    """The Graph roles of the graphRoles list and Exchange.ManageAsApp, each resolved by name: no more."""
    permissions = bicep("app/permissions.bicep")
    grants = {n: r for n, r in permissions["resources"].items() if r["type"] == "Microsoft.Graph/appRoleAssignedTo"}
    assert set(grants) == {"graphGrants", "exchangeGrant"}
    assert grants["graphGrants"]["config"]["loop_type"]["detail"]["array_name"] == "graphRoles"
    assert "'Exchange.ManageAsApp'" in (INFRA / "app" / "permissions.bicep").read_text()
    apps = {r["config"]["appId"] for r in permissions["resources"].values() if r["existing"]}
    assert apps == {"00000003-0000-0000-c000-000000000000", "00000002-0000-0ff1-ce00-000000000000"}


def test_the_bicep_grants_exactly_the_graph_roles_the_code_needs() -> None:
    """permissions.bicep's graphRoles is GRAPH_APP_ROLES, in the same order (Bicep cannot import it)."""
    assert bicep("app/permissions.bicep")["variables"]["graphRoles"]["value"] == list(GRAPH_APP_ROLES)


def readme_section(title: str) -> str:
    """The text of one `## ` section of the README, without its heading."""
    sections = re.split(r"^## ", (ROOT / "README.md").read_text(), flags=re.M)
    (section,) = [s for s in sections if s.startswith(f"{title}\n")]
    return section


def test_the_readme_lists_exactly_the_graph_roles_the_code_needs() -> None:
    """The table of 'Identity and permissions' is GRAPH_APP_ROLES in order; 'Deploy to Azure' names the same roles."""
    table = re.findall(r"^\| `([^`]+)` \|", readme_section("Identity and permissions"), flags=re.M)
    assert table == list(GRAPH_APP_ROLES)
    graph_role = r"`((?:User|LicenseAssignment|Organization|Directory|GroupMember|OrgContact)\.\w+\.All)`"
    assert set(re.findall(graph_role, readme_section("Deploy to Azure"))) == set(GRAPH_APP_ROLES)


SECRET_PATTERNS = [
    re.compile(r"AccountKey\s*=", re.I),
    re.compile(r"SharedAccessSignature|sig=[A-Za-z0-9%]{20,}", re.I),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    re.compile(r"(client_?secret|password)\s*[:=]\s*['\"][^'\"]+['\"]", re.I),
    re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{60,}={0,2}(?![A-Za-z0-9+/])"),
]


def deployable_files() -> list[Path]:
    files = [p for p in INFRA.rglob("*") if p.is_file()]
    return files + [ROOT / name for name in ("azure.yaml", "host.json", "local.settings.example.json", ".funcignore")]


@pytest.mark.parametrize("path", deployable_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_secret_in_templates_or_settings_files(path: Path) -> None:
    """No key, connection string with a key, SAS, private key, token or password appears in a deployable file."""
    text = path.read_text()
    for pattern in SECRET_PATTERNS:
        assert not pattern.search(text), f"{pattern.pattern} matches in {path.name}"


def test_azd_runs_the_hook_after_provisioning() -> None:
    """azure.yaml wires the post-provision hook on both shells, and deploys the repository root as a function."""
    text = (ROOT / "azure.yaml").read_text()
    assert "host: function" in text and "project: ." in text
    assert "run: ./infra/hooks/postprovision.sh" in text and "run: ./infra/hooks/postprovision.ps1" in text


@pytest.fixture
def fake_az(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """An `az` on PATH that answers the hook's Graph calls and records them (no Azure CLI or tenant here)."""
    log = tmp_path / "az.log"
    script = tmp_path / "az"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        'case "$*" in\n'
        '  *roleDefinitions*) echo "role-exchange-admin" ;;\n'
        '  *"--method GET"*roleAssignments*) cat "$FAKE_AZ_EXISTING" ;;\n'
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    yield script, log


def run_hook(fake_az: tuple[Path, Path], existing: str, **env: str) -> subprocess.CompletedProcess[str]:
    script, log = fake_az
    count = script.parent / "existing"
    count.write_text(existing)
    environment = {
        **os.environ,
        "PATH": f"{script.parent}:{os.environ['PATH']}",
        "FAKE_AZ_EXISTING": str(count),
        "EXOPROV_IDENTITY_PRINCIPAL_ID": "11111111-2222-3333-4444-555555555555",
        **env,
    }
    return subprocess.run(
        ["sh", str(INFRA / "hooks" / "postprovision.sh")], env=environment, capture_output=True, text=True, check=False
    )


def test_the_hook_assigns_the_exchange_role_once(fake_az) -> None:
    """Without the role, the hook looks it up by name and assigns it to the identity at directory scope."""
    result = run_hook(fake_az, "0")
    assert result.returncode == 0, result.stderr
    calls = fake_az[1].read_text().splitlines()
    (post,) = [c for c in calls if "--method POST" in c]
    assert '"roleDefinitionId": "role-exchange-admin"' in post and '"directoryScopeId": "/"' in post
    assert "11111111-2222-3333-4444-555555555555" in post


def test_the_hook_is_idempotent(fake_az) -> None:
    """With the role already assigned, the hook changes nothing and says so."""
    result = run_hook(fake_az, "1")
    assert result.returncode == 0 and "nothing to do" in result.stdout
    assert not [c for c in fake_az[1].read_text().splitlines() if "--method POST" in c]


def test_the_scoped_option_assigns_no_directory_role(fake_az) -> None:
    """EXOPROV_EXCHANGE_ROLE=scoped points to the Exchange RBAC script and calls nothing."""
    result = run_hook(fake_az, "0", EXOPROV_EXCHANGE_ROLE="scoped")
    assert result.returncode == 0 and "exchange-rbac.ps1" in result.stdout
    assert not fake_az[1].exists()


def test_the_function_package_leaves_development_files_out() -> None:
    """.funcignore keeps the sandbox, tests, node_modules and infra out, and the app itself in."""
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".funcignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"sandbox", "tests", "node_modules", ".venv", "infra", "bench"} <= ignored
    assert not ignored & {"shared", "functions", "function_app.py", "host.json", "requirements.txt"}


def test_the_hr_system_may_only_send_requests_and_take_results() -> None:
    """The HR principal gets Message Sender on provision-requests and Message Processor on provision-results only."""
    module = bicep("main.bicep")["modules"]["hrAccess"]["config"]
    condition = module["condition"]["operator"]  # granted only when EXOPROV_HR_PRINCIPAL_ID is set
    assert condition["type"] == "not" and "hrPrincipalId" in str(condition["operands"])
    hr = bicep("app/hr-access.bicep")
    queues = {name: r["config"]["name"] for name, r in hr["resources"].items() if r["type"].endswith("/queues")}
    assert queues == {"requests": "provision-requests", "results": "provision-results"}
    variables = hr["variables"]
    grants = {
        (
            r["config"]["scope"],
            variables[r["config"]["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]][
                "value"
            ],
        )
        for r in hr["resources"].values()
        if r["type"] == "Microsoft.Authorization/roleAssignments"
    }
    assert grants == {
        ("requests", "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"),  # Storage Queue Data Message Sender
        ("results", "8a0f0c08-91a1-4084-bc3d-661d67233fed"),  # Storage Queue Data Message Processor
    }
