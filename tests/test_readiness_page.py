"""The readiness page as a person sees it in a real headless Chromium, and the CSV export."""

from __future__ import annotations

import csv
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, FloatRect, Page, sync_playwright

from shared.readiness.csv_export import write_csv
from shared.readiness.html import MAX_ROWS, render_html
from shared.readiness.model import CHECK_IDS, Check, Finding, ReadinessReport, Tally

# Browser tests share one browser: keep them on one xdist worker (the Makefile runs --dist loadgroup).
browser_test = pytest.mark.xdist_group("chromium")

HOSTILE = "<img src=x onerror=alert(1)>"
# Debian's chromium (scripts/ensure-chromium installs it): Playwright's own browser download is not reachable.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOP_OF_PAGE: FloatRect = {"x": 0, "y": 0, "width": 1280, "height": 1600}
INVENTORY = (
    Tally("user mailboxes", cloud_managed=1234, on_premises=56, cloud_only=7),
    Tally("shared mailboxes", cloud_managed=40, on_premises=0, cloud_only=3),
    Tally("mail users", cloud_managed=0, on_premises=12),
    Tally("groups", cloud_managed=310, on_premises=2),
    Tally("contacts", cloud_managed=0, on_premises=0),
)


def _findings(count: int, kind: str = "user") -> tuple[Finding, ...]:
    return tuple(Finding(f"id-{n:04}", f"Person {n:04}", kind, "still managed on-premises") for n in range(count))


def _report(*, ready: bool = False) -> ReadinessReport:
    """Checks of every status: one failing with a hostile name, one unreadable, one with 600 objects."""
    if ready:
        checks = [Check("mailboxes-not-cloud-managed", "Every mailbox is cloud-managed", "pass", (), "Nothing to do.")]
    else:
        failing = (
            Finding("a1", "Ada Lovelace", "user", "IsExchangeCloudManaged is false"),
            Finding("a2", HOSTILE, "group", "named by someone hostile"),
            Finding("a3", "=1+1", "contact", "-starts like a formula"),
        )
        checks = [
            Check(
                "mailboxes-not-cloud-managed",
                "Mailboxes still managed on-premises",
                "fail",
                failing,
                "Run the sweep with --apply.",
            ),
            Check("tenant-default", "Tenant default for new mailboxes", "pass", (), "Nothing to do."),
            Check("synced-mail-users", "Synced mail users", "warn", _findings(600), "Move them to cloud management."),
            Check(
                "hybrid-configuration",
                "Hybrid configuration",
                "manual",
                (),
                "Check it in the Exchange admin center.",
                error="Exchange answered 403 Forbidden",
            ),
        ]
    assert {check.id for check in checks} <= set(CHECK_IDS)
    return ReadinessReport(
        generated_at=datetime(2025, 3, 14, 9, 30, tzinfo=UTC),
        tenant_id="11111111-2222-3333-4444-555555555555",
        checks=tuple(checks),
        inventory=INVENTORY,
        requests={"graph": 42, "exchange": 3},
    )


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the session, closed at teardown."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: run scripts/ensure-chromium (make test does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Opened:
    """A rendered report open in a page, with every request the page made."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        self.requests: list[str] = []
        self.dialogs: list[str] = []  # an alert() from injected markup would land here

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text()


def _open(browser: Browser, document: dict[str, Any], path: Path, width: int = 1280) -> Iterator[Opened]:
    path.write_text(render_html(document), encoding="utf-8")
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.set_default_timeout(5_000)  # a static page is there at once; a missing element should fail fast
    opened = Opened(page, path.as_uri())
    page.on("request", lambda request: opened.requests.append(request.url))
    page.on("dialog", lambda dialog: opened.dialogs.append(dialog.message))
    page.goto(opened.url)
    try:
        yield opened
    finally:
        page.close()


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return _report().to_json()


@pytest.fixture(scope="module")
def opened(browser: Browser, document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Opened]:
    """The failing report, rendered and opened once: the tests below only look at it."""
    yield from _open(browser, document, tmp_path_factory.mktemp("page") / "readiness.html")


@browser_test
def test_a_failing_report_says_not_ready_with_the_count_per_status(opened: Opened) -> None:
    """The verdict names the failing checks, and the summary shows each status as a word with its count."""
    assert opened.text("h1") == "Not ready yet: 1 check fails"
    summary = opened.text(".summary")
    assert summary.split() == ["1", "fail", "1", "warning", "1", "manual", "1", "pass"]
    header = opened.text(".verdict")
    assert "11111111-2222-3333-4444-555555555555" in header
    assert "14 March 2025, 09:30 UTC" in header


@browser_test
def test_a_ready_report_says_ready(browser: Browser, tmp_path: Path) -> None:
    """A report where nothing fails and everything was read shows the ready verdict."""
    for opened in _open(browser, _report(ready=True).to_json(), tmp_path / "ready.html"):
        assert opened.text("h1") == "Ready to switch off the last Exchange server"
        assert opened.page.locator(".verdict.ready").is_visible()


@browser_test
def test_the_chart_is_visible_with_one_bar_per_kind_and_its_numbers(opened: Opened) -> None:
    """The SVG chart has a size, a title and description for screen readers, and each kind's bar with its numbers."""
    chart = opened.page.locator("svg[role=img]")
    assert chart.is_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100
    assert chart.locator("title").first.text_content()
    assert "User mailboxes: 1,234 cloud-managed, 56 on-premises, 7 cloud-only" in (
        chart.locator("desc").text_content() or ""
    )
    bars = chart.locator("g.bar")
    assert bars.count() == len(INVENTORY)
    for index, tally in enumerate(INVENTORY):
        text = bars.nth(index).text_content() or ""
        for number in (tally.cloud_managed, tally.on_premises, tally.cloud_only):
            assert f"{number:,} " in text, (tally.kind, text)
        assert tally.kind in text.lower()
        segments = bars.nth(index).locator("rect.segment")
        assert segments.count() == sum(1 for n in (tally.cloud_managed, tally.on_premises, tally.cloud_only) if n)
    # A few on-premises objects among many still show as a visible sliver of the bar.
    sliver = bars.nth(0).locator("rect.segment[data-segment=onPremises]").bounding_box()
    assert sliver is not None and sliver["width"] >= 2
    assert opened.page.locator(".chart .legend li").all_inner_texts() == [
        "Cloud-managed",
        "Still managed on-premises",
        "Cloud-only",
    ]


@browser_test
def test_every_check_has_a_section_with_title_status_and_count_linked_from_the_contents(
    opened: Opened, document: dict[str, Any]
) -> None:
    """Each check has its section with title, status word and count, and the contents link to it."""
    words = {"fail": "Fail", "warn": "Warning", "manual": "Manual", "pass": "Pass"}
    counts = {"fail": "3 objects", "warn": "600 objects", "manual": "not read", "pass": "0 objects"}
    for check in document["checks"]:
        section = opened.page.locator(f"section#check-{check['id']}")
        assert section.is_visible()
        header = section.locator("header").inner_text()
        assert check["title"] in header
        assert words[check["status"]] in header
        assert counts[check["status"]] in header
        link = opened.page.locator(f'.toc a[href="#check-{check["id"]}"]')
        assert link.inner_text() == check["title"]
    opened.page.locator('.toc a[href="#check-hybrid-configuration"]').click()
    assert opened.page.evaluate("location.hash") == "#check-hybrid-configuration"


@browser_test
def test_an_unreadable_check_shows_its_error_and_advice(opened: Opened) -> None:
    """A check that could not be read says so, with the error, above its advice."""
    section = opened.text("#check-hybrid-configuration")
    assert "Could not be read: Exchange answered 403 Forbidden" in section
    assert "Check it in the Exchange admin center." in section


@browser_test
def test_a_hostile_object_name_shows_as_text_and_makes_no_element(opened: Opened) -> None:
    """A name made of markup is shown as those characters; no image, script or handler comes of it."""
    rows = opened.page.locator("#check-mailboxes-not-cloud-managed tbody tr")
    assert rows.count() == 3
    assert rows.nth(1).locator("td.name").inner_text() == HOSTILE
    assert opened.page.locator("img, script, iframe, object, embed, [onerror]").count() == 0
    assert opened.page.locator("[src]").count() == 0
    assert opened.dialogs == []
    links = [link.get_attribute("href") or "" for link in opened.page.locator("[href]").all()]
    assert links and all(link.startswith("#") for link in links)  # links stay inside the page


@browser_test
def test_a_check_shows_at_most_500_objects_and_says_how_many_more(opened: Opened) -> None:
    """600 objects show as 500 rows and 'and 100 more: see the CSV or JSON export'."""
    section = opened.page.locator("#check-synced-mail-users")
    assert section.locator("tbody tr").count() == MAX_ROWS
    assert section.locator(".more").inner_text() == "and 100 more: see the CSV or JSON export"
    assert opened.page.locator(".more").count() == 1


@browser_test
def test_the_page_requests_nothing_but_itself(opened: Opened, tmp_path: Path) -> None:
    """Opening the page makes one request, for its own file: no script, style, font or image is fetched."""
    opened.page.wait_for_load_state("networkidle")
    assert opened.requests == [opened.url]
    # The verdict, chart and contents; the whole page (600 table rows) would take 1.5 s to capture.
    opened.page.screenshot(path=tmp_path / "readiness.png", full_page=True, clip=TOP_OF_PAGE)
    assert (tmp_path / "readiness.png").stat().st_size > 10_000


@browser_test
def test_on_a_phone_the_page_does_not_scroll_sideways(
    browser: Browser, document: dict[str, Any], tmp_path: Path
) -> None:
    """At 375px wide only the tables and chart scroll inside their boxes; the page itself fits the screen."""
    for opened in _open(browser, document, tmp_path / "phone.html", width=375):
        assert opened.page.evaluate("document.documentElement.scrollWidth") <= 375
        assert opened.page.locator("h1").is_visible()


def test_the_page_source_has_no_script_and_no_web_address(document: dict[str, Any]) -> None:
    """The markup itself holds no script element and no http(s) address, whatever a browser would make of it."""
    page = render_html(document)
    assert "<script" not in page.lower()
    assert re.search(r"https?:", page) is None
    assert page.count('<section class="card check ') == len(document["checks"])


def test_the_csv_export_writes_one_file_per_check_in_check_order(document: dict[str, Any], tmp_path: Path) -> None:
    """Each check gets `{id}.csv` in a created directory, with the header and every object, beyond the page's cap."""
    paths = write_csv(document, tmp_path / "out" / "csv")
    assert paths == [tmp_path / "out" / "csv" / f"{check['id']}.csv" for check in document["checks"]]
    for path, check in zip(paths, document["checks"], strict=True):
        with path.open(encoding="utf-8-sig", newline="") as file:
            rows = list(csv.reader(file))
        assert rows[0] == ["id", "name", "kind", "detail"]
        assert len(rows) - 1 == check["count"]


def test_the_csv_export_starts_with_a_byte_order_mark_for_excel(document: dict[str, Any], tmp_path: Path) -> None:
    """The files are utf-8-sig: Excel reads a BOM-less CSV in the local code page and garbles names."""
    path = write_csv(document, tmp_path)[0]
    assert path.read_bytes().startswith(b"\xef\xbb\xbfid,name,kind,detail\r\n")


def test_the_csv_export_defuses_cells_a_spreadsheet_would_run(tmp_path: Path) -> None:
    """A cell starting with =, +, -, @, tab or CR gets a leading apostrophe; other cells are written as they are."""
    names = ["=1+1", "+SUM(A1)", "-2", "@cmd", "\tx", "\rx", "Ada", HOSTILE, "a=b"]
    objects = [{"id": f"id{n}", "name": name, "kind": "user", "detail": ""} for n, name in enumerate(names)]
    document = {"checks": [{"id": "synced-contacts", "objects": objects}]}
    (path,) = write_csv(document, tmp_path)
    with path.open(encoding="utf-8-sig", newline="") as file:
        written = [row[1] for row in csv.reader(file)][1:]
    assert written == ["'=1+1", "'+SUM(A1)", "'-2", "'@cmd", "'\tx", "'\rx", "Ada", HOSTILE, "a=b"]


def test_the_csv_export_refuses_a_check_id_that_is_not_a_file_name(tmp_path: Path) -> None:
    """A stored document with a check id like '../x' cannot write outside the directory."""
    with pytest.raises(ValueError, match="cannot be a file name"):
        write_csv({"checks": [{"id": "../escape", "objects": []}]}, tmp_path / "csv")
    assert not (tmp_path / "escape.csv").exists()


@browser_test
def test_the_sandbox_tenants_report_shows_its_verdict_chart_and_all_ten_checks(
    browser: Browser, sandbox: Any, env: dict[str, str], tmp_path: Path
) -> None:
    """A report read from the sandbox tenant, as a person sees it: the verdict, the chart, and every check."""
    from shared.readiness import build_report
    from shared.settings import Settings
    from shared.wiring import Clients
    from tests.test_readiness import readiness_seed

    sandbox.reset(readiness_seed())
    document = build_report(Clients.from_settings(Settings.from_env())).to_json()
    for opened in _open(browser, document, tmp_path / "tenant.html"):
        assert "Not ready yet: 3 checks fail" in opened.text("body")
        chart = opened.page.locator("svg")
        box = chart.first.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 50
        for check in document["checks"]:
            section = opened.page.locator(f"section#check-{check['id']}")
            assert section.is_visible() and check["title"] in section.inner_text()
        assert "SharedLicensed@contoso.com" in opened.text("section#check-licensed-shared-mailboxes")
        assert [r for r in opened.requests if r != opened.url] == []
