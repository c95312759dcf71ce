"""A real HTTP server on 127.0.0.1 that plays scripted LLM replies, for the whole test suite.

It speaks OpenAI chat completions (`POST /v1/chat/completions` and `POST /chat/completions`,
including `"stream": true` as server-sent events) and Anthropic messages (`POST /v1/messages`),
so providers and CLI harnesses can be tested end to end without the internet.

Replies are provider-neutral and rendered in the wire format of the endpoint called:

    {"text": "...",                                        # optional
     "tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}],   # optional
     "usage": {"input_tokens": 10, "output_tokens": 5},    # optional; these are the defaults
     "stop_reason": "length"}                              # optional: "stop"|"tool_calls"|"length"

`arguments` given as a string is sent verbatim (to test invalid JSON from a model). When the
queue is empty the server answers with plain text "done" and no tool calls.

    with FakeLLM([{"text": "hi"}]) as llm:
        ... base_url=llm.base_url_openai ...
        assert llm.requests[0]["body"]["model"] == "m"
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_USAGE = {"input_tokens": 10, "output_tokens": 5}
EXHAUSTED_REPLY = {"text": "done"}

_OPENAI_PATHS = {"/v1/chat/completions", "/chat/completions"}
_ANTHROPIC_PATHS = {"/v1/messages"}
_OPENAI_REASONS = {"stop": "stop", "tool_calls": "tool_calls", "length": "length"}
_ANTHROPIC_REASONS = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}


class FakeLLM:
    """Scripted OpenAI + Anthropic endpoint in a background thread. Thread-safe.

    The server starts on construction; use it as a context manager (or call `close()`).
    """

    def __init__(self, replies: list[dict] | None = None, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[dict] = []
        self._replies: deque[dict] = deque(replies or [])
        self._failures: deque[tuple[int, float | None]] = deque()
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
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

    def _record(self, path: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body})

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
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                fake._record(path, headers, raw.decode("utf-8", "replace"))
                self._send_json(400, {"error": {"message": "body is not JSON"}})
                return
            fake._record(path, headers, body)
            if path in _OPENAI_PATHS:
                flavour = "openai"
            elif path in _ANTHROPIC_PATHS:
                flavour = "anthropic"
            else:
                self._send_json(404, {"error": {"message": f"no route for POST {path}"}})
                return
            if fake.delay:
                time.sleep(fake.delay)
            kind, item = fake._next()
            if kind == "fail":
                status, retry_after = item
                self._send_failure(flavour, status, retry_after)
            elif flavour == "anthropic":
                self._send_json(200, _anthropic_reply(item, body, fake._serial()))
            elif isinstance(body, dict) and body.get("stream"):
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
            # HTTP/1.0 without Content-Length: closing the connection ends the stream.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            for chunk in _openai_chunks(reply, body, serial):
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

    return Handler


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def _usage(reply: dict) -> tuple[int, int]:
    usage = {**DEFAULT_USAGE, **(reply.get("usage") or {})}
    return int(usage["input_tokens"]), int(usage["output_tokens"])


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
    input_tokens, output_tokens = _usage(reply)
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
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
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
        input_tokens, output_tokens = _usage(reply)
        chunks.append(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": input_tokens,
                    "completion_tokens": output_tokens,
                    "total_tokens": input_tokens + output_tokens,
                },
            }
        )
    return chunks


def _anthropic_reply(reply: dict, body: Any, serial: int) -> dict:
    input_tokens, output_tokens = _usage(reply)
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
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
