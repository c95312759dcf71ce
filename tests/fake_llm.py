"""A real HTTP server on 127.0.0.1 that plays scripted LLM replies, for the whole test suite.

It speaks OpenAI chat completions (`POST /v1/chat/completions` and `POST /chat/completions`),
the OpenAI Responses API (`POST /v1/responses` and `POST /responses`) and Anthropic messages
(`POST /v1/messages`, plus `POST /v1/messages/count_tokens`), each with `"stream": true` as
server-sent events too, so providers, the run gateway and CLI harnesses can be tested end to end
without the internet.

Replies are provider-neutral and rendered in the wire format of the endpoint called:

    {"text": "...",                                        # optional
     "tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}],   # optional
     "usage": {"input_tokens": 10, "output_tokens": 5},    # optional; these are the defaults
     "stop_reason": "length"}                              # optional: "stop"|"tool_calls"|"length"

`"stream_error": "message"` in a reply cuts its stream after the first event with an error event in
the endpoint's format (chat: a data-only {"error": ...}; Responses: response.failed; Anthropic:
an `error` event); replies that are not streamed ignore it.

`usage` may also hold `cache_read_tokens` and `cache_write_tokens`. `input_tokens` is then the
total input, cached or not, as OpenAI counts it; Anthropic's wire format gets the uncached rest
as its `input_tokens` and the cache counts in their own fields.

`arguments` given as a string is sent verbatim (to test invalid JSON from a model). When the
queue is empty the server answers with plain text "done" and no tool calls.

    with FakeLLM([{"text": "hi"}]) as llm:
        ... base_url=llm.base_url_openai ...
        assert llm.requests[0]["body"]["model"] == "m"

Each recorded request has `path` (without the query string), `query`, `headers` (lower-cased
names) and `body`. Set `stream_gate` to a `threading.Event` to hold every stream after its first
event until the event is set (for testing that a proxy relays a stream as it arrives).
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_USAGE = {"input_tokens": 10, "output_tokens": 5}
EXHAUSTED_REPLY = {"text": "done"}

_OPENAI_PATHS = {"/v1/chat/completions", "/chat/completions"}
_RESPONSES_PATHS = {"/v1/responses", "/responses"}
_ANTHROPIC_PATHS = {"/v1/messages"}
_COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
STREAM_GATE_TIMEOUT = 10.0
_OPENAI_REASONS = {"stop": "stop", "tool_calls": "tool_calls", "length": "length"}
_ANTHROPIC_REASONS = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}


class FakeLLM:
    """Scripted OpenAI + Anthropic endpoint in a background thread. Thread-safe.

    The server starts on construction; use it as a context manager (or call `close()`).
    """

    def __init__(self, replies: list[dict] | None = None, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[dict] = []
        self.stream_gate: threading.Event | None = None
        self._replies: deque[dict] = deque(replies or [])
        self._failures: deque[tuple[int, float | None]] = deque()
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._server = _Server(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            # a short poll interval keeps close() (and so every test using this) fast
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-llm",
            daemon=True,
        )
        self._thread.start()
        port = self._server.server_address[1]
        self.base_url_anthropic = f"http://127.0.0.1:{port}"
        self.base_url_openai = f"{self.base_url_anthropic}/v1"

    def queue(self, *replies: dict) -> None:
        with self._lock:
            self._replies.extend(replies)

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `times` requests with `status` (and Retry-After, if given)."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * times)

    @property
    def remaining(self) -> int:
        """Scripted replies not yet served."""
        with self._lock:
            return len(self._replies)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- called from handler threads --------------------------------------------------------

    def _record(self, path: str, query: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.requests.append({"path": path, "query": query, "headers": headers, "body": body})

    def _next(self) -> tuple[str, Any]:
        """("fail", (status, retry_after)) or ("reply", reply); consumes one either way."""
        with self._lock:
            if self._failures:
                return "fail", self._failures.popleft()
            reply = self._replies.popleft() if self._replies else EXHAUSTED_REPLY
            return "reply", reply

    def _serial(self) -> int:
        with self._lock:
            return next(self._counter)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (one that timed out on purpose) is expected, not worth a trace.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _make_handler(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send_json(
                    200, {"object": "list", "data": [{"id": "fake", "object": "model"}]}
                )
            else:
                self._send_json(404, {"error": {"message": f"no route for GET {self.path}"}})

        def do_POST(self) -> None:
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                fake._record(path, query, headers, raw.decode("utf-8", "replace"))
                self._send_json(400, {"error": {"message": "body is not JSON"}})
                return
            fake._record(path, query, headers, body)
            if path == _COUNT_TOKENS_PATH:  # free, and no scripted reply is used up
                messages = body.get("messages") if isinstance(body, dict) else None
                self._send_json(200, {"input_tokens": max(1, len(json.dumps(messages)) // 4)})
                return
            if path in _OPENAI_PATHS:
                flavour = "openai"
            elif path in _RESPONSES_PATHS:
                flavour = "responses"
            elif path in _ANTHROPIC_PATHS:
                flavour = "anthropic"
            else:
                self._send_json(404, {"error": {"message": f"no route for POST {path}"}})
                return
            if fake.delay:
                time.sleep(fake.delay)
            kind, item = fake._next()
            stream = isinstance(body, dict) and bool(body.get("stream"))
            if kind == "fail":
                status, retry_after = item
                self._send_failure(flavour, status, retry_after)
            elif flavour == "anthropic" and stream:
                self._send_events(_cut(_anthropic_events(item, body, fake._serial()), item))
            elif flavour == "anthropic":
                self._send_json(200, _anthropic_reply(item, body, fake._serial()))
            elif flavour == "responses" and stream:
                self._send_events(_cut(_responses_events(item, body, fake._serial()), item))
            elif flavour == "responses":
                self._send_json(200, _responses_reply(item, body, fake._serial()))
            elif stream:
                self._send_openai_stream(item, body, fake._serial())
            else:
                self._send_json(200, _openai_reply(item, body, fake._serial()))

        def _send_failure(self, flavour: str, status: int, retry_after: float | None) -> None:
            message = f"fake failure with status {status}"
            if flavour == "anthropic":
                payload = {"type": "error", "error": {"type": "api_error", "message": message}}
            else:
                payload = {"error": {"message": message, "type": "fake_error", "code": status}}
            extra = {"Retry-After": _format_seconds(retry_after)} if retry_after is not None else {}
            self._send_json(status, payload, extra)

        def _send_json(self, status: int, payload: Any, extra: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_openai_stream(self, reply: dict, body: dict, serial: int) -> None:
            events: list[tuple[str | None, Any]] = [
                (None, chunk) for chunk in _openai_chunks(reply, body, serial)
            ]
            self._send_events(_cut([*events, (None, "[DONE]")], reply))

        def _send_events(self, events: list[tuple[str | None, Any]]) -> None:
            """Server-sent events: (event name or None, data as JSON or a raw string)."""
            # HTTP/1.0 without Content-Length: closing the connection ends the stream.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            for number, (name, data) in enumerate(events):
                if number == 1 and fake.stream_gate is not None:
                    fake.stream_gate.wait(STREAM_GATE_TIMEOUT)
                text = data if isinstance(data, str) else json.dumps(data)
                prefix = f"event: {name}\n" if name else ""
                self.wfile.write(f"{prefix}data: {text}\n\n".encode())

    return Handler


def _cut(events: list[tuple[str | None, Any]], reply: dict) -> list[tuple[str | None, Any]]:
    """The stream, cut after its first event by the reply's `stream_error`, if it has one."""
    message = reply.get("stream_error")
    if not message:
        return events
    first_name, first = events[0]
    if first_name == "message_start":
        error = {"type": "error", "error": {"type": "overloaded_error", "message": message}}
        return [events[0], ("error", error)]
    if first_name is None:
        return [events[0], (None, {"error": {"message": message, "type": "server_error"}})]
    failed = {
        **first["response"],
        "status": "failed",
        "error": {"code": "server_error", "message": message},
    }
    return [events[0], ("response.failed", {"type": "response.failed", "response": failed})]


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def _usage(reply: dict) -> tuple[int, int]:
    usage = {**DEFAULT_USAGE, **(reply.get("usage") or {})}
    return int(usage["input_tokens"]), int(usage["output_tokens"])


def _cache_usage(reply: dict) -> dict[str, int]:
    """The cache counts the reply sets: {"cache_read_tokens": n, "cache_write_tokens": n}."""
    usage = reply.get("usage") or {}
    return {
        name: int(usage[name])
        for name in ("cache_read_tokens", "cache_write_tokens")
        if usage.get(name) is not None
    }


def _openai_usage(reply: dict) -> dict:
    input_tokens, output_tokens = _usage(reply)
    usage: dict[str, Any] = {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    cache = _cache_usage(reply)
    if "cache_read_tokens" in cache:
        usage["prompt_tokens_details"] = {"cached_tokens": cache["cache_read_tokens"]}
    return usage


def _anthropic_usage(reply: dict) -> dict:
    input_tokens, output_tokens = _usage(reply)
    cache = _cache_usage(reply)
    usage = {
        # Anthropic counts cached input apart from input_tokens.
        "input_tokens": input_tokens - sum(cache.values()),
        "output_tokens": output_tokens,
    }
    if "cache_read_tokens" in cache:
        usage["cache_read_input_tokens"] = cache["cache_read_tokens"]
    if "cache_write_tokens" in cache:
        usage["cache_creation_input_tokens"] = cache["cache_write_tokens"]
    return usage


def _neutral_reason(reply: dict) -> str:
    if reply.get("stop_reason"):
        return reply["stop_reason"]
    return "tool_calls" if reply.get("tool_calls") else "stop"


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments or {})


def _model(body: Any) -> str:
    return body.get("model", "fake") if isinstance(body, dict) else "fake"


def _openai_tool_calls(reply: dict, serial: int) -> list[dict]:
    return [
        {
            "id": f"call_fake_{serial}_{i}",
            "type": "function",
            "function": {"name": call["name"], "arguments": _arguments_text(call.get("arguments"))},
        }
        for i, call in enumerate(reply.get("tool_calls") or [])
    ]


def _openai_reply(reply: dict, body: Any, serial: int) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("text") or None}
    tool_calls = _openai_tool_calls(reply, serial)
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-fake-{serial}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _model(body),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _OPENAI_REASONS.get(
                    _neutral_reason(reply), _neutral_reason(reply)
                ),
            }
        ],
        "usage": _openai_usage(reply),
    }


def _openai_chunks(reply: dict, body: dict, serial: int) -> list[dict]:
    base = {
        "id": f"chatcmpl-fake-{serial}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": _model(body),
    }

    def chunk(delta: dict, finish_reason: str | None = None) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    chunks = [chunk({"role": "assistant", "content": reply.get("text") or ""})]
    for index, call in enumerate(_openai_tool_calls(reply, serial)):
        chunks.append(chunk({"tool_calls": [{"index": index, **call}]}))
    reason = _neutral_reason(reply)
    chunks.append(chunk({}, _OPENAI_REASONS.get(reason, reason)))
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "choices": [], "usage": _openai_usage(reply)})
    return chunks


def _anthropic_reply(reply: dict, body: Any, serial: int) -> dict:
    content: list[dict] = []
    if reply.get("text"):
        content.append({"type": "text", "text": reply["text"]})
    for i, call in enumerate(reply.get("tool_calls") or []):
        content.append(
            {
                "type": "tool_use",
                "id": f"toolu_fake_{serial}_{i}",
                "name": call["name"],
                "input": call.get("arguments") or {},
            }
        )
    reason = _neutral_reason(reply)
    return {
        "id": f"msg_fake_{serial}",
        "type": "message",
        "role": "assistant",
        "model": _model(body),
        "content": content,
        "stop_reason": _ANTHROPIC_REASONS.get(reason, reason),
        "stop_sequence": None,
        "usage": _anthropic_usage(reply),
    }


def _anthropic_events(reply: dict, body: Any, serial: int) -> list[tuple[str | None, Any]]:
    """The reply as Anthropic's stream: message_start, one start/delta/stop per content block,
    message_delta (stop reason and output tokens), message_stop."""
    message = _anthropic_reply(reply, body, serial)
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opened = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            opened = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opened},
            ),
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


# -- OpenAI Responses API ----------------------------------------------------------------------


def _responses_reply(reply: dict, body: Any, serial: int) -> dict:
    input_tokens, output_tokens = _usage(reply)
    output: list[dict] = []
    if reply.get("text"):
        output.append(
            {
                "type": "message",
                "id": f"msg_fake_{serial}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply["text"], "annotations": []}],
            }
        )
    for i, call in enumerate(reply.get("tool_calls") or []):
        output.append(
            {
                "type": "function_call",
                "id": f"fc_fake_{serial}_{i}",
                "call_id": f"call_fake_{serial}_{i}",
                "name": call["name"],
                "arguments": _arguments_text(call.get("arguments")),
                "status": "completed",
            }
        )
    truncated = _neutral_reason(reply) == "length"
    return {
        "id": f"resp_fake_{serial}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if truncated else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "model": _model(body),
        "output": output,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {
                "cached_tokens": _cache_usage(reply).get("cache_read_tokens", 0)
            },
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }


def _responses_events(reply: dict, body: Any, serial: int) -> list[tuple[str | None, Any]]:
    """The reply as a Responses API stream, ending in response.completed (or .incomplete)."""
    final = _responses_reply(reply, body, serial)
    in_progress = {**final, "status": "in_progress", "output": [], "usage": None}
    events: list[dict] = [
        {"type": "response.created", "response": in_progress},
        {"type": "response.in_progress", "response": in_progress},
    ]
    for index, item in enumerate(final["output"]):
        if item["type"] == "message":
            opened = {**item, "status": "in_progress", "content": []}
            delta = {
                "type": "response.output_text.delta",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "delta": item["content"][0]["text"],
            }
        else:
            opened = {**item, "status": "in_progress", "arguments": ""}
            delta = {
                "type": "response.function_call_arguments.delta",
                "item_id": item["id"],
                "output_index": index,
                "delta": item["arguments"],
            }
        events += [
            {"type": "response.output_item.added", "output_index": index, "item": opened},
            delta,
            {"type": "response.output_item.done", "output_index": index, "item": item},
        ]
    finished = "response.completed" if final["status"] == "completed" else "response.incomplete"
    events.append({"type": finished, "response": final})
    return [
        (event["type"], {**event, "sequence_number": number}) for number, event in enumerate(events)
    ]
