"""The alerts and the workbook (infra/app/monitoring.bicep), checked structurally with pycep: no Bicep compiler
or Azure here. Which fields their KQL reads is tests/test_events.py's part."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from shared.cron import Schedule
from tests.bicep import parse_bicep
from tests.conftest import ROOT

INFRA = ROOT / "infra"
# The API versions used, each a stable one verified in Azure/azure-rest-api-specs
# (specification/monitor/.../stable/2023-01-01/actionGroups_API.json, .../stable/2023-12-01/scheduledQueryRule_API.json,
# specification/applicationinsights/.../stable/2023-06-01/workbooks_API.json).
API_VERSIONS = {
    "Microsoft.Insights/actionGroups": "2023-01-01",
    "Microsoft.Insights/scheduledQueryRules": "2023-12-01",
    "Microsoft.Insights/workbooks": "2023-06-01",
}


def bicep(name: str) -> dict[str, Any]:
    return parse_bicep(INFRA / name)


def monitoring() -> dict[str, Any]:
    return bicep("app/monitoring.bicep")


def accessor(node: Any) -> tuple[str, str]:
    """`a.b` as pycep gives it, as ('a', 'b')."""
    operands = node["operator"]["operands"]
    assert node["operator"]["type"] == "property_accessor"
    return operands["operand_1"], operands["operand_2"]


def rules() -> dict[str, dict[str, Any]]:
    return {rule["name"]: rule for rule in monitoring()["variables"]["rules"]["value"]}


def test_main_deploys_the_module_on_the_application_insights_component_with_the_azd_values() -> None:
    """main.bicep calls the module with the component's name, the e-mail and the interval; azd maps both."""
    main = bicep("main.bicep")
    module = main["modules"]["operations"]
    assert module["detail"]["path"] == "./app/monitoring.bicep"
    params = module["config"]["params"]
    assert params["applicationInsightsName"]["operator"]["operands"]["operand_1"] == "monitoring"
    assert main["modules"]["monitoring"]["detail"]["full"].startswith("public:avm/res/insights/component:")
    assert (params["alertEmail"], params["sweepIntervalHours"]) == ("alertEmail", "sweepIntervalHours")
    assert main["parameters"]["alertEmail"]["default"] == ""
    assert (
        main["parameters"]["sweepIntervalHours"]["default"]
        == monitoring()["parameters"]["sweepIntervalHours"]["default"]
    )
    mapping = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert mapping["alertEmail"]["value"] == "${EXOPROV_ALERT_EMAIL=}"
    assert mapping["sweepIntervalHours"]["value"] == "${EXOPROV_SWEEP_INTERVAL_HOURS=4}"


def test_each_resource_uses_its_verified_stable_api_version() -> None:
    used = {r["type"]: r["api_version"] for r in monitoring()["resources"].values() if not r["existing"]}
    assert used == API_VERSIONS


def test_the_action_group_exists_only_with_an_address_and_e_mails_it() -> None:
    """No EXOPROV_ALERT_EMAIL: no action group (and no e-mail receiver); with one, one receiver for it."""
    group = monitoring()["resources"]["actionGroup"]["config"]
    assert group["condition"] == "notify"
    assert monitoring()["variables"]["notify"]["value"]["operator"]["type"] == "not"
    properties = group["config"]["properties"]
    assert group["config"]["location"] == "global" and len(properties["groupShortName"]) <= 12
    (receiver,) = properties["emailReceivers"]
    assert receiver["emailAddress"] == "alertEmail" and receiver["useCommonAlertSchema"] is True


def test_every_rule_is_a_log_alert_on_application_insights_that_tells_the_group_when_there_is_one() -> None:
    """The rules exist with or without an e-mail (visible in the portal); only their actions depend on it."""
    alerts = monitoring()["resources"]["alerts"]
    assert alerts["config"]["condition"] is None  # always created
    assert alerts["config"]["loop_type"]["detail"]["array_name"] == "rules"
    config = alerts["config"]["config"]
    assert config["kind"] == "LogAlert" and config["dependsOn"] == ["actionGroup"]
    properties = config["properties"]
    assert [accessor(scope) for scope in properties["scopes"]] == [("appInsights", "id")]
    assert properties["enabled"] is True
    (condition,) = properties["criteria"]["allOf"]
    assert condition["timeAggregation"] == "Count"
    assert accessor(condition["query"]) == ("rule", "query")
    actions = properties["actions"]["actionGroups"]["operator"]
    assert actions["type"] == "conditional" and actions["operands"]["condition"] == "notify"
    assert actions["operands"]["false_value"] == []
    (group_id,) = actions["operands"]["true_value"]
    reference = group_id["function"]
    assert reference["type"] == "resource_id"
    assert reference["parameters"]["resource_type"] == "Microsoft.Insights/actionGroups"
    assert reference["parameters"]["resource_name_1"] == "actionGroupName"
    assert monitoring()["resources"]["actionGroup"]["config"]["config"]["name"] == "actionGroupName"
    for rule in rules().values():
        assert set(rule) == {
            "name",
            "displayName",
            "description",
            "severity",
            "query",
            "operator",
            "threshold",
            "evaluationFrequency",
            "windowSize",
            "autoMitigate",
        }
        assert rule["operator"] in {"GreaterThan", "LessThan"} and 0 <= rule["severity"] <= 4
        assert rule["windowSize"] in ALLOWED_WINDOWS, rule["windowSize"]


# The window sizes a log alert accepts (the scheduledQueryRules API's list, as terraform-provider-azurerm's
# azurerm_monitor_scheduled_query_rules_alert_v2 documents it for window_duration).
ALLOWED_WINDOWS = {"PT1M", "PT5M", "PT10M", "PT15M", "PT30M", "PT45M", *(f"PT{h}H" for h in range(1, 7)), "P1D", "P2D"}


def test_the_four_alerts_of_the_issue_fire_on_what_they_say() -> None:
    """Failed or braked sweep, internal_error/permission_denied result, no sweep, journal write failure."""
    found = rules()
    sweep = found["sweep-failed"]["query"]
    assert all(term in sweep for term in ("e.error", "e.failed", "e.brakeEngaged", "e.complete"))
    assert '("internal_error", "permission_denied")' in found["request-failed"]["query"]
    assert (
        "tobool(e.write)" in found["journal-failed"]["query"] and "e.journalError" in found["journal-failed"]["query"]
    )
    for name in ("sweep-failed", "request-failed", "journal-failed"):
        assert (found[name]["operator"], found[name]["threshold"], found[name]["autoMitigate"]) == (
            "GreaterThan",
            0,
            False,
        )
        assert found[name]["windowSize"] == found[name]["evaluationFrequency"]  # each event counted once


def test_no_sweep_report_for_twice_the_interval_fires_on_an_empty_window() -> None:
    """Fewer than one sweep event in a window of 2 x sweepIntervalHours; it resolves itself when one comes."""
    rule = rules()["no-sweep"]
    assert (rule["operator"], rule["threshold"], rule["autoMitigate"]) == ("LessThan", 1, True)
    assert rule["windowSize"] == "P2D" and "ago(${2 * sweepIntervalHours}h)" in rule["query"]
    assert rule["evaluationFrequency"] == "PT1H"
    decorators = {d["type"]: d["argument"] for d in monitoring()["parameters"]["sweepIntervalHours"]["decorators"]}
    assert (decorators["min_value"], decorators["max_value"]) == (1, 24)  # a window of at most two days


def test_the_default_interval_is_the_default_schedules_longest_gap() -> None:
    """sweepIntervalHours' default is how far apart the default ENFORCE_SCHEDULE fires, at most (over a week)."""
    schedule = Schedule.parse(bicep("main.bicep")["parameters"]["enforceSchedule"]["default"])
    moment, gaps = datetime(2026, 1, 5), []
    while moment < datetime(2026, 1, 12):
        following = schedule.next_after(moment)
        gaps.append(following - moment)
        moment = following
    longest = max(gaps[1:])  # the first gap starts at an arbitrary moment
    assert longest == timedelta(hours=monitoring()["parameters"]["sweepIntervalHours"]["default"])
    assert bicep("main.bicep")["parameters"]["sweepIntervalHours"]["default"] == longest / timedelta(hours=1)


def test_the_workbook_is_shared_on_application_insights_and_every_panel_queries_it() -> None:
    """A shared workbook whose sourceId is the component, its content the serialized object of the template."""
    workbook = monitoring()["resources"]["workbook"]["config"]
    assert workbook["kind"] == "shared"
    properties = workbook["properties"]
    assert accessor(properties["sourceId"]) == ("appInsights", "id")
    assert properties["serializedData"]["function"] == {
        "type": "string",
        "parameters": {"value_to_convert": "workbookContent"},
    }
    content = monitoring()["variables"]["workbookContent"]["value"]
    assert content["version"] == "Notebook/1.0"
    assert [accessor(i) for i in content["fallbackResourceIds"]] == [("appInsights", "id")]
    static, mapped = content["items"]["function"]["parameters"].values()
    (time_range,) = next(i for i in static if i["type"] == 9)["content"]["parameters"]
    assert time_range["name"] == "TimeRange" and time_range["type"] == 4
    item = mapped["function"]["parameters"]["arg_2"]["detail"]["expression"]
    assert item["type"] == 3
    panel = item["content"]
    assert (panel["version"], panel["queryType"], panel["resourceType"]) == (
        "KqlItem/1.0",
        0,
        "microsoft.insights/components",
    )
    assert panel["timeContextFromParameter"] == "TimeRange"
    panels = {p["name"]: p for p in monitoring()["variables"]["panels"]["value"]}
    assert {"progress", "durations", "writes", "results", "slowest"} <= set(panels)
    assert "e.candidates" in panels["progress"]["query"] and panels["progress"]["visualization"] == "timechart"
    assert "e.durationSeconds" in panels["durations"]["query"]
    assert all(f"e.{f}" in panels["writes"]["query"] for f in ("changed", "failed", "unknown"))
    assert "bin(timestamp, 1d)" in panels["results"]["query"] and "e.code" in panels["results"]["query"]
    assert "top 20 by minutes desc" in panels["slowest"]["query"]


def test_the_readme_says_how_to_read_the_alerts_and_the_workbook() -> None:
    """README, at the end of "Deploy to Azure": the two azd values, each alert by name, and the workbook."""
    text = (ROOT / "README.md").read_text()
    deploy = text[text.index("\n## Deploy to Azure\n") : text.index("\n## Identity and permissions\n")]
    assert "\n### Alerts and the workbook\n" in deploy
    section = deploy[deploy.index("\n### Alerts and the workbook\n") :]
    assert "EXOPROV_ALERT_EMAIL" in section and "EXOPROV_SWEEP_INTERVAL_HOURS" in section
    assert "exoprov operations" in section and "Monitor > Alerts" in section
    for rule in ("a sweep failed or stopped on the brake", "internal_error or permission_denied"):
        assert rule in section
    assert "no sweep report" in section and "journal could not be written" in section
