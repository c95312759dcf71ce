"""The per-run model gateway: the sandbox's only door to a model, and the run's meter.

An agent in the sandbox never holds the team's API key. It gets a per-run token and a base URL
that leads, through a Unix socket bind-mounted into the sandbox, to this gateway in the worker.
The gateway checks the token, puts the real key in its place, forces the run's model, forwards
the call to the configured endpoint and relays the answer (streams as they arrive), reading the
usage of every call on the way to meter tokens and cost and to refuse calls once a limit is
spent.

    with Gateway(model_config, run_dir / "gateway.sock", limits=limits, on_call=save) as gateway:
        sandboxed_env = gateway.sandbox_model(port)   # token + http://127.0.0.1:PORT[/v1]
        in_worker = gateway.worker_model()             # token + the socket, for the builtin agent
        ...
    gateway.totals, gateway.limit_hit, gateway.calls

Served, whatever the provider (paths with or without the `/v1` a base URL may end in):
`POST /v1/chat/completions`, `POST /v1/responses`, `POST /v1/messages`,
`POST /v1/messages/count_tokens` (recorded, but free, so not metered) and `GET /v1/models[/ID]`
(answered here). A call in the wire format the model's endpoint speaks (runs/wire_formats.py:
`upstream_wire`) is forwarded as it is; any other is translated there and back, streams event by
event, so that any model drives any CLI. count_tokens against an endpoint that is not Anthropic's
is answered here with an estimate. `GET /` and `HEAD /` answer 200 for clients that probe before
their first call. The gateway's own refusals and errors come in the caller's format (Anthropic's
for /v1/messages, OpenAI's for the rest; for other paths, Anthropic's if the client sent
anthropic-version, else the provider's), so agents show them as they would a provider's.
Metering reads the usage the endpoint reported; records keep the body sent upstream and what
came back, before translation.

Pure: no Django imports. The key never appears in anything the gateway sends back, records or
logs.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import json
import logging
import re
import secrets
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import IO, Any

import httpx

from runs import providers, wire_formats

logger = logging.getLogger(__name__)

RECORD_LIMIT = 64 * 1024  # bytes of each request and response body kept in a CallRecord
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # long agent conversations with images stay well below
MAX_CONNECTIONS = 64  # a sandbox opening more is misbehaving; each one is a worker thread
IDLE_TIMEOUT = 300.0  # seconds a client connection may sit idle (or stall mid-request)
# A "key" shorter than this (Ollama's "ollama", "none") is a placeholder, not a secret; redacting
# it would corrupt model output that happens to contain the word.
MIN_SECRET_KEY_LENGTH = 8
SANDBOX_HOST = "127.0.0.1"
WORKER_ORIGIN = "http://gateway"  # any host will do: the worker's client dials the socket
ROOT_BODY = b"Mergeable model gateway\n"

LIMIT_NAMES = ("max_cost_usd", "max_tokens", "max_calls")

# What the sandbox may call: path after an optional /v1 -> route. Every route but count_tokens
# is also the wire format (wire_formats.WIRES) the caller speaks.
_ROUTES = {
    "/chat/completions": "chat",
    "/responses": "responses",
    "/messages": "messages",
    "/messages/count_tokens": "count_tokens",
}
# Appended to the configured base_url, as providers.py does (an OpenAI base_url ends in /v1).
_UPSTREAM_PATHS = {
    "chat": "/chat/completions",
    "responses": "/responses",
    "messages": "/v1/messages",
    "count_tokens": "/v1/messages/count_tokens",
}
_METERED = {"chat", "responses", "messages"}

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
_AUTH_HEADERS = {"authorization", "x-api-key", "api-key"}
_NOT_FORWARDED = (
    _HOP_BY_HOP
    | _AUTH_HEADERS
    | {
        "host",
        "content-length",
        # httpx asks for the encodings it can decode, and the relay sends decoded bytes.
        "accept-encoding",
        # The key decides which organization pays, not the agent.
        "openai-organization",
        "openai-project",
        "cookie",
    }
)
# A caller's headers meant for the other provider, not forwarded when translating to this one.
_FOREIGN_HEADERS = {"openai": ("anthropic-",), "anthropic": ("openai-", "x-stainless-")}
# All a translated answer keeps of the upstream's headers: the rest describe the upstream's body.
_RELAYED_WHEN_TRANSLATED = {"retry-after", "retry-after-ms", "x-request-id", "request-id"}
_NOT_RELAYED = _HOP_BY_HOP | {
    "content-length",
    "content-encoding",
    "date",
    "server",
    "set-cookie",
    "alt-svc",
}

_EVENT_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class GatewayLimits:
    """A run's budget. None: no limit."""

    max_cost_usd: float | None = None
    max_tokens: int | None = None  # input + output tokens over the run
    max_calls: int | None = None


@dataclass
class Totals:
    """Usage over the run. `calls` counts metered calls forwarded upstream, answered or not;
    `input_tokens` includes cached input, which the cache fields count again on their own."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class CallRecord:
    """One request to the gateway, whatever became of it."""

    index: int  # its position in Gateway.calls
    method: str
    path: str  # with the query string
    status: int  # what the client got; 0 if the connection broke before an answer
    latency_s: float
    stream: bool
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    request: str  # the body as forwarded (or as received, when not forwarded), capped
    response: str  # the body from upstream or the gateway's own answer; raw SSE for streams
    error: str
    started_at: str  # ISO 8601, UTC


class Gateway:
    """A threaded HTTP/1.1 proxy on a Unix socket, for one run. See the module docstring.

    Every request is recorded in `calls`, appended to `log_path` as a JSON line and passed to
    `on_call(record, totals)`, all before the client has the last byte of its answer: whoever
    has seen an answer can rely on the totals. So `on_call` runs on the request's thread and
    should be quick; an exception in it is logged and the call goes on.
    """

    def __init__(
        self,
        upstream: providers.ModelConfig,
        socket_path: Path,
        *,
        limits: GatewayLimits = GatewayLimits(),
        token: str | None = None,
        on_call: Callable[[CallRecord, Totals], None] | None = None,
        log_path: Path | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        if upstream.provider not in ("openai", "anthropic"):
            raise ValueError(
                f"the gateway serves openai and anthropic models, not {upstream.provider!r}"
            )
        if not upstream.base_url:
            raise ValueError(f"the {upstream.provider} model has no base URL")
        self.upstream = upstream
        self.wire = wire_formats.upstream_wire(upstream)  # what the endpoint speaks
        self.socket_path = Path(socket_path)
        self.limits = limits
        self.token = token or secrets.token_urlsafe(32)
        self.on_call = on_call
        self.log_path = log_path
        self._client = client
        self._owns_client = client is None
        self._timeout = httpx.Timeout(
            upstream.timeout, connect=min(providers.CONNECT_TIMEOUT, upstream.timeout)
        )
        key = upstream.api_key
        self._secret = key.encode() if len(key) >= MIN_SECRET_KEY_LENGTH else b""
        self._token_bytes = self.token.encode()
        self._lock = threading.Lock()  # counters, calls and limit_hit
        # Held while a finished call is counted, logged and reported, so that on_call sees
        # totals in the order they grew.
        self._report_lock = threading.Lock()
        self._totals = Totals()
        self._calls: list[CallRecord] = []
        self._limit_hit: str | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._log: IO[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Gateway:
        if self._server is not None:
            return self
        if self._client is None:
            # Never through upstream.socket_path: that would be a gateway calling itself.
            self._client = httpx.Client(
                verify=providers.shared_ssl_context(),
                limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=16),
            )
        if self.socket_path.is_socket():  # left behind by a worker that died
            self.socket_path.unlink()
        self._server = _Server(str(self.socket_path), self)
        # The sandbox runs as another uid; the directory the caller owns guards the socket.
        self.socket_path.chmod(0o666)
        if self.log_path is not None:
            self._log = open(self.log_path, "a", encoding="utf-8")  # closed in close()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # close() waits for at most one poll
            name=f"gateway:{self.socket_path.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, cut open connections, remove the socket. Safe to call twice; a closed
        gateway does not start again."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()
            if self._thread is not None:
                self._thread.join(timeout=5)
        if self._owns_client and self._client is not None:
            self._client.close()  # kept, closed: a late request gets a clean 502 from it
        self.socket_path.unlink(missing_ok=True)
        with self._report_lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what the run sees -----------------------------------------------------------------------

    @property
    def totals(self) -> Totals:
        with self._lock:
            return dataclasses.replace(self._totals)

    @property
    def calls(self) -> list[CallRecord]:
        with self._lock:
            return list(self._calls)

    @property
    def limit_hit(self) -> str | None:
        """The first limit that made the gateway refuse a call, or None."""
        with self._lock:
            return self._limit_hit

    def limit_message(self) -> str:
        limit = self.limit_hit
        return _limit_sentence(limit, getattr(self.limits, limit)) if limit else ""

    def sandbox_model(self, port: int, speaks: str = "") -> providers.ModelConfig:
        """The model as an agent in the sandbox sees it: the token, and the gateway on `port`.

        `speaks` "openai" or "anthropic": as a client of that provider sees it (a CLI with a
        fixed wire format, the gateway translating); by default, as the model's own provider.
        """
        return self._client_model(f"http://{SANDBOX_HOST}:{port}", "", speaks)

    def worker_model(self, speaks: str = "") -> providers.ModelConfig:
        """The model for code in the worker (the builtin agent): the token, over the socket."""
        return self._client_model(WORKER_ORIGIN, str(self.socket_path), speaks)

    def _client_model(self, origin: str, socket_path: str, speaks: str) -> providers.ModelConfig:
        provider = speaks or self.upstream.provider
        if provider not in ("openai", "anthropic"):
            raise ValueError(f'speaks must be "openai" or "anthropic", not {speaks!r}')
        base_url = f"{origin}/v1" if provider == "openai" else origin
        # wire_api describes the endpoint behind the gateway; the gateway speaks every format.
        params = {name: value for name, value in self.upstream.params.items() if name != "wire_api"}
        return dataclasses.replace(
            self.upstream,
            provider=provider,
            base_url=base_url,
            api_key=self.token,
            socket_path=socket_path,
            params=params,
        )

    # -- called from handler threads -------------------------------------------------------------

    def _authorized(self, headers: Any) -> bool:
        candidates = [headers.get("x-api-key"), headers.get("api-key")]
        authorization = headers.get("authorization") or ""
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            candidates.append(credentials.strip())
        return any(
            hmac.compare_digest(candidate.encode(), self._token_bytes)
            for candidate in candidates
            if candidate
        )

    def _admit(self) -> str | None:
        """Count a metered call about to be forwarded, or name the limit that forbids it."""
        with self._lock:
            limit = self._reached_limit()
            if limit is not None:
                self._limit_hit = self._limit_hit or limit
                return limit
            self._totals.calls += 1  # at once, so that concurrent calls cannot overshoot
            return None

    def _reached_limit(self) -> str | None:
        limits, totals = self.limits, self._totals
        if limits.max_cost_usd is not None and totals.cost_usd >= limits.max_cost_usd:
            return "max_cost_usd"
        if limits.max_tokens is not None and totals.tokens >= limits.max_tokens:
            return "max_tokens"
        if limits.max_calls is not None and totals.calls >= limits.max_calls:
            return "max_calls"
        return None

    def _upstream_url(self, route: str, query: str) -> str:
        url = self.upstream.base_url.rstrip("/") + _UPSTREAM_PATHS[route]
        return f"{url}?{query}" if query else url

    def _upstream_headers(self, inbound: Any, translated: bool) -> list[tuple[str, str]]:
        named_by_connection = {
            name.strip().lower() for name in (inbound.get("connection") or "").split(",")
        }
        dropped = _NOT_FORWARDED | named_by_connection
        foreign = _FOREIGN_HEADERS[self.upstream.provider] if translated else ()
        headers = [
            (name, value)
            for name, value in inbound.items()
            if name.lower() not in dropped and not name.lower().startswith(foreign)
        ]
        names = {name.lower() for name, _ in headers}
        if "content-type" not in names:
            headers.append(("content-type", "application/json"))
        key = self.upstream.api_key
        if self.upstream.provider == "anthropic":
            if "anthropic-version" not in names:
                headers.append(("anthropic-version", providers.ANTHROPIC_VERSION))
            if key:
                headers.append(("x-api-key", key))
        elif key:
            headers.append(("authorization", f"Bearer {key}"))
        return headers

    def _rewrite(self, route: str, payload: dict) -> tuple[bytes, bool]:
        """The body to forward, and whether the gateway asked for stream usage on its own."""
        # A hostile agent must not pick a pricier model on the team's key.
        if self.upstream.model:
            payload["model"] = self.upstream.model
        added_usage = False
        if route == "chat" and payload.get("stream"):
            options = payload.get("stream_options")
            options = options if isinstance(options, dict) else {}
            added_usage = not options.get("include_usage")
            payload["stream_options"] = {**options, "include_usage": True}
        return json.dumps(payload, ensure_ascii=False).encode(), added_usage

    def _model_entry(self, provider: str) -> dict:
        model = self.upstream.model
        if provider == "anthropic":
            return {
                "type": "model",
                "id": model,
                "display_name": model,
                "created_at": "1970-01-01T00:00:00Z",
            }
        return {"id": model, "object": "model", "created": 0, "owned_by": "mergeable"}

    def _model_list(self, provider: str) -> dict:
        entry = self._model_entry(provider)
        if provider == "anthropic":
            model = self.upstream.model
            return {"data": [entry], "has_more": False, "first_id": model, "last_id": model}
        return {"object": "list", "data": [entry]}

    def _redact(self, data: bytes) -> bytes:
        return data.replace(self._secret, b"[redacted]") if self._secret else data

    def _redact_text(self, text: str) -> str:
        key = self._secret.decode()
        return text.replace(key, "[redacted]") if key else text

    def _finish(self, exchange: _Exchange) -> None:
        """Count the call's usage, record it, log it and report it."""
        usage = exchange.usage
        cost = (
            self.upstream.cost(usage.input_tokens, usage.output_tokens) if exchange.metered else 0.0
        )
        with self._report_lock:
            with self._lock:
                if exchange.metered:
                    totals = self._totals
                    totals.input_tokens += usage.input_tokens
                    totals.output_tokens += usage.output_tokens
                    totals.cache_read_tokens += usage.cache_read_tokens
                    totals.cache_write_tokens += usage.cache_write_tokens
                    totals.cost_usd += cost
                record = exchange.record(len(self._calls), cost, self._redact_text)
                self._calls.append(record)
                snapshot = dataclasses.replace(self._totals)
            if self._log is not None:
                self._log.write(json.dumps(dataclasses.asdict(record)) + "\n")
                self._log.flush()
            if self.on_call is not None:
                try:
                    self.on_call(record, snapshot)
                except Exception:
                    logger.exception("the gateway's on_call failed for call %d", record.index)


def _limit_sentence(limit: str, value: float | int) -> str:
    if limit == "max_cost_usd":
        amount = f"{value:,.2f}" if round(value, 2) == value else f"{value:g}"
        spent = f"this run's cost limit (${amount}) is spent"
    elif limit == "max_tokens":
        spent = f"this run's token limit ({value:,} tokens) is used up"
    else:
        spent = f"this run's limit of {value:,} model calls is reached"
    return f"Mergeable gateway: {spent}; no further model calls are allowed."


def _route(method: str, path: str) -> str | None:
    """The request's route: "root", "models", "model" (GET /models/ID), one of the forwarded
    routes ("chat", "responses", "messages", "count_tokens"), or None."""
    if path in ("", "/"):
        return "root" if method in ("GET", "HEAD") else None
    rest = path.rstrip("/")
    if rest.startswith("/v1/"):
        rest = rest[len("/v1") :]
    if method == "GET" and rest == "/models":
        return "models"
    if method == "GET" and rest.startswith("/models/"):
        return "model"
    if method == "POST":
        return _ROUTES.get(rest)
    return None


def _event_data(event: bytes) -> bytes:
    """The data of one server-sent event (its `data:` lines joined)."""
    lines = [
        line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")
    ]
    return b"\n".join(lines)


def _split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete events (each with its blank line) and the incomplete rest."""
    events, start = [], 0
    for match in _EVENT_END.finditer(buffer):
        events.append(buffer[start : match.end()])
        start = match.end()
    return events, buffer[start:]


# -- one request ---------------------------------------------------------------------------------


class _Capture:
    """The first RECORD_LIMIT bytes of a body, and its full size."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        room = RECORD_LIMIT - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    def set(self, body: bytes) -> None:
        self.data = bytearray(body[:RECORD_LIMIT])
        self.size = len(body)

    def text(self) -> str:
        text = self.data.decode("utf-8", "replace")
        if self.size > len(self.data):
            text += f"\n[… {self.size - len(self.data)} more bytes not recorded]"
        return text


@dataclass
class _Exchange:
    method: str
    path: str
    started: float
    started_at: str
    status: int = 0
    stream: bool = False
    metered: bool = False
    error: str = ""
    settled: bool = False
    wire: str = "chat"  # the caller's wire format: its errors are written in it
    usage: wire_formats.Usage = dataclasses.field(default_factory=wire_formats.Usage)
    request: _Capture = dataclasses.field(default_factory=_Capture)
    response: _Capture = dataclasses.field(default_factory=_Capture)

    def record(self, index: int, cost: float, redact: Callable[[str], str]) -> CallRecord:
        return CallRecord(
            index=index,
            method=self.method,
            path=self.path,
            status=self.status,
            latency_s=round(time.perf_counter() - self.started, 6),
            stream=self.stream,
            input_tokens=self.usage.input_tokens,
            output_tokens=self.usage.output_tokens,
            cache_read_tokens=self.usage.cache_read_tokens,
            cache_write_tokens=self.usage.cache_write_tokens,
            cost_usd=cost,
            request=self.request.text(),
            response=redact(self.response.text()),
            error=redact(self.error),
            started_at=self.started_at,
        )


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: str, gateway: Gateway) -> None:
        self.gateway = gateway
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(path, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            if len(self._connections) >= MAX_CONNECTIONS:
                logger.warning("gateway: more than %d connections; refusing", MAX_CONNECTIONS)
                self.shutdown_request(request)
                return
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End every open connection: after the run, its keep-alive connections are useless."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked streams
    server_version = "mergeable-gateway"
    timeout = IDLE_TIMEOUT
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes to stderr and asks for a client address a Unix socket lacks.
        logger.debug("gateway: " + format, *args)

    def _handle(self) -> None:
        """Every method comes here; `_serve` routes by method and path."""
        gateway = self.server.gateway
        exchange = _Exchange(
            method=self.command,
            path=self.path,
            started=time.perf_counter(),
            started_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )
        self._answered = False
        try:
            self._serve(gateway, exchange)
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as exc:
            exchange.error = exchange.error or f"the client went away: {type(exc).__name__}"
            self.close_connection = True
        except Exception as exc:
            logger.exception("gateway: %s %s failed", self.command, self.path)
            exchange.error = f"gateway error: {type(exc).__name__}: {exc}"
            self.close_connection = True
            if not self._answered:
                try:
                    self._send_error(exchange, 500, "Mergeable gateway: internal error")
                except OSError:
                    pass
        finally:
            self._settle(exchange)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

    def _serve(self, gateway: Gateway, exchange: _Exchange) -> None:
        path, _, query = self.path.partition("?")
        route = _route(self.command, path)
        exchange.wire = self._caller_wire(gateway, route)
        try:
            body = self._read_body()
        except _BadRequest as exc:
            self.close_connection = True  # what is left of the body cannot be skipped reliably
            self._send_error(exchange, exc.status, f"Mergeable gateway: {exc}")
            return
        exchange.request.set(body)
        if route == "root":
            self._send(exchange, 200, ROOT_BODY, "text/plain; charset=utf-8")
            return
        if not gateway._authorized(self.headers):
            self._send_error(exchange, 401, "Mergeable gateway: missing or wrong run token")
            return
        if route is None:
            message = f"Mergeable gateway: no route for {self.command} {path}"
            self._send_error(exchange, 404, message)
            return
        provider = wire_formats.family(exchange.wire)
        if route == "models":
            self._send_json(exchange, 200, gateway._model_list(provider))
            return
        if route == "model":
            wanted = path.rstrip("/").split("/models/", 1)[1]  # ids may hold slashes
            if wanted == gateway.upstream.model:
                self._send_json(exchange, 200, gateway._model_entry(provider))
            else:
                self._send_error(exchange, 404, f"Mergeable gateway: no model {wanted!r} here")
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            self._send_error(exchange, 400, "Mergeable gateway: the body must be a JSON object")
            return
        if route == "count_tokens" and gateway.wire != "messages":
            # Free, and only Anthropic counts: an estimate beats a 404 that stops Claude Code.
            estimate = {"input_tokens": wire_formats.estimate_input_tokens(payload)}
            self._send_json(exchange, 200, estimate)
            return
        translation = None
        if route in wire_formats.WIRES and route != gateway.wire:
            model = gateway.upstream.model
            try:
                translation = wire_formats.Translation(route, gateway.wire, payload, model)
            except wire_formats.TranslationError as exc:
                self._send_error(exchange, 400, f"Mergeable gateway: {exc}")
                return
            forwarded = json.dumps(translation.body, ensure_ascii=False).encode()
            added_usage = False  # a translated stream is rewritten whole: no chunk to hide
            upstream_route = gateway.wire
        else:
            forwarded, added_usage = gateway._rewrite(route, payload)
            upstream_route = route
        exchange.request.set(forwarded)
        if route in _METERED:
            limit = gateway._admit()
            if limit is not None:
                self._send_error(exchange, 403, gateway.limit_message(), code=limit)
                return
            exchange.metered = True
        url = gateway._upstream_url(upstream_route, query)
        self._forward(gateway, exchange, upstream_route, url, forwarded, added_usage, translation)

    def _caller_wire(self, gateway: Gateway, route: str | None) -> str:
        """The wire format the caller speaks, for the gateway's own answers to it."""
        if route in wire_formats.WIRES:
            return route
        if route == "count_tokens" or self.headers.get("anthropic-version"):
            return "messages"
        return "messages" if gateway.upstream.provider == "anthropic" else "chat"

    def _forward(
        self,
        gateway: Gateway,
        exchange: _Exchange,
        route: str,
        url: str,
        body: bytes,
        hide_usage_chunk: bool,
        translation: wire_formats.Translation | None,
    ) -> None:
        """Send `body` to the upstream's `route` and relay the answer (translated back, with a
        `translation`)."""
        client = gateway._client
        assert client is not None  # set by start(), which began serving
        try:
            request = client.build_request(
                "POST",
                url,
                content=body,
                headers=gateway._upstream_headers(self.headers, translation is not None),
                timeout=gateway._timeout,
            )
            response = client.send(request, stream=True)
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: the gateway was closed
            exchange.error = f"could not reach the model endpoint: {type(exc).__name__}: {exc}"
            message = (
                "Mergeable gateway: could not reach the model endpoint "
                f"({type(exc).__name__}); try again later"
            )
            self._send_error(exchange, 502, message)
            return
        try:
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("text/event-stream"):
                stream = translation.start_stream() if translation else None
                self._relay_stream(gateway, exchange, route, response, hide_usage_chunk, stream)
            else:
                self._relay_body(gateway, exchange, route, response, translation)
        finally:
            response.close()

    def _relay_body(
        self,
        gateway: Gateway,
        exchange: _Exchange,
        route: str,
        response: httpx.Response,
        translation: wire_formats.Translation | None,
    ) -> None:
        try:
            data = gateway._redact(response.read())
        except httpx.HTTPError as exc:
            exchange.error = f"the model endpoint broke off: {type(exc).__name__}: {exc}"
            self._send_error(exchange, 502, "Mergeable gateway: the model endpoint broke off")
            return
        reply = None
        if response.status_code < 300 and route in _METERED:
            try:
                reply = json.loads(data)
            except ValueError:
                reply = None
            if isinstance(reply, dict):
                exchange.usage.read(route, reply)
        exchange.status = response.status_code
        exchange.response.set(data)  # the record keeps what the upstream said
        if translation is not None:
            self._relay_translated_body(gateway, exchange, response, translation, data, reply)
            return
        headers = self._relayed_headers(gateway, response)
        headers.append(("Content-Length", str(len(data))))
        self._begin(response.status_code, headers)
        self._settle(exchange)
        self.wfile.write(data)

    def _relay_translated_body(
        self,
        gateway: Gateway,
        exchange: _Exchange,
        response: httpx.Response,
        translation: wire_formats.Translation,
        data: bytes,
        reply: Any,
    ) -> None:
        status = response.status_code
        content_type = "application/json"
        if status >= 300:
            answer = json.dumps(translation.error(status, data)).encode()
        elif not isinstance(reply, dict):
            exchange.error = "the model endpoint answered with something other than JSON"
            self._send_error(exchange, 502, f"Mergeable gateway: {exchange.error}")
            return
        else:
            try:
                if translation.stream:  # an endpoint that would not stream: replay its answer
                    answer = translation.start_stream().replay(reply, exchange.usage)
                    content_type = "text/event-stream"
                else:
                    answer = json.dumps(translation.reply(reply, exchange.usage)).encode()
            except wire_formats.TranslationError as exc:
                exchange.error = str(exc)
                self._send_error(exchange, 502, f"Mergeable gateway: {exc}")
                return
        headers = self._relayed_headers(gateway, response, translated=True)
        headers += [("Content-Type", content_type), ("Content-Length", str(len(answer)))]
        self._begin(status, headers)
        self._settle(exchange)
        self.wfile.write(answer)

    def _relay_stream(
        self,
        gateway: Gateway,
        exchange: _Exchange,
        route: str,
        response: httpx.Response,
        hide_usage_chunk: bool,
        translation: wire_formats.StreamTranslation | None,
    ) -> None:
        """Relay whole events as they arrive, reading usage from them on the way.

        With `hide_usage_chunk`, the usage-only chunk the gateway asked for on the client's
        behalf is kept from it: a client that did not ask expects no chunk without choices.
        With a `translation`, each event is relayed as the caller's events it makes.
        """
        exchange.stream = True
        exchange.status = response.status_code
        chunked = self.request_version == "HTTP/1.1"
        headers = self._relayed_headers(gateway, response, translated=translation is not None)
        if translation is not None:
            headers += [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            self.close_connection = True  # an HTTP/1.0 client reads to the end of the connection
        self._begin(response.status_code, headers)
        pending = b""
        write = functools.partial(
            self._write_events, gateway, exchange, route, hide_usage_chunk, chunked, translation
        )
        try:
            for data in response.iter_bytes():
                events, pending = _split_events(pending + data)
                write(events)
        except httpx.HTTPError as exc:
            # Headers are gone; breaking the connection is the only honest way to say so.
            exchange.error = f"the model endpoint broke off: {type(exc).__name__}: {exc}"
            self.close_connection = True
            return
        if pending:
            write([pending])
        self._settle(exchange)
        if translation is not None:
            self._write_chunk(translation.close(exchange.usage), chunked)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _write_events(
        self,
        gateway: Gateway,
        exchange: _Exchange,
        route: str,
        hide_usage_chunk: bool,
        chunked: bool,
        translation: wire_formats.StreamTranslation | None,
        events: list[bytes],
    ) -> None:
        out = []
        for event in events:
            event = gateway._redact(event)
            exchange.response.add(event)
            data = _event_data(event)
            if b'"usage"' in data:  # most events carry no usage: skip parsing them
                try:
                    payload = json.loads(data)
                except ValueError:
                    payload = None
                if isinstance(payload, dict):
                    exchange.usage.read(route, payload)
                    if hide_usage_chunk and payload.get("choices") == []:
                        continue
            if translation is not None:
                event = translation.feed(data, exchange.usage)
            out.append(event)
        self._write_chunk(b"".join(out), chunked)

    def _write_chunk(self, body: bytes, chunked: bool) -> None:
        if body:
            self.wfile.write(b"%X\r\n%b\r\n" % (len(body), body) if chunked else body)

    def _relayed_headers(
        self, gateway: Gateway, response: httpx.Response, translated: bool = False
    ) -> list[tuple[str, str]]:
        dropped = _NOT_RELAYED | {
            name.strip().lower() for name in response.headers.get("connection", "").split(",")
        }
        secret = gateway._secret.decode()
        return [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in dropped
            and not (secret and secret in value)
            and (not translated or name.lower() in _RELAYED_WHEN_TRANSLATED)
        ]

    # -- reading and answering -------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            return self._read_chunked_body()
        length = self.headers.get("content-length")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise _BadRequest(400, "Content-Length is not a number") from None
        if size < 0:
            raise _BadRequest(400, "Content-Length is negative")
        if size > MAX_REQUEST_BYTES:
            raise _BadRequest(413, f"the request is larger than {MAX_REQUEST_BYTES} bytes")
        return self.rfile.read(size)

    def _read_chunked_body(self) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > MAX_REQUEST_BYTES:
                raise _BadRequest(413, f"the request is larger than {MAX_REQUEST_BYTES} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)  # the CRLF after the chunk

    def _settle(self, exchange: _Exchange) -> None:
        """Count, record and report the call, once: before the client has the last byte of its
        answer, so that whoever sees the answer also sees the call in the totals."""
        if not exchange.settled:
            exchange.settled = True
            self.server.gateway._finish(exchange)

    def _begin(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._answered = True

    def _send(self, exchange: _Exchange, status: int, body: bytes, content_type: str) -> None:
        exchange.status = status
        exchange.response.set(body)
        self._begin(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        self._settle(exchange)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, exchange: _Exchange, status: int, payload: dict) -> None:
        self._send(exchange, status, json.dumps(payload).encode(), "application/json")

    def _send_error(
        self, exchange: _Exchange, status: int, message: str, code: str | None = None
    ) -> None:
        payload = wire_formats.error_payload(exchange.wire, status, message, code)
        self._send_json(exchange, status, payload)
