"""The deployment templates, checked structurally (no Bicep compiler or Azure here): settings, queues,
keys, roles, secrets and the post-provision hook. README 'Deploy' says what only this verifies."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.auth import AUTHORITY_ROLES, GRAPH_APP_ROLES
from shared.queues import CHAIN_QUEUES, JOURNAL_CONTAINER, LEDGER_CONTAINER, POISON_QUEUES, RESULTS, UNREADABLE
from shared.settings import Settings
from tests.bicep import parse_bicep
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


def bicep(name: str) -> dict[str, Any]:
    return parse_bicep(INFRA / name)


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
    assert grants["graphGrants"]["config"]["loop_type"]["detail"]["array_name"] == "grantedGraphRoles"
    granted = permissions["variables"]["grantedGraphRoles"]["value"]["function"]["parameters"]
    assert granted == {"arg_1": "graphRoles", "arg_2": "authorityRoles"}
    assert "'Exchange.ManageAsApp'" in (INFRA / "app" / "permissions.bicep").read_text()
    apps = {r["config"]["appId"] for r in permissions["resources"].values() if r["existing"]}
    assert apps == {"00000003-0000-0000-c000-000000000000", "00000002-0000-0ff1-ce00-000000000000"}


def test_the_bicep_grants_exactly_the_graph_roles_the_code_needs() -> None:
    """permissions.bicep's graphRoles is GRAPH_APP_ROLES, in the same order (Bicep cannot import it)."""
    assert bicep("app/permissions.bicep")["variables"]["graphRoles"]["value"] == list(GRAPH_APP_ROLES)


def test_the_source_of_authority_roles_are_granted_only_for_the_kinds_enforced() -> None:
    """ENFORCE_OBJECTS reaches permissions.bicep, which adds each kind's AUTHORITY_ROLES entry only when listed."""
    permissions = bicep("app/permissions.bicep")
    conditions = permissions["variables"]["authorityRoles"]["value"]["function"]["parameters"].values()
    roles = {
        c["operator"]["operands"]["condition"]["function"]["parameters"]["item_to_find"]: c["operator"]["operands"]
        for c in conditions
    }
    assert {kind: (o["true_value"], o["false_value"]) for kind, o in roles.items()} == {
        kind: ([role], []) for kind, role in AUTHORITY_ROLES.items()
    }
    assert permissions["parameters"]["enforceObjects"]["default"] == "mailboxes"
    module = bicep("main.bicep")["modules"]["permissions"]["config"]["config"]
    assert module["params"]["enforceObjects"] == "enforceObjects"


def readme_section(title: str) -> str:
    """The text of one `## ` section of the README, without its heading."""
    sections = re.split(r"^## ", (ROOT / "README.md").read_text(), flags=re.M)
    (section,) = [s for s in sections if s.startswith(f"{title}\n")]
    return section


def test_the_readme_lists_exactly_the_graph_roles_the_code_needs() -> None:
    """The tables of 'Identity and permissions' are GRAPH_APP_ROLES then AUTHORITY_ROLES, in order; 'Deploy to
    Azure' names the same always-granted roles."""
    table = re.findall(r"^\| `([^`]+)` \|", readme_section("Identity and permissions"), flags=re.M)
    assert table == [*GRAPH_APP_ROLES, *AUTHORITY_ROLES.values()]
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


# -- issue 14: a deployment that works on the first `azd up` from any desk -------------------------------------


def azd_mapping() -> dict[str, str]:
    """Each template parameter's azd mapping in main.parameters.json, as its raw `${NAME=default}` text."""
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    return {name: entry["value"] for name, entry in parameters.items()}


def bicep_default(value: Any) -> str:
    """A Bicep default as azd writes it in a `${NAME=default}` mapping (azd converts bools and ints back)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_the_graph_grants_wait_for_the_function_app() -> None:
    """The permissions module depends on the site, so a brand-new identity has time to replicate in Entra ID."""
    module = bicep("main.bicep")["modules"]["permissions"]["config"]["config"]
    assert "api" in module["dependsOn"]
    assert module["params"]["principalId"]["operator"]["operands"]["operand_1"] == "identity"


def test_the_readme_makes_a_re_run_the_fix_for_the_first_run_race() -> None:
    """'Deploy to Azure' names the race's error, its issue, and `azd provision` again as the fix."""
    section = re.sub(r"\s+", " ", readme_section("Deploy to Azure"))
    assert "Not a valid reference update" in section and "msgraph-bicep-types#193" in section
    assert "run `azd provision` again" in section


def test_the_instance_cap_is_small_and_an_azd_parameter() -> None:
    """maximumInstanceCount defaults to 1 within Flex's 1-1000, reaches the site, and azd maps it."""
    parameter = bicep("main.bicep")["parameters"]["maximumInstanceCount"]
    decorators = {d["type"]: d["argument"] for d in parameter["decorators"]}
    assert parameter["default"] == 1 and decorators["min_value"] == 1 and decorators["max_value"] == 1000
    assert bicep("main.bicep")["modules"]["api"]["config"]["params"]["maximumInstanceCount"] == "maximumInstanceCount"
    site = bicep("app/api.bicep")["modules"]["site"]["config"]["params"]
    assert site["functionAppConfig"]["scaleAndConcurrency"]["maximumInstanceCount"] == "maximumInstanceCount"
    assert bicep("app/api.bicep")["parameters"]["maximumInstanceCount"]["default"] == 1
    assert azd_mapping()["maximumInstanceCount"] == "${EXOPROV_MAXIMUM_INSTANCE_COUNT=1}"


def test_no_comment_still_says_the_cap_is_for_the_app_or_at_least_40() -> None:
    """The old comment (a cap for the whole app, 40 the lowest Flex accepts) is gone from every template."""
    for path in INFRA.rglob("*.bicep"):
        text = path.read_text()
        assert "40 is the lowest" not in text and "int = 40" not in text, path.name


def exchange_ceiling(instances: int, concurrency: int) -> int:
    """The most Exchange calls in flight at once, over the functions that call Exchange as Flex scales them."""
    # name -> (instances of its scale group, calls per instance). A timer runs on one instance at a time; a queue
    # instance holds batchSize + newBatchThreshold messages, each making one Exchange call at a time; every Exchange
    # call of a process passes the ENFORCE_CONCURRENCY limit (shared/wiring.py), one worker process per instance.
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    per_queue_instance = min(concurrency, queues["batchSize"] + queues["newBatchThreshold"])
    groups = {
        "enforce (timer)": (1, concurrency),
        "readiness (timer)": (1, concurrency),
        "wait_for_mailbox (queue)": (instances, per_queue_instance),
        "configure_mailbox (queue)": (instances, per_queue_instance),
        "doctor (HTTP group)": (instances, concurrency),
    }
    return sum(count * calls for count, calls in groups.values())


def test_the_readme_states_the_exchange_ceiling_of_the_deployed_defaults() -> None:
    """'Deploy to Azure' gives the ceiling computed from host.json and the template's defaults, and its formula."""
    parameters = bicep("main.bicep")["parameters"]
    ceiling = exchange_ceiling(
        parameters["maximumInstanceCount"]["default"], int(parameters["enforceConcurrency"]["default"])
    )
    section = re.sub(r"\s+", " ", readme_section("Deploy to Azure"))
    assert f"**{ceiling}** with the defaults" in section
    assert "ENFORCE_CONCURRENCY × (2 + N) + 2 × N × min(ENFORCE_CONCURRENCY, 3)" in section
    assert exchange_ceiling(1, 1) == 5 and "(ceiling 5)" in section


def chain_calls(step: str, skip: frozenset[str] = frozenset()) -> set[str]:
    """Every `self.<name>` a Chain method reaches, through the Chain's own methods (those in `skip` not entered)."""
    text = (ROOT / "shared" / "provisioning.py").read_text()
    chain = text[text.index("\nclass Chain") :]
    bodies = {part.split("(", 1)[0]: part for part in chain[: chain.index("\n\n\ndef ")].split("\n    def ")[1:]}
    seen: set[str] = set()
    todo = [step]
    while todo:
        for called in re.findall(r"self\.(\w+)", bodies.get(todo.pop(), "")):
            if called not in seen:
                seen.add(called)
                todo += [] if called in skip else [called]
    return seen


def test_the_exchange_calling_functions_are_the_ones_the_ceiling_counts() -> None:
    """Of the chain's steps only mailbox and configure call Exchange; dispatch and the poison path never do."""
    exchange = {"exchange", "exchange_client"}
    assert exchange & chain_calls("mailbox") and exchange & chain_calls("configure")
    assert not exchange & chain_calls("accept")
    # license reaches Exchange only by settling the request's earlier Exchange writes, which only configure makes,
    # later in the chain: a license step never has one to settle.
    assert not exchange & chain_calls("license", skip=frozenset({"_settle_earlier"}))
    assert not re.search(r"\.exchange\b|exchange_client", (ROOT / "shared" / "dispatch.py").read_text())
    provision = (ROOT / "functions" / "provision.py").read_text()
    assert "def wait_for_mailbox(msg" in provision and "def configure_mailbox(msg" in provision


def test_azure_yaml_requires_an_azd_whose_bicep_knows_the_graph_extension() -> None:
    """azure.yaml asks for azd 1.12.0 or later, the first to bring Bicep 0.30.3+, for `extension microsoftGraphV1`."""
    text = (ROOT / "azure.yaml").read_text()
    assert re.search(r'^requiredVersions:\n  azd: ">= 1\.12\.0"$', text, flags=re.M)
    config = json.loads((INFRA / "bicepconfig.json").read_text())
    assert config["extensions"]["microsoftGraphV1"].startswith(
        "br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:"
    )
    assert "microsoftGraphV1" in bicep("app/permissions.bicep")["extensions"]


def test_the_graph_grants_can_be_skipped_by_a_deployer_without_entra_rights() -> None:
    """EXOPROV_SKIP_GRANTS (false by default) skips permissions.bicep, and EXOPROV_GRANTS_SKIPPED tells the hooks."""
    main = bicep("main.bicep")
    parameter = main["parameters"]["skipGraphGrants"]
    assert parameter["type"] == "bool" and parameter["default"] is False
    condition = main["modules"]["permissions"]["config"]["condition"]["operator"]
    assert condition == {"type": "not", "operands": {"bool_value": "skipGraphGrants"}}
    assert azd_mapping()["skipGraphGrants"] == "${EXOPROV_SKIP_GRANTS=false}"
    assert main["outputs"]["EXOPROV_GRANTS_SKIPPED"] == {"decorators": [], "type": "bool", "value": "skipGraphGrants"}


def test_only_the_skippable_module_declares_the_graph_extension() -> None:
    """No template but permissions.bicep declares the Graph extension, so skipping it leaves no Graph call."""
    declaring = {path.name for path in INFRA.rglob("*.bicep") if re.search(r"^extension ", path.read_text(), re.M)}
    assert declaring == {"permissions.bicep"}


def test_subscribed_skus_is_read_with_its_least_privileged_role() -> None:
    """LicenseAssignment.Read.All reads subscribedSkus; no Organization, Directory or User.ReadWrite role is granted."""
    assert "LicenseAssignment.Read.All" in GRAPH_APP_ROLES
    broad = {"Organization.Read.All", "Organization.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
    assert not broad & set(GRAPH_APP_ROLES) and "User.ReadWrite.All" not in GRAPH_APP_ROLES
    assert "Organization.Read.All" not in (INFRA / "app" / "permissions.bicep").read_text()


def test_site_config_keeps_tls_1_2_and_turns_ftp_off() -> None:
    """siteConfig replaces the module's defaults whole, so it sets minTlsVersion 1.2 and ftpsState Disabled itself."""
    site_config = bicep("app/api.bicep")["modules"]["site"]["config"]["params"]["siteConfig"]
    assert site_config == {"alwaysOn": False, "minTlsVersion": "1.2", "ftpsState": "Disabled"}


def test_storage_is_locally_redundant_and_defaults_to_entra_auth() -> None:
    """The storage account is Standard_LRS, not the module's GRS, and the portal defaults to Entra ID for its data."""
    params = bicep("main.bicep")["modules"]["storage"]["config"]["params"]
    assert params["skuName"] == "Standard_LRS"
    assert params["defaultToOAuthAuthentication"] is True and params["minimumTlsVersion"] == "TLS1_2"


def test_every_template_parameter_is_an_azd_variable_with_the_same_default() -> None:
    """Each parameter of main.bicep is mapped in main.parameters.json; an app setting's under its own name."""
    main = bicep("main.bicep")
    settings = main["modules"]["api"]["config"]["params"]["appSettings"].items()
    feeds = {value: setting for setting, value in settings if isinstance(value, str)}  # parameter -> setting
    mapping = azd_mapping()
    assert set(mapping) == set(main["parameters"])
    for name, parameter in main["parameters"].items():
        if name in {"environmentName", "location"}:
            continue
        match = re.fullmatch(r"\$\{(\w+)=(.*)\}", mapping[name])
        assert match, f"{name} has no azd default: {mapping[name]}"
        assert match.group(2) == bicep_default(parameter["default"]), name
        assert match.group(1) == feeds.get(name, match.group(1)), f"{name} feeds {feeds.get(name)}"
        assert name in feeds or match.group(1).startswith("EXOPROV_"), name


def test_the_readme_says_removed_app_settings_stay_on_the_app() -> None:
    """'Deploy to Azure' warns that an app setting dropped from the template stays, and how to delete it."""
    section = re.sub(r"\s+", " ", readme_section("Deploy to Azure"))
    assert "removed from the template **stays on the app**" in section
    assert "az functionapp config appsettings delete" in section
