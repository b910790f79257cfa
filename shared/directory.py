"""Graph at tenant scale: paged listings and JSON batches of up to 20 calls (reads, or writes of one object each).

The readiness report and the group and contact sweep never read one object per request: they list with
`$select`/`$filter` and read (and write) per-object state through `$batch` (docs/wire-protocols.md,
"JSON batching"). Listings that filter on `onPremisesSyncEnabled` are advanced queries: they need
`ConsistencyLevel: eventual` and `$count=true`, and their results may lag behind recent changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from urllib3 import HTTPHeaderDict

from shared.errors import BudgetExhaustedError, ExoprovError, ThrottledError, UnexpectedAnswerError
from shared.graph import error_message, map_graph_error
from shared.http import RETRY_AFTER_CAP_SECONDS, Response, ServiceClient, parse_retry_after

__all__ = ["ADVANCED", "BATCH_ROUNDS", "GRAPH_BATCH_LIMIT", "BatchAnswer", "GraphCall", "GraphDirectory"]

log = logging.getLogger("exoprov.directory")

GRAPH_BATCH_LIMIT = 20  # Graph's documented maximum of requests in one $batch
PAGE_SIZE = 999  # the largest $top the directory listings take
BATCH_ROUNDS = 6  # a throttled item is sent again in the next batch, at most this many times
ADVANCED = {"ConsistencyLevel": "eventual"}


@dataclass(frozen=True)
class GraphCall:
    """One call inside a $batch: the caller's key, the URL relative to the version root, the role it needs,
    and for a write its method and JSON body (sent with the Content-Type an item with a body must carry)."""

    key: str
    url: str
    role: str
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "GET"
    body: Any = None

    @property
    def write(self) -> bool:
        return self.method != "GET"

    def to_json(self, item_id: str) -> dict[str, Any]:
        headers = dict(self.headers)
        if self.body is not None:
            headers.setdefault("Content-Type", "application/json")
        return (
            {"id": item_id, "method": self.method, "url": self.url}
            | ({"headers": headers} if headers else {})
            | ({"body": self.body} if self.body is not None else {})
        )


@dataclass(frozen=True)
class BatchAnswer:
    """What one call of a $batch answered: its status and body, or the error it ended with. `sent` is false when
    the call never went out (the time budget was spent before its first send)."""

    status: int
    body: Any
    error: ExoprovError | None = None
    sent: bool = True


class GraphDirectory:
    """Listings and batched reads against one Graph version root (v1.0 unless a resource is beta only)."""

    def __init__(self, http: ServiceClient, version: str = "v1.0") -> None:
        self._http = http
        self._root = f"{http.base_url}/{version}"
        self.version = version

    @property
    def sent(self) -> int:
        """Requests this service's client has sent (every thread of the process counts)."""
        return self._http.sent

    def pages(
        self,
        path: str,
        query: Mapping[str, str],
        *,
        role: str,
        advanced: bool = False,
        deadline: float | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield a listing page by page (`$top` 999), following `@odata.nextLink` to the end.

        `deadline` (time.monotonic) bounds every wait, as in ServiceClient.request."""
        params = {"$top": str(PAGE_SIZE), **query, **({"$count": "true"} if advanced else {})}
        url = f"{self._root}{path}?" + "&".join(f"{k}={quote(v, safe=',$')}" for k, v in params.items())
        yield from self._follow(url, path, role, advanced, deadline)

    def follow(
        self, link: str, *, role: str, advanced: bool = False, deadline: float | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the pages of a listing from an `@odata.nextLink` on (one found inside a $batch answer)."""
        yield from self._follow(link, link.split("?", 1)[0].removeprefix(self._root), role, advanced, deadline)

    def _follow(
        self, first: str, path: str, role: str, advanced: bool, deadline: float | None
    ) -> Iterator[list[dict[str, Any]]]:
        url: str | None = first
        page = 0
        while url:
            page += 1
            response = self._http.request(
                "GET",
                url,
                headers=ADVANCED if advanced else None,
                write=False,
                operation=f"GET {path}" + (f" page {page}" if page > 1 else ""),
                deadline=deadline,
            )
            payload = _payload(response, role)
            value = payload.get("value")
            if not isinstance(value, list):
                raise UnexpectedAnswerError(f"GET {path} answered without a value list", response.context)
            yield [item for item in value if isinstance(item, dict)]
            link = payload.get("@odata.nextLink")
            url = link if isinstance(link, str) and link else None

    def batch(
        self, reads: Sequence[GraphCall], deadline: float | None = None, *, partial: bool = False
    ) -> dict[str, BatchAnswer]:
        """Every item's answer by key, sent 20 to a $batch; throttled items wait their Retry-After and go again.

        A throttled write was not applied, so sending it again is safe. A $batch that fails as a whole raises
        (OutcomeUnknownError when it held writes and no answer came back); with `partial`, its items carry that
        error instead and the answers already had are kept, and once the time budget is spent (BudgetExhaustedError,
        raised before anything is sent) the items not sent carry that."""
        answers: dict[str, BatchAnswer] = {}
        pending = list(reads)
        went_out: set[str] = set()
        for _ in range(BATCH_ROUNDS):
            throttled: list[GraphCall] = []
            for start in range(0, len(pending), GRAPH_BATCH_LIMIT):
                chunk = pending[start : start + GRAPH_BATCH_LIMIT]
                try:
                    sent = self._send(chunk, deadline)
                except ExoprovError as exc:
                    if not partial:
                        raise
                    # Only the budget check is sure to come before the send; any other error may follow it.
                    unsent = isinstance(exc, BudgetExhaustedError)
                    sent = [BatchAnswer(0, None, exc, sent=not unsent or r.key in went_out) for r in chunk]
                went_out.update(r.key for r, a in zip(chunk, sent, strict=True) if a.sent)
                for read, answer in zip(chunk, sent, strict=True):
                    if isinstance(answer.error, ThrottledError):
                        throttled.append(read)
                        self._http.hold(answer.error.retry_after or 1.0)
                    answers[read.key] = answer
            if not throttled:
                break
            log.info("%d of %d batched calls were throttled; sending them again", len(throttled), len(pending))
            pending = throttled
        return answers

    def _send(self, chunk: Sequence[GraphCall], deadline: float | None) -> list[BatchAnswer]:
        body = {"requests": [read.to_json(str(index)) for index, read in enumerate(chunk)]}
        write = any(read.write for read in chunk)
        methods = "/".join(sorted({read.method for read in chunk}))
        response = self._http.request(
            "POST",
            f"{self._root}/$batch",
            body=body,
            write=write,
            operation=f"$batch {methods} x{len(chunk)}",
            deadline=deadline,
        )
        payload = _payload(response, chunk[0].role, write=write)
        by_id = {str(item.get("id")): item for item in payload.get("responses") or [] if isinstance(item, dict)}
        answers = []
        for index, read in enumerate(chunk):
            item = by_id.get(str(index))
            if item is None:
                error = UnexpectedAnswerError(f"the $batch answer has no item for {read.url}", response.context)
                answers.append(BatchAnswer(0, None, error))
                continue
            status = int(item.get("status") or 0)
            if 200 <= status < 300:
                answers.append(BatchAnswer(status, item.get("body")))
                continue
            headers = HTTPHeaderDict({str(k): str(v) for k, v in (item.get("headers") or {}).items()})
            # Each item has its own status: its error must not read "HTTP 200" from the batch around it.
            context = replace(response.context, operation=f"{read.method} {read.url}", status=status)
            item_response = Response(status, headers, b"", context)
            answers.append(BatchAnswer(status, item.get("body"), _item_error(item_response, item.get("body"), read)))
        return answers


def _payload(response: Response, role: str, *, write: bool = False) -> dict[str, Any]:
    payload = response.json()
    if 200 <= response.status < 300 and isinstance(payload, dict):
        return payload
    raise map_graph_error(response, payload, write=write, role=role)


def _item_error(response: Response, body: Any, read: GraphCall) -> ExoprovError:
    if response.status == 503 and "Retry-After" in response.headers:
        # A 503 that says when to come back is throttling, as classify() takes a whole answer of that kind.
        retry_after = parse_retry_after(response.headers.get("Retry-After"), RETRY_AFTER_CAP_SECONDS)
        return ThrottledError(error_message(body, response.status), response.context, retry_after)
    return map_graph_error(response, body, write=read.write, role=read.role)
