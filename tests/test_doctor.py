"""`exoprov doctor`'s structure: the declared checks, their order and dependencies, and the Graph roles it asks for.

What each check prints when it fails is pinned by tests/test_cli.py (and the exclusions by tests/test_hardening.py).
"""

from __future__ import annotations

import io

import pytest

from shared.auth import AUTHORITY_ROLES, GRAPH_APP_ROLES
from shared.doctor import CHECKS, CheckFailed, Doctor, DoctorCheck, Skipped, run_doctor

EXCHANGE = "https://outlook.office365.com"
GRAPH = "https://graph.microsoft.com"


def report(out: io.StringIO) -> list[tuple[str, str]]:
    """(status, check name) for each check line of a report, in order."""
    lines = out.getvalue().splitlines()[:-1]  # the last line is the summary
    return [(line[:4].strip(), line[6:30].rstrip()) for line in lines if not line.startswith("       fix: ")]


def passes(doctor: Doctor) -> str:
    return "fine"


def fails(doctor: Doctor) -> str:
    raise CheckFailed("broken", "mend it")


def does_not_apply(doctor: Doctor) -> str:
    raise Skipped("not here")


def test_every_check_needs_only_checks_declared_before_it() -> None:
    """Names are unique and each dependency is an earlier check, so the declared order is a valid run order."""
    names = [check.name for check in CHECKS]
    assert len(set(names)) == len(names)
    for position, check in enumerate(CHECKS):
        assert set(check.needs) <= set(names[:position]), check.name


def test_a_check_runs_only_when_the_checks_it_needs_passed_or_did_not_apply() -> None:
    """A skipped check lets what needs it run; a failed one silences what needs it, and what needs that in turn."""
    checks = [
        DoctorCheck("a", does_not_apply),
        DoctorCheck("b", fails, needs=("a",)),
        DoctorCheck("c", passes, needs=("b",)),
        DoctorCheck("d", passes, needs=("a",)),
        DoctorCheck("e", passes, needs=("c",)),
    ]
    out = io.StringIO()
    assert Doctor(out).run(checks) == 1
    assert out.getvalue() == (
        "skip  a                       not here\n"
        "FAIL  b                       broken\n"
        "       fix: mend it\n"
        "  ok  d                       fine\n"
        "1 check(s) failed\n"
    )


def test_the_report_has_every_check_in_the_declared_order(env, monkeypatch) -> None:
    """Against the sandbox (storage unset) each declared check prints one line, in CHECKS' order, and all pass."""
    monkeypatch.delenv("AzureWebJobsStorage")
    out = io.StringIO()
    assert run_doctor(out) == 0
    assert [name for (_, name) in report(out)] == [check.name for check in CHECKS]
    assert f"  ok  graph token             roles {', '.join(GRAPH_APP_ROLES)} present\n" in out.getvalue()


def test_without_a_token_nothing_after_the_token_check_is_reported(env, monkeypatch) -> None:
    """Every later check needs a token, so one cause gives one FAIL instead of one per check."""
    monkeypatch.setenv("IDENTITY_HEADER", "wrong")
    out = io.StringIO()
    assert run_doctor(out) == 1
    assert report(out) == [("ok", "settings"), ("FAIL", "exchange token")]


def test_an_unreachable_exchange_silences_only_the_checks_that_need_it(env, monkeypatch) -> None:
    """The write-cmdlet and exclusion checks are left out; the role, Graph and storage checks still report."""
    monkeypatch.setenv("EXCHANGE_ENDPOINT", "http://127.0.0.1:9")
    out = io.StringIO()
    assert run_doctor(out) == 1
    names = [name for (_, name) in report(out)]
    left_out = {"exchange write cmdlets", "exclusions"}
    assert names == [check.name for check in CHECKS if check.name not in left_out]


@pytest.mark.parametrize("role", GRAPH_APP_ROLES)
def test_the_graph_token_check_names_each_role_the_code_needs(env, sandbox, role: str) -> None:
    """A Graph token lacking any one role of GRAPH_APP_ROLES fails the check, naming that role."""
    others = [r for r in GRAPH_APP_ROLES if r != role]
    sandbox.knobs(roles={EXCHANGE: ["Exchange.ManageAsApp"], GRAPH: others})
    out = io.StringIO()
    assert run_doctor(out) == 1
    assert f"FAIL  graph token             the Graph token lacks {role}\n" in out.getvalue()


def test_a_graph_token_without_roles_still_lets_the_graph_api_check_say_what_graph_refused(env, sandbox) -> None:
    """Graph's refusal of subscribedSkus is reported too, and it names every role of GRAPH_APP_ROLES."""
    sandbox.knobs(roles={EXCHANGE: ["Exchange.ManageAsApp"], GRAPH: []})
    out = io.StringIO()
    assert run_doctor(out) == 1
    assert ("FAIL", "graph token") in report(out) and ("FAIL", "graph api") in report(out)
    (graph_api,) = [line for line in out.getvalue().splitlines() if line.startswith("FAIL  graph api")]
    assert all(role in graph_api for role in GRAPH_APP_ROLES)


@pytest.mark.parametrize("kind", ["groups", "contacts"])
def test_the_graph_token_check_asks_for_the_source_of_authority_role_of_each_enforced_kind(
    env, sandbox, monkeypatch, kind: str
) -> None:
    """With ENFORCE_OBJECTS naming a kind, a token without that kind's AUTHORITY_ROLES entry fails, saying how."""
    monkeypatch.setenv("ENFORCE_OBJECTS", f"mailboxes,{kind}")
    sandbox.knobs(roles={EXCHANGE: ["Exchange.ManageAsApp"], GRAPH: list(GRAPH_APP_ROLES)})
    out = io.StringIO()
    assert run_doctor(out) == 1
    assert f"FAIL  graph token             the Graph token lacks {AUTHORITY_ROLES[kind]}\n" in out.getvalue()
    assert "azd provision" in out.getvalue()


def test_an_exclusion_may_name_a_group_by_display_name_when_groups_are_enforced(env, sandbox, monkeypatch) -> None:
    """`name:` entries are matched against the synced groups; one that names nothing fails the check by name."""
    from sandbox.server import load_seed

    sandbox.reset(dict(load_seed("default"), withSourceOfAuthority=True))
    monkeypatch.setenv("ENFORCE_OBJECTS", "mailboxes,groups")
    monkeypatch.setenv("ENFORCE_EXCLUDE", "name:SoaChild,vip@contoso.com,soa.dl@contoso.com")
    out = io.StringIO()
    run_doctor(out)
    passed = "  ok  exclusions              all 3 ENFORCE_EXCLUDE entries name a mailbox or a synced group"
    assert passed in out.getvalue()
    monkeypatch.setenv("ENFORCE_EXCLUDE", "name:SoaChild,name:No Such Group")
    out = io.StringIO()
    assert run_doctor(out) == 1
    assert "ENFORCE_EXCLUDE entries that name no mailbox or a synced group: name:no such group" in out.getvalue()
