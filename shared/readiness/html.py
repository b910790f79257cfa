"""The readiness report as one self-contained HTML page, drawn from the JSON document so a stored one re-renders.

The page holds no script and loads nothing: inline CSS, an inline SVG chart, and a Content-Security-Policy
that forbids every fetch, so it can be mailed around and opened offline. Every value from the document goes
through `html.escape`: object names come from the directory, and anyone who can name a group can write markup.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = ["MAX_ROWS", "render_html"]

MAX_ROWS = 500  # objects shown per check; a browser stays quick, and the CSV and JSON exports hold them all
STATUS_WORDS = {"fail": "Fail", "warn": "Warning", "manual": "Manual", "pass": "Pass"}
STATUS_ORDER = ("fail", "warn", "manual", "pass")  # worst first, as in the model's STATUSES
# The chart's three segments, left to right: (key in an inventory entry, legend label, short label, colour).
# The colours differ in lightness too (dark, middle, light), so the bars still read in greyscale print.
SEGMENTS = (
    ("cloudManaged", "Cloud-managed", "cloud-managed", "#1f4e8c"),
    ("onPremises", "Still managed on-premises", "on-premises", "#e8830c"),
    ("cloudOnly", "Cloud-only", "cloud-only", "#a9c8ee"),
)
ROW_HEIGHT = 86  # px per kind: name line, bar, numbers line, gap
ROW_GAP = 10  # less than the space a row leaves under its numbers line, whose descenders need room
BAR_HEIGHT = 22
MIN_SEGMENT = 0.6  # % of the bar: a handful of on-premises objects among thousands must still show

# Nothing may be fetched, whatever ends up in the markup: the page is a document, not an application.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

CSS = """
:root {
  --text: #1c2128; --muted: #59636e; --line: #d8dee4; --soft: #f6f8fa; --page: #eef1f4; --link: #0b5cad;
  --fail: #a4161a; --fail-bg: #fdecea; --fail-line: #f1b0ab;
  --warn: #7a4f00; --warn-bg: #fff3d1; --warn-line: #ecd083;
  --manual: #1d4f91; --manual-bg: #e7eefb; --manual-line: #b4c9ec;
  --pass: #17663a; --pass-bg: #e2f3e7; --pass-line: #a6d6b5;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--page); color: var(--text);
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
main { max-width: 62rem; margin: 0 auto; padding: 2rem 1.25rem 3rem; }
a { color: var(--link); }
h1, h2 { line-height: 1.25; margin: 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 1.5rem 1.75rem;
  margin-bottom: 1.25rem; }
.eyebrow { margin: 0 0 .35rem; color: var(--muted); font-size: .8rem; font-weight: 600; letter-spacing: .08em;
  text-transform: uppercase; }
.verdict { border-left: 6px solid var(--fail); }
.verdict.ready { border-left-color: var(--pass); }
.verdict h1 { font-size: 1.75rem; }
.verdict .why { margin: .35rem 0 0; color: var(--muted); }
.summary { display: flex; flex-wrap: wrap; gap: .5rem; margin: 1.1rem 0 1rem; padding: 0; list-style: none; }
.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: 0; font-size: .9rem; }
.meta dt { color: var(--muted); }
.meta dd { margin: 0; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: .1rem .6rem; border: 1px solid; border-radius: 999px;
  font-size: .8rem; font-weight: 600; white-space: nowrap; }
.summary .badge { font-size: .9rem; padding: .2rem .8rem; }
.badge.fail { color: var(--fail); background: var(--fail-bg); border-color: var(--fail-line); }
.badge.warn { color: var(--warn); background: var(--warn-bg); border-color: var(--warn-line); }
.badge.manual { color: var(--manual); background: var(--manual-bg); border-color: var(--manual-line); }
.badge.pass { color: var(--pass); background: var(--pass-bg); border-color: var(--pass-line); }
.badge.zero { color: var(--muted); background: var(--soft); border-color: var(--line); font-weight: 500; }
.card > h2 { font-size: 1.15rem; margin-bottom: .85rem; }
.chart svg { display: block; min-width: 21rem; overflow: visible; }
.chart text { font-family: inherit; fill: var(--text); }
.chart .label { font-size: 15px; font-weight: 600; }
.chart .total, .chart .numbers { font-size: 13.5px; fill: var(--muted); }
/* SVG text cannot wrap: on a phone the numbers line shrinks with the screen (it is ~27 font sizes long). */
.chart .numbers { font-size: clamp(10px, 3.6vw - 1.8px, 13.5px); }
.chart .numbers tspan.n { font-weight: 700; fill: var(--text); }
.chart .numbers tspan.hot { fill: #9a4f00; }
.chart .track { fill: var(--soft); stroke: var(--line); }
/* A white gap between segments keeps them apart where two colours meet, on screen and in greyscale. */
.chart .segment { stroke: #fff; stroke-width: 1.5px; }
.legend { display: flex; flex-wrap: wrap; gap: .35rem 1.5rem; margin: 0 0 1.25rem; padding: 0; list-style: none;
  font-size: .9rem; color: var(--muted); }
.legend li { display: flex; align-items: center; gap: .5rem; }
.swatch { display: inline-block; width: .9rem; height: .9rem; border-radius: 3px; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { width: 100%; border-collapse: collapse; font-size: .9em; }
th, td { text-align: left; vertical-align: top; padding: .45rem .75rem .45rem 0; border-bottom: 1px solid var(--line); }
th { color: var(--muted); font-size: .75rem; font-weight: 600; letter-spacing: .05em; text-transform: uppercase;
  border-bottom-width: 2px; white-space: nowrap; }
tr:last-child td { border-bottom: 0; }
td.num, th.num { text-align: right; padding-right: 0; font-variant-numeric: tabular-nums; white-space: nowrap; }
.toc td { vertical-align: middle; }
.toc td:first-child { font-weight: 500; }
.check header { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem .75rem; margin-bottom: .75rem; }
.check h2 { font-size: 1.2rem; flex: 1 1 18rem; }
.check .count { color: var(--muted); font-size: .9rem; font-variant-numeric: tabular-nums; }
.check.fail { border-top: 4px solid var(--fail); }
.check.warn { border-top: 4px solid #d9a21b; }
.check.manual { border-top: 4px solid var(--manual); }
.check.pass { border-top: 4px solid var(--pass); }
.advice { margin: 0 0 1rem; max-width: 46rem; }
.error { margin: 0 0 1rem; padding: .65rem .9rem; border: 1px solid var(--fail-line); border-radius: 6px;
  background: var(--fail-bg); color: var(--fail); overflow-wrap: anywhere; }
.objects td { overflow-wrap: anywhere; }
.objects td.name { font-weight: 500; min-width: 10rem; }
.objects td.kind { white-space: nowrap; color: var(--muted); }
.objects td.detail { min-width: 14rem; }
.objects td.id { font: .8rem/1.5 ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace;
  color: var(--muted); white-space: nowrap; }
.objects tbody tr:nth-child(even) { background: var(--soft); }
.none { margin: 0; color: var(--muted); }
.more { margin: .75rem 0 0; font-weight: 600; }
.top { margin: 1rem 0 0; font-size: .85rem; }
footer { color: var(--muted); font-size: .85rem; text-align: center; }
@media (max-width: 40rem) {
  body { font-size: 14px; }
  main { padding: 1rem .6rem 2rem; }
  .card { padding: 1.1rem .85rem; border-radius: 8px; }
  .chart svg { min-width: 16rem; }
  .verdict h1 { font-size: 1.4rem; }
}
@media print {
  body { background: #fff; font-size: 10pt; }
  main { max-width: none; padding: 0; }
  .card { border: 0; border-radius: 0; padding: 0; margin-bottom: 1.5rem; }
  .verdict { border-left: 0; }
  .check { border-top: 0 !important; break-before: auto; }
  .check header, h2, thead { break-after: avoid; }
  tr { break-inside: avoid; }
  .scroll { overflow: visible; }
  .chart svg { min-width: 0; }
  .top { display: none; }
  a { color: inherit; text-decoration: none; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def render_html(document: dict[str, Any]) -> str:
    """The whole page for a readiness document (the dict `ReadinessReport.to_json()` returns)."""
    checks: list[dict[str, Any]] = document["checks"]
    title = f"{_verdict(document)} · Exchange readiness report"
    body = [
        _verdict_card(document),
        _chart_card(document["inventory"]),
        _contents_card(checks),
        *(_check_section(check) for check in checks),
        _footer(document.get("requests") or {}),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        '<body>\n<main id="top">\n' + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )


def _e(value: object) -> str:
    """Text made safe for both element content and quoted attribute values."""
    return html.escape(str(value), quote=True)


def _number(value: int) -> str:
    return f"{value:,}"


def _plural(count: int, one: str, many: str) -> str:
    return f"{_number(count)} {one if count == 1 else many}"


def _unread(checks: Iterable[dict[str, Any]]) -> int:
    """How many checks could not be answered: they leave the report not ready even without a failure."""
    return sum(1 for check in checks if check.get("error"))


def _verdict(document: dict[str, Any]) -> str:
    """The one sentence a reader came for."""
    if document["ready"]:
        return "Ready to switch off the last Exchange server"
    failing = document["summary"].get("fail", 0)
    if failing:
        return f"Not ready yet: {_plural(failing, 'check fails', 'checks fail')}"
    # Not ready without a failure: some check could not be read, and an unread check proves nothing.
    unread = _unread(document["checks"])
    return f"Not ready yet: {_plural(unread, 'check', 'checks')} could not be read" if unread else "Not ready yet"


def _verdict_card(document: dict[str, Any]) -> str:
    """The verdict, the count of checks per status, and which tenant and when."""
    ready = bool(document["ready"])
    unread = _unread(document["checks"])
    if ready:
        why = "No check fails and every check could be read."
    elif document["summary"].get("fail", 0) and unread:
        unread_checks = _plural(unread, "check", "checks")
        why = f"Fix what the failing checks below list, and find out why {unread_checks} could not be read."
    elif unread:
        why = "A check that could not be read proves nothing: find out why below, then run the report again."
    else:
        why = "Fix what the failing checks below list, then run the report again."
    badges = "".join(_summary_badge(status, document["summary"].get(status, 0)) for status in STATUS_ORDER)
    generated = str(document["generatedAt"])
    return (
        f'<header class="card verdict{" ready" if ready else ""}">\n'
        '<p class="eyebrow">Exchange hybrid readiness report</p>\n'
        f"<h1>{_e(_verdict(document))}</h1>\n"
        f'<p class="why">{_e(why)}</p>\n'
        f'<ul class="summary" aria-label="Checks by status">{badges}</ul>\n'
        '<dl class="meta">'
        f"<dt>Tenant</dt><dd>{_e(document['tenantId'])}</dd>"
        f'<dt>Generated</dt><dd><time datetime="{_e(generated)}">{_e(_when(generated))}</time></dd>'
        "</dl>\n</header>"
    )


def _summary_badge(status: str, count: int) -> str:
    word = STATUS_WORDS[status].lower()
    kind = status if count else "zero"  # a zero is not news: grey, so the eye goes to what is there
    return f'<li><span class="badge {kind}">{_number(count)} {_e(word)}</span></li>'


def _when(stamp: str) -> str:
    """The generation time as a person reads it, in UTC; the stamp itself when it is not ISO 8601."""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the model writes UTC; a naive stamp is read the same way
    return moment.astimezone(UTC).strftime("%d %B %Y, %H:%M UTC").lstrip("0")


def _chart_card(inventory: list[dict[str, Any]]) -> str:
    if not inventory:
        chart = '<p class="none">No directory objects were counted.</p>'
    else:
        chart = f'{_legend()}\n<div class="scroll">{_chart_svg(inventory)}</div>'
    return (
        '<section class="card chart" aria-labelledby="chart-title">\n'
        f'<h2 id="chart-title">Objects by where they are managed</h2>\n{chart}\n</section>'
    )


def _legend() -> str:
    # In HTML rather than in the SVG, so that it wraps on a narrow screen.
    items = "".join(
        f'<li><span class="swatch" style="background:{colour}"></span>{_e(label)}</li>'
        for _, label, _, colour in SEGMENTS
    )
    return f'<ul class="legend">{items}</ul>'


def _chart_svg(inventory: list[dict[str, Any]]) -> str:
    """One horizontal stacked bar per kind of object, with its numbers written under it."""
    # No viewBox: across the width everything is in %, so the bars stretch and the text keeps its size.
    height = ROW_HEIGHT * len(inventory) - ROW_GAP
    described = ". ".join(_bar_sentence(entry) for entry in inventory) + "."
    rows = "\n".join(_bar(index, entry) for index, entry in enumerate(inventory))
    return (
        f'<svg width="100%" height="{height}" role="img" aria-labelledby="chart-svg-title" '
        'aria-describedby="chart-svg-desc">\n'
        '<title id="chart-svg-title">Directory objects by kind and where they are managed</title>\n'
        f'<desc id="chart-svg-desc">{_e(described)}</desc>\n{rows}\n</svg>'
    )


def _bar_sentence(entry: dict[str, Any]) -> str:
    counts = ", ".join(f"{_number(int(entry[key]))} {short}" for key, _, short, _ in SEGMENTS)
    return f"{_label(entry['kind'])}: {counts}"


def _label(kind: object) -> str:
    text = str(kind)
    return text[:1].upper() + text[1:]


def _bar(index: int, entry: dict[str, Any]) -> str:
    """One kind: its name and total, the stacked bar, and the three numbers under it."""
    counts = [int(entry[key]) for key, *_ in SEGMENTS]
    top = index * ROW_HEIGHT
    bar_top = top + 24
    parts = [
        f'<text class="label" x="0" y="{top + 16}">{_e(_label(entry["kind"]))}</text>',
        f'<text class="total" x="100%" y="{top + 16}" text-anchor="end">'
        f"{_e(_plural(sum(counts), 'object', 'objects'))}</text>",
        f'<rect class="track" x="0" y="{bar_top}" width="100%" height="{BAR_HEIGHT}" rx="4"/>',
    ]
    x = 0.0
    for (key, label, _, colour), count, width in zip(SEGMENTS, counts, _widths(counts), strict=True):
        if width:
            parts.append(
                f'<rect class="segment" data-segment="{key}" x="{x:.2f}%" y="{bar_top}" width="{width:.2f}%" '
                f'height="{BAR_HEIGHT}" rx="4" fill="{colour}">'
                f"<title>{_e(_label(entry['kind']))}: {_number(count)} {_e(label.lower())}</title></rect>"
            )
        x += width
    numbers = " · ".join(
        f'<tspan class="n{" hot" if key == "onPremises" and count else ""}">{_number(count)}</tspan> {_e(short)}'
        for (key, _, short, _), count in zip(SEGMENTS, counts, strict=True)
    )
    parts.append(f'<text class="numbers" x="0" y="{bar_top + BAR_HEIGHT + 20}">{numbers}</text>')
    return f'<g class="bar" data-kind="{_e(entry["kind"])}">{"".join(parts)}</g>'


def _widths(counts: list[int]) -> list[float]:
    """Segment widths in % that fill the bar; a non-zero count gets at least MIN_SEGMENT, taken from the widest."""
    total = sum(counts)
    if not total:
        return [0.0 for _ in counts]
    widths = [max(MIN_SEGMENT, 100 * count / total) if count else 0.0 for count in counts]
    widest = widths.index(max(widths))
    widths[widest] -= sum(widths) - 100
    return widths


def _count_text(check: dict[str, Any]) -> str:
    """The count as a reader should take it: an unread check with nothing found has not found nothing."""
    if check.get("error") and not check["count"]:
        return "not read"
    return _plural(int(check["count"]), "object", "objects")


def _badge(status: str) -> str:
    return f'<span class="badge {_e(status)}">{_e(STATUS_WORDS.get(status, status))}</span>'


def _contents_card(checks: list[dict[str, Any]]) -> str:
    """The table of contents: every check with its status and count, linking to its section."""
    rows = "\n".join(
        f'<tr><td><a href="#check-{_e(check["id"])}">{_e(check["title"])}</a></td>'
        f'<td>{_badge(check["status"])}</td><td class="num">{_e(_count_text(check))}</td></tr>'
        for check in checks
    )
    return (
        '<nav class="card toc" aria-labelledby="toc-title">\n<h2 id="toc-title">Checks</h2>\n'
        '<div class="scroll"><table>\n<thead><tr><th scope="col">Check</th><th scope="col">Status</th>'
        f'<th scope="col" class="num">Objects</th></tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table></div>\n</nav>'
    )


def _check_section(check: dict[str, Any]) -> str:
    """One check: title, status, count, advice, the error when it could not be read, and its objects."""
    check_id = _e(check["id"])
    status = str(check["status"])
    parts = [
        f'<section class="card check {_e(status)}" id="check-{check_id}" aria-labelledby="check-{check_id}-title">',
        f'<header><h2 id="check-{check_id}-title">{_e(check["title"])}</h2>{_badge(status)}'
        f'<span class="count">{_e(_count_text(check))}</span></header>',
    ]
    if check.get("error"):
        parts.append(f'<p class="error"><strong>Could not be read:</strong> {_e(check["error"])}</p>')
    if check.get("advice"):
        parts.append(f'<p class="advice">{_e(check["advice"])}</p>')
    if check["objects"] or not check.get("error"):  # "No objects." would claim what an unread check cannot know
        parts.append(_objects_table(check["objects"]))
    parts.append('<p class="top"><a href="#top">Back to the top</a></p>\n</section>')
    return "\n".join(parts)


def _objects_table(objects: list[dict[str, Any]]) -> str:
    """The objects a check found, at most MAX_ROWS of them, and how many more the exports hold."""
    if not objects:
        return '<p class="none">No objects.</p>'
    rows = "\n".join(
        f'<tr><td class="name">{_e(finding["name"])}</td><td class="kind">{_e(finding["kind"])}</td>'
        f'<td class="detail">{_e(finding["detail"])}</td><td class="id">{_e(finding["id"])}</td></tr>'
        for finding in objects[:MAX_ROWS]
    )
    table = (
        '<div class="scroll"><table class="objects">\n<thead><tr><th scope="col">Name</th><th scope="col">Kind</th>'
        f'<th scope="col">Detail</th><th scope="col">Id</th></tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table></div>'
    )
    hidden = len(objects) - MAX_ROWS
    if hidden > 0:
        table += f'\n<p class="more">and {_number(hidden)} more: see the CSV or JSON export</p>'
    return table


def _footer(requests: dict[str, Any]) -> str:
    made = " · ".join(f"{_e(service)}: {_number(int(count))}" for service, count in requests.items())
    cost = f" Requests made to build it: {made}." if made else ""
    return f"<footer><p>Made by <code>exoprov readiness</code>; read-only, nothing was changed.{cost}</p></footer>"
