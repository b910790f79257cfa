"""The sandbox tenant's HTTP server: identity endpoint, Exchange admin API, control endpoints.

Routes (all on one loopback port):
    GET  /msi/token                         App Service managed-identity protocol (api-version 2019-08-01)
    POST /adminapi/beta/{tenant}/InvokeCommand and /$batch
    *    /v1.0/... and /beta/...            Microsoft Graph: users, licenses, groups, contacts, $batch
    *    /_sandbox/...                      control: health, stats, knobs, reset, mailboxes, sync-mail, advance
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.exchange_api import ExchangeApi, Reply
from sandbox.faults import Dice, Knobs, Limiter, Stats, knobs_json
from sandbox.graph_api import GraphApi, call_kind, graph_operation
from sandbox.tenant import Tenant, User
from sandbox.tokens import EXCHANGE_RESOURCE, GRAPH_RESOURCE, TokenIssuer

log = logging.getLogger("sandbox")
SEEDS = Path(__file__).parent / "seeds"
CONCURRENCY_MESSAGE = (
    "You have reached the maximum number of concurrent requests per tenant. Please wait and try again."
)


def load_seed(seed: str | dict[str, Any]) -> dict[str, Any]:
    """A seed by name (sandbox/seeds/NAME.json), by path, or given inline."""
    if isinstance(seed, dict):
        return seed
    path = SEEDS / f"{seed}.json" if (SEEDS / f"{seed}.json").exists() else Path(seed)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


class Sandbox:
    """The whole sandbox state; `reset` starts a new tenant with fresh statistics."""

    def __init__(self, seed: str | dict[str, Any] = "default", knobs: dict[str, Any] | None = None) -> None:
        self.identity_header = secrets.token_urlsafe(16)
        self.lock = threading.Lock()
        self.skipped = 0.0  # seconds the tenant's clock is ahead of the wall clock (POST /_sandbox/advance)
        self.reset(seed, knobs or {})

    def now(self) -> float:
        """The tenant's clock: the wall clock plus whatever a test skipped (delays, lags, sync)."""
        return time.time() + self.skipped

    def advance(self, seconds: float) -> float:
        """Move the tenant's clock on, as if `seconds` had passed; what waits on it (a new user's sync, a
        mailbox being created, a conversion, replication) comes due now instead of after a sleep."""
        if not seconds >= 0:
            raise ValueError(f"cannot move the clock back or by {seconds!r}")
        with self.lock:
            self.skipped += seconds
        return self.now()

    def reset(self, seed: str | dict[str, Any], knobs: dict[str, Any]) -> None:
        with self.lock:
            self.knobs = Knobs()
            self.knobs.update(knobs)
            self.skipped = 0.0
            self.tenant = Tenant(load_seed(seed), clock=self.now)
            self.apply_tenant_knobs()
            self.issuer = TokenIssuer(self.tenant.id)
            self.stats = Stats()
            self.dice = Dice(self.knobs.seed)
            self.limiter = Limiter(self.knobs, self.stats)
            self.exchange = ExchangeApi(self.tenant, self.knobs, self.stats, self.dice)
            self.graph = GraphApi(self.tenant, self.knobs, self.stats, self.dice)

    def apply_tenant_knobs(self) -> None:
        self.tenant.conversion_lag = self.knobs.conversion_lag
        self.tenant.mailbox_delay = self.knobs.mailbox_delay
        self.tenant.replication_lag = self.knobs.replication_lag
        self.token_outage_until = time.time() + self.knobs.token_outage_seconds


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SandboxServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY each answer waits for a delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        box = self.server.sandbox
        try:
            reply = self._route(box, url.path, parse_qs(url.query), body)
        except Exception as exc:  # a sandbox bug must be a loud 500, never a silent hang
            log.exception("sandbox error on %s %s", self.command, url.path)
            reply = Reply.json(500, {"error": {"code": "SandboxError", "message": f"sandbox bug: {exc!r}"}})
        self._send(reply)

    def _route(self, box: Sandbox, path: str, query: dict[str, list[str]], body: Any) -> Reply:
        if path == "/msi/token":
            return self._token(box, query)
        if path.startswith("/_sandbox/"):
            return self._control(box, path[len("/_sandbox/") :], body)
        if path.startswith("/adminapi/beta/"):
            return self._exchange(box, path, query, body)
        if path.startswith(("/v1.0/", "/beta/")):
            return self._graph(box, path, query, body)
        return Reply.json(404, {"error": {"code": "NotFound", "message": f"no route for {path}"}})

    def _send(self, reply: Reply) -> None:
        self.server.sandbox.stats.count("statuses", reply.status)
        if reply.drop:
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- identity --------------------------------------------------------------------------

    def _token(self, box: Sandbox, query: dict[str, list[str]]) -> Reply:
        if self.headers.get("X-IDENTITY-HEADER") != box.identity_header:
            return Reply.json(401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong."})
        if box.dice.roll(box.knobs.token_fault_rate) or time.time() < box.token_outage_until:
            box.stats.count("faults", "token")
            return Reply.json(500, {"statusCode": 500, "message": "The identity endpoint is unavailable."})
        client_id = query.get("client_id", [""])[0]
        if client_id and client_id.lower() != box.issuer.app_id.lower():
            # What App Service answers for a user-assigned identity it does not have (contracts/identity).
            return Reply.json(
                400,
                {
                    "statusCode": 400,
                    "message": "Unable to load the proper Managed Identity.",
                    "correlationId": str(uuid.uuid4()),
                },
            )
        resource = query.get("resource", [""])[0].rstrip("/")
        if resource.endswith("/.default"):
            resource = resource[: -len("/.default")]
        roles = box.knobs.roles.get(resource, [])
        token, expires = box.issuer.issue(resource, roles, box.knobs.token_lifetime)
        box.stats.count("tokens", resource)
        return Reply.json(
            200,
            {
                "access_token": token,
                "expires_on": str(expires),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": box.issuer.app_id,
            },
        )

    # -- Exchange --------------------------------------------------------------------------

    def _exchange(self, box: Sandbox, path: str, query: dict[str, list[str]], body: Any) -> Reply:
        parts = path.split("/")  # ['', 'adminapi', 'beta', tenant, endpoint]
        request_id = self.headers.get("client-request-id", "")
        box.stats.check_retry_after(request_id)
        endpoint = parts[4] if len(parts) == 5 else ""
        box.stats.count("requests", f"{endpoint} {_cmdlet_name(body)}".strip())
        claims, why = box.issuer.verify(self.headers.get("Authorization"), EXCHANGE_RESOURCE)
        if claims is None:
            # As with continuous access evaluation: a claims challenge asks the client for a fresh token.
            challenge = base64.b64encode(b'{"access_token":{"nbf":{"essential":true}}}').decode()
            return Reply.json(
                401,
                {"error": {"code": "Unauthorized", "message": why}},
                {
                    "x-ms-diagnostics": f'2000001;reason="{why}";error_category="invalid_token"',
                    "WWW-Authenticate": f'Bearer realm="", error="insufficient_claims", claims="{challenge}"',
                },
            )
        if "Exchange.ManageAsApp" not in claims.get("roles", []):
            reason = "The token has no Exchange.ManageAsApp role"
            return Reply.json(
                401,
                {"error": {"code": "Unauthorized", "message": reason}},
                {"x-ms-diagnostics": f'2000008;reason="{reason}";error_category="insufficient_auth"'},
            )
        tenant = parts[3] if len(parts) > 3 else ""
        if tenant.lower() not in (box.tenant.id, box.tenant.domain) or claims.get("tid") != box.tenant.id:
            return Reply.json(400, {"error": {"code": "BadRequest", "message": f"Unknown tenant {tenant!r}."}})
        if not self.headers.get("X-AnchorMailbox"):
            return Reply.json(
                400, {"error": {"code": "BadRequest", "message": "The X-AnchorMailbox header is required."}}
            )
        if self.command != "POST" or endpoint not in ("InvokeCommand", "$batch"):
            return Reply.json(405, {"error": {"code": "MethodNotAllowed", "message": f"{self.command} {endpoint}"}})
        retry_after = box.limiter.enter()
        if retry_after is not None:
            return self._refuse_concurrency(box, request_id, retry_after)
        try:
            return self._served(box, "/".join(parts[:4]), endpoint, query, body, request_id)
        finally:
            box.limiter.leave()

    def _served(
        self, box: Sandbox, base: str, endpoint: str, query: dict[str, list[str]], body: Any, request_id: str
    ) -> Reply:
        # Bound now: a request that hangs must land in the tenant it arrived at, not one reset since.
        knobs, exchange = box.knobs, box.exchange
        if knobs.latency:
            time.sleep(knobs.latency)
        if box.dice.roll(knobs.fault_503_rate):
            box.stats.count("faults", "503")
            return Reply.json(503, {"error": {"code": "ServiceUnavailable", "message": "Service Unavailable"}})
        if box.dice.roll(knobs.fault_429_rate):
            box.stats.count("faults", "429")
            return self._throttle(box, request_id, knobs.retry_after, "Too many requests; try again later.")
        if box.dice.roll(knobs.fault_hang_rate):
            box.stats.count("faults", "hang")
            time.sleep(knobs.hang_seconds)
        if endpoint == "$batch":
            reply = exchange.batch(base, self.headers, body)
        else:
            origin = f"http://{self.headers.get('Host', '127.0.0.1')}"
            reply = exchange.invoke(origin, base, query, self.headers, body)
        if box.dice.roll(knobs.fault_504_rate):
            box.stats.count("faults", "504")
            return Reply.json(504, {"error": {"code": "GatewayTimeout", "message": "Gateway Timeout"}})
        if box.dice.roll(knobs.fault_drop_rate):
            box.stats.count("faults", "drop")
            reply.drop = True
        return reply

    # -- Graph -----------------------------------------------------------------------------

    def _graph(self, box: Sandbox, path: str, query: dict[str, list[str]], body: Any) -> Reply:
        request_id = self.headers.get("client-request-id", "")
        box.stats.check_retry_after(request_id)
        box.stats.count("requests", f"graph {self.command} {graph_operation(path)}")
        box.stats.count("graph_calls", call_kind(self.command, path))  # before anything can refuse it
        claims, why = box.issuer.verify(self.headers.get("Authorization"), GRAPH_RESOURCE)
        if claims is None:
            return Reply.json(401, {"error": {"code": "InvalidAuthenticationToken", "message": why}})
        knobs, graph = box.knobs, box.graph
        if knobs.latency:
            time.sleep(knobs.latency)
        if box.dice.roll(knobs.graph_fault_429_rate):
            box.stats.count("faults", "graph_429")
            return self._graph_throttle(box, request_id, knobs.retry_after)
        if box.dice.roll(knobs.graph_fault_503_rate):
            box.stats.count("faults", "graph_503")
            return Reply.json(503, {"error": {"code": "serviceNotAvailable", "message": "Service unavailable."}})
        origin = f"http://{self.headers.get('Host', '127.0.0.1')}"
        roles = list(claims.get("roles", []))
        return graph.handle(self.command, path, query, body, roles, request_id, dict(self.headers.items()), origin)

    def _refuse_concurrency(self, box: Sandbox, request_id: str, seconds: float) -> Reply:
        """The per-tenant concurrency refusal: known by its text only; status and Retry-After are knobs."""
        with box.stats.lock:
            box.stats.throttled += 1
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if box.knobs.concurrency_retry_after:
            box.stats.remember_retry_after(request_id, seconds)
            headers["Retry-After"] = f"{seconds:g}"
        return Reply(box.knobs.concurrency_refusal_status, CONCURRENCY_MESSAGE.encode(), headers)

    def _graph_throttle(self, box: Sandbox, request_id: str, seconds: float) -> Reply:
        """Graph's documented 429 (tests/contracts/graph/graph.error.throttled.json)."""
        with box.stats.lock:
            box.stats.throttled += 1
        inner = {
            "code": "429",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "message": "Please retry after",
            "request-id": str(uuid.uuid4()),
            "status": "429",
        }
        body = {"error": {"code": "TooManyRequests", "message": "Please retry again later.", "innerError": inner}}
        if box.knobs.omit_retry_after:
            return Reply.json(429, body)
        box.stats.remember_retry_after(request_id, seconds)
        return Reply.json(429, body, {"Retry-After": f"{seconds:g}"})

    def _throttle(self, box: Sandbox, request_id: str, seconds: float, message: str) -> Reply:
        with box.stats.lock:
            box.stats.throttled += 1
        if box.knobs.omit_retry_after:
            return Reply.json(429, {"error": {"code": "TooManyRequests", "message": message}})
        box.stats.remember_retry_after(request_id, seconds)
        return Reply.json(
            429, {"error": {"code": "TooManyRequests", "message": message}}, {"Retry-After": f"{seconds:g}"}
        )

    # -- control ---------------------------------------------------------------------------

    def _control(self, box: Sandbox, name: str, body: Any) -> Reply:
        body = body if isinstance(body, dict) else {}
        if name == "health":
            return Reply.json(200, {"ok": True, "tenant": box.tenant.id})
        if name == "stats":
            snapshot = box.stats.snapshot()
            snapshot["writes"] = dict(box.tenant.writes)
            snapshot["hazards"] = list(box.tenant.hazards)
            return Reply.json(200, snapshot)
        if name == "knobs":
            if self.command == "POST":
                try:
                    box.knobs.update(body)
                except ValueError as exc:
                    return Reply.json(400, {"error": str(exc)})
                box.apply_tenant_knobs()
            return Reply.json(200, knobs_json(box.knobs))
        if name == "reset":
            try:
                box.reset(body.get("seed", "default"), body.get("knobs", {}))
            except (OSError, ValueError, KeyError) as exc:
                return Reply.json(400, {"error": f"cannot reset: {exc}"})
            return Reply.json(200, {"ok": True, "tenant": box.tenant.id})
        if name == "advance" and self.command == "POST":
            try:
                now = box.advance(float(body.get("seconds", 0)))
            except (TypeError, ValueError) as exc:
                return Reply.json(400, {"error": str(exc)})
            return Reply.json(200, {"ok": True, "now": now, "skipped": box.skipped})
        if name == "rotate-keys":
            box.issuer.rotate()  # every token issued so far now fails with 401
            return Reply.json(200, {"ok": True})
        if name == "users" and self.command == "POST":
            with box.tenant.lock:
                user = box.tenant.add_user(body, new=True)  # an AD user created now, appearing after its sync delay
            return Reply.json(200, {"id": user.id})
        if name == "skus" and self.command == "POST":
            sku = box.tenant.sku(box.tenant.sku_id(str(body.get("sku", ""))) or "")
            if sku is None:
                return Reply.json(400, {"error": f"no SKU {body.get('sku')!r}"})
            with box.tenant.lock:
                sku["consumedUnits"] = int(body["consumedUnits"])  # another admin's assignments, or returns
            return Reply.json(200, {"ok": True})
        if name == "licenses":
            return Reply.json(200, {u.upn: sorted(u.licenses) for u in box.tenant.users.values()})
        if name == "mailboxes":
            return Reply.json(200, [_truth(u) for u in box.tenant.mailbox_users()])
        if name == "sync-mail":
            box.tenant.sync_mail_change(body["upn"], body["mail"])
            return Reply.json(200, {"ok": True})
        if name in ("authority-log", "directory-state", "resync"):
            return Reply.json(200, box.tenant.authority_control(name))
        return Reply.json(404, {"error": f"no control endpoint {name!r}"})


def _truth(user: User) -> dict[str, Any]:
    box = user.mailbox
    assert box is not None
    return {
        "id": user.id,
        "upn": user.upn,
        "recipientTypeDetails": box.recipient_type,
        "dirSynced": user.dir_synced,
        "cloudManaged": box.cloud_managed,
    }


def _cmdlet_name(body: Any) -> str:
    if isinstance(body, dict):
        if isinstance(body.get("CmdletInput"), dict):
            return str(body["CmdletInput"].get("CmdletName", ""))
        requests = body.get("requests")
        if isinstance(requests, list) and requests and isinstance(requests[0], dict):
            return _cmdlet_name(requests[0].get("body"))
    return ""


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, host: str, port: int, sandbox: Sandbox) -> None:
        super().__init__((host, port), Handler)
        self.sandbox = sandbox

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def environment(self) -> dict[str, str]:
        """The settings that point exoprov at this sandbox, as they would be in Azure."""
        return {
            "IDENTITY_ENDPOINT": f"{self.url}/msi/token",
            "IDENTITY_HEADER": self.sandbox.identity_header,
            "EXCHANGE_ENDPOINT": self.url,
            "GRAPH_ENDPOINT": self.url,
        }
