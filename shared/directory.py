"""Graph reads of the directory at tenant scale: paged listings and JSON batches of up to 20 reads.

The readiness report (and the group and contact sweep after it) never reads one object per request: it
lists with `$select`/`$filter` and reads per-object state through `$batch` (docs/wire-protocols.md,
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

from shared.errors import ExoprovError, ThrottledError, UnexpectedAnswerError
from shared.graph import error_message, map_graph_error
from shared.http import RETRY_AFTER_CAP_SECONDS, Response, ServiceClient, parse_retry_after

__all__ = ["BATCH_ROUNDS", "GRAPH_BATCH_LIMIT", "BatchAnswer", "BatchRead", "GraphDirectory"]

log = logging.getLogger("exoprov.directory")

GRAPH_BATCH_LIMIT = 20  # Graph's documented maximum of requests in one $batch
PAGE_SIZE = 999  # the largest $top the directory listings take
BATCH_ROUNDS = 6  # a throttled item is sent again in the next batch, at most this many times
ADVANCED = {"ConsistencyLevel": "eventual"}


@dataclass(frozen=True)
class BatchRead:
    """One GET inside a $batch: the caller's key, the URL relative to the version root, the role it needs."""

    key: str
    url: str
    role: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchAnswer:
    """What one read of a $batch answered: its status and body, or the error it ended with."""

    status: int
    body: Any
    error: ExoprovError | None = None


class GraphDirectory:
    """Listings and batched reads against one Graph version root (v1.0 unless a resource is beta only)."""

    def __init__(self, http: ServiceClient, version: str = "v1.0") -> None:
        self._http = http
        self._root = f"{http.base_url}/{version}"
        self.version = version

    def pages(
        self, path: str, query: Mapping[str, str], *, role: str, advanced: bool = False
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield a listing page by page (`$top` 999), following `@odata.nextLink` to the end."""
        params = {"$top": str(PAGE_SIZE), **query, **({"$count": "true"} if advanced else {})}
        url = f"{self._root}{path}?" + "&".join(f"{k}={quote(v, safe=',$')}" for k, v in params.items())
        yield from self._follow(url, path, role, advanced)

    def follow(self, link: str, *, role: str, advanced: bool = False) -> Iterator[list[dict[str, Any]]]:
        """Yield the pages of a listing from an `@odata.nextLink` on (one found inside a $batch answer)."""
        yield from self._follow(link, link.split("?", 1)[0].removeprefix(self._root), role, advanced)

    def _follow(self, first: str, path: str, role: str, advanced: bool) -> Iterator[list[dict[str, Any]]]:
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
            )
            payload = _payload(response, role)
            value = payload.get("value")
            if not isinstance(value, list):
                raise UnexpectedAnswerError(f"GET {path} answered without a value list", response.context)
            yield [item for item in value if isinstance(item, dict)]
            link = payload.get("@odata.nextLink")
            url = link if isinstance(link, str) and link else None

    def batch(self, reads: Sequence[BatchRead]) -> dict[str, BatchAnswer]:
        """Every read's answer by key, sent 20 to a $batch; throttled items wait their Retry-After and go again."""
        answers: dict[str, BatchAnswer] = {}
        pending = list(reads)
        for _ in range(BATCH_ROUNDS):
            throttled: list[BatchRead] = []
            for start in range(0, len(pending), GRAPH_BATCH_LIMIT):
                chunk = pending[start : start + GRAPH_BATCH_LIMIT]
                for read, answer in zip(chunk, self._send(chunk), strict=True):
                    if isinstance(answer.error, ThrottledError):
                        throttled.append(read)
                        self._http.hold(answer.error.retry_after or 1.0)
                    answers[read.key] = answer
            if not throttled:
                break
            log.info("%d of %d batched reads were throttled; sending them again", len(throttled), len(pending))
            pending = throttled
        return answers

    def _send(self, chunk: Sequence[BatchRead]) -> list[BatchAnswer]:
        body = {
            "requests": [
                {"id": str(index), "method": "GET", "url": read.url}
                | ({"headers": dict(read.headers)} if read.headers else {})
                for index, read in enumerate(chunk)
            ]
        }
        response = self._http.request(
            "POST", f"{self._root}/$batch", body=body, write=False, operation=f"$batch GET x{len(chunk)}"
        )
        payload = _payload(response, chunk[0].role)
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
            context = replace(response.context, operation=f"GET {read.url}", status=status)
            item_response = Response(status, headers, b"", context)
            answers.append(BatchAnswer(status, item.get("body"), _item_error(item_response, item.get("body"), read)))
        return answers


def _payload(response: Response, role: str) -> dict[str, Any]:
    payload = response.json()
    if 200 <= response.status < 300 and isinstance(payload, dict):
        return payload
    raise map_graph_error(response, payload, write=False, role=role)


def _item_error(response: Response, body: Any, read: BatchRead) -> ExoprovError:
    if response.status == 503 and "Retry-After" in response.headers:
        # A 503 that says when to come back is throttling, as classify() takes a whole answer of that kind.
        retry_after = parse_retry_after(response.headers.get("Retry-After"), RETRY_AFTER_CAP_SECONDS)
        return ThrottledError(error_message(body, response.status), response.context, retry_after)
    return map_graph_error(response, body, write=False, role=read.role)
