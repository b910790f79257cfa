"""Hostile identities: quotes, OPATH operators, URL metacharacters never widen a filter or reach another object."""

from __future__ import annotations

import re

import pytest

from shared.enforcement import DIR_SYNCED_FILTER
from shared.errors import ConfigurationError
from shared.runs import run_sweep
from shared.settings import Settings
from tests.chain_helpers import collect_results, fresh_clients, request, run_worker, submit

GUID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$")
# Valid UPNs (characters Entra allows) that would break a naively built filter or URL.
HOSTILE_UPNS = [
    "o'brien@contoso.com",  # closes a quoted OPATH string
    "hash#tag@contoso.com",  # starts a URL fragment
    "$dollar@contoso.com",  # Graph's "$" path rule, and a PowerShell variable
    "it's'-or'x@contoso.com",  # quotes around an OPATH operator
    "bang!caret^tilde~@contoso.com",
]
# Characters Entra does not allow in a UPN: refused at the door, never sent anywhere.
REFUSED_UPNS = [
    "x%27y@contoso.com",
    "q?p=1&a@contoso.com",
    "a+b@contoso.com",
    "sp ace@contoso.com",
    "x*@contoso.com",
    "a/b@contoso.com",
    "(a)@contoso.com",
]


def test_hostile_upns_reach_only_their_own_user(chain_env, sandbox) -> None:
    """Each hostile UPN is provisioned; the mailbox writes address GUIDs and only those users got licenses."""
    for upn in HOSTILE_UPNS:
        sandbox.add_user(upn=upn, usageLocation="DE")
    clients = fresh_clients()
    submit(clients, *(request(f"inj-{i}", upn, mailboxType="Shared") for i, upn in enumerate(HOSTILE_UPNS)))
    assert run_worker(clients) == 0
    results = collect_results(clients)
    assert {r[0]["userPrincipalName"]: r[0]["status"] for r in results.values()} == dict.fromkeys(
        HOSTILE_UPNS, "succeeded"
    )
    stats = sandbox.stats()
    assert all(GUID.match(identity) for identity in stats["identities"]), stats["identities"]
    assert stats["filters"] == {}
    licensed = {upn for upn, skus in sandbox.licenses().items() if skus}
    assert licensed.isdisjoint(HOSTILE_UPNS) and stats["hazards"] == []


def test_upns_with_characters_entra_refuses_are_refused_before_any_call(chain_env, sandbox) -> None:
    """Wildcards, spaces, slashes, %, ?, & and + are refused at accept, naming the field; nothing reaches the tenant."""
    clients = fresh_clients()
    submit(clients, *(request(f"bad-{i}", upn) for i, upn in enumerate(REFUSED_UPNS)))
    assert run_worker(clients) == 0
    results = collect_results(clients)
    assert len(results) == len(REFUSED_UPNS)
    assert all(r[0]["error"]["message"].startswith("userPrincipalName") for r in results.values())
    assert sandbox.stats()["requestsTotal"] == 0


@pytest.mark.parametrize("exclude", ["*", "' -or Name -like '*", "UserNoMailWithEXO@contoso.com' -or '1' -eq '1"])
def test_exclusions_are_literal_never_patterns(env, sandbox, monkeypatch, exclude: str) -> None:
    """An exclusion with wildcards or OPATH operators is refused at start; nothing reaches the tenant."""
    monkeypatch.setenv("ENFORCE_EXCLUDE", exclude)
    with pytest.raises(ConfigurationError, match="ENFORCE_EXCLUDE"):
        Settings.from_env()
    assert sandbox.stats()["requestsTotal"] == 0


def test_the_listing_filter_is_a_constant(env, sandbox, monkeypatch) -> None:
    """Whatever the exclusions, the only filter Exchange is sent is the fixed IsDirSynced one."""
    monkeypatch.setenv("ENFORCE_EXCLUDE", "vip@contoso.com")
    report = run_sweep(fresh_clients(), apply=True)
    assert report.excluded == 1 and report.changed == report.candidates == 5
    assert sandbox.stats()["filters"] == {DIR_SYNCED_FILTER: 1}


def test_a_lookup_cannot_step_outside_the_user_path(env, sandbox) -> None:
    """Slashes, dots and parentheses in a lookup key stay inside one URL segment: not found, not another resource."""
    graph = fresh_clients().graph()
    for key in ("../subscribedSkus", "x')/assignLicense", "UserNoMailNoEXO@contoso.com/../..", "%2e%2e"):
        assert graph.get_user(key) is None
    assert graph.get_user("UserNoMailNoEXO@contoso.com") is not None
