"""The three wire formats the run gateway speaks, and translation between them.

CLI harnesses speak fixed formats: Claude Code speaks Anthropic Messages, Codex OpenAI Responses,
opencode, aider, mini-swe-agent and the builtin agent OpenAI chat completions. A contestant's model
may speak another. The gateway (runs/gateway.py) serves all three; when the caller's format is not
the upstream's, it translates here: the request on the way out; the reply, the stream (event by
event) and errors on the way back.

Wires: "chat" (`POST /chat/completions`), "responses" (`POST /responses`), "messages"
(`POST /v1/messages`). An "anthropic" model speaks messages. An "openai" model speaks what its
params' "wire_api" names: "chat", the default, which is what OpenAI-compatible servers (vLLM,
llama.cpp, Ollama, LM Studio...) speak, or "responses", for a server with OpenAI's Responses API
(models served only there, such as the codex ones, need it).

Translation goes through a neutral form: a request is read into a `Request` (turns of text, tool
calls and tool results, and tool definitions) and written in the upstream's format; a reply is
read into a `Reply` and written in the caller's; a stream is read event by event into calls on a
`_StreamWriter` for the caller's format, which writes the caller's events at once. Text streams
delta by delta. Tool calls stream argument by argument to chat and Responses callers; a Messages
caller gets each tool_use block whole, once the model has finished it, so that its input is
always valid JSON.

What does not translate is dropped (see README, "Any model drives any CLI"): reasoning and
thinking, images and documents (a placeholder text stands in), server-side and built-in tools
(web search, computer use...), cache_control and other provider-specific fields.
`previous_response_id` is refused: the gateway keeps no conversation.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from runs import providers

logger = logging.getLogger(__name__)

WIRES = ("chat", "responses", "messages")
OPENAI_WIRES = ("chat", "responses")
# Anthropic requires max_tokens; Codex and chat callers often send none. Every Claude model
# since 3.5 allows this many output tokens.
DEFAULT_MAX_TOKENS = 8192
IMAGE_PLACEHOLDER = "[an image was here; the gateway does not translate images]"
CHARACTERS_PER_TOKEN = 4  # for count_tokens estimates when the upstream cannot count

_STOP_FROM_CHAT = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
_STOP_FROM_MESSAGES = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP_TO_MESSAGES = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
# The reason a Responses answer is "incomplete", by neutral stop reason.
_INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}

_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "mergeable_limit_reached",  # the gateway's only 403
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    502: "mergeable_gateway_error",
}
_OPENAI_ERROR_CODES = {401: "invalid_api_key", 502: "upstream_unreachable"}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    529: "overloaded_error",
}
_ANTHROPIC_ID = re.compile(r"[^a-zA-Z0-9_-]")


class TranslationError(Exception):
    """A request or reply that cannot be translated; the message says why."""


def upstream_wire(config: providers.ModelConfig) -> str:
    """The wire format `config`'s endpoint speaks. Raises ValueError on a bad "wire_api"."""
    wire_api = config.params.get("wire_api")
    if config.provider == "anthropic":
        if wire_api not in (None, "messages"):
            raise ValueError(f'an anthropic model speaks "messages", not wire_api {wire_api!r}')
        return "messages"
    if wire_api is None:
        return "chat"
    if wire_api not in OPENAI_WIRES:
        raise ValueError(f'wire_api must be "chat" or "responses", not {wire_api!r}')
    return wire_api


def family(wire: str) -> str:
    """The provider whose conventions (errors, model lists, headers) a wire follows."""
    return "anthropic" if wire == "messages" else "openai"


def error_payload(wire: str, status: int, message: str, code: str | None = None) -> dict:
    if wire == "messages":
        error_type = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": error_type, "message": message}}
    return {
        "error": {
            "message": message,
            "type": _OPENAI_ERROR_TYPES.get(status, "api_error"),
            "param": None,
            "code": code or _OPENAI_ERROR_CODES.get(status),
        }
    }


def upstream_error_message(body: bytes) -> str:
    """The explanation in an error body, whichever server wrote it."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]  # OpenAI, Anthropic
        for value in (error, data.get("message"), data.get("detail")):  # llama.cpp, vLLM, others
            if isinstance(value, str) and value:
                return value
    text = body.decode("utf-8", "replace").strip()
    return text[:2000] or "the model endpoint answered with an error and no explanation"


def estimate_input_tokens(payload: dict) -> int:
    """About how many tokens a Messages request's input holds, for count_tokens against an
    upstream that cannot count them: four characters a token."""
    text = json.dumps(
        [payload.get("system"), payload.get("messages"), payload.get("tools")], ensure_ascii=False
    )
    return max(1, len(text) // CHARACTERS_PER_TOKEN)


# -- usage ---------------------------------------------------------------------------------------


@dataclass
class Usage:
    """A call's usage, read from whichever wire format reported it."""

    input_tokens: int = 0  # cached input included, whatever the provider's convention
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def read(self, wire: str, data: dict) -> None:
        """Update from a JSON reply or one stream event's data; later events win."""
        if wire == "chat":
            self._read_openai(data.get("usage"), "prompt_tokens", "completion_tokens")
        elif wire == "responses":
            # Streams end in response.completed (or .incomplete, .failed) carrying the response.
            response = data.get("response")
            source = response if isinstance(response, dict) else data
            self._read_openai(source.get("usage"), "input_tokens", "output_tokens")
        elif wire == "messages":
            message = data.get("message")  # message_start; message_delta has usage at the top
            source = message if data.get("type") == "message_start" and message else data
            self._read_anthropic(source.get("usage"))

    def _read_openai(self, usage: Any, input_name: str, output_name: str) -> None:
        if not isinstance(usage, dict):
            return
        details = usage.get(f"{input_name}_details") or {}
        self.input_tokens = _count(usage.get(input_name))
        self.output_tokens = _count(usage.get(output_name))
        self.cache_read_tokens = _count(details.get("cached_tokens"))

    def _read_anthropic(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # Anthropic's input_tokens leaves out cached input; keep the uncached part to re-add.
        uncached = self.input_tokens - self.cache_read_tokens - self.cache_write_tokens
        if usage.get("input_tokens") is not None:
            uncached = _count(usage["input_tokens"])
        if usage.get("cache_read_input_tokens") is not None:
            self.cache_read_tokens = _count(usage["cache_read_input_tokens"])
        if usage.get("cache_creation_input_tokens") is not None:
            self.cache_write_tokens = _count(usage["cache_creation_input_tokens"])
        if usage.get("output_tokens") is not None:
            self.output_tokens = _count(usage["output_tokens"])
        self.input_tokens = uncached + self.cache_read_tokens + self.cache_write_tokens


def _count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _chat_usage(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
    }


def _responses_usage(usage: Usage) -> dict:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _messages_usage(usage: Usage) -> dict:
    cached = usage.cache_read_tokens + usage.cache_write_tokens
    return {
        "input_tokens": max(0, usage.input_tokens - cached),
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
    }


# -- the neutral form ----------------------------------------------------------------------------


@dataclass
class Text:
    text: str


@dataclass
class ToolCall:
    call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass
class ToolResult:
    call_id: str
    output: str
    is_error: bool = False


@dataclass
class Turn:
    role: str  # "system" | "user" | "assistant"; tool results are the user's
    parts: list[Text | ToolCall | ToolResult]


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict  # JSON Schema of the arguments
    custom: bool = False  # a Responses custom tool: free text in, passed on as {"input": text}


@dataclass
class Request:
    turns: list[Turn] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str | None = None  # "auto" | "none" | "required" | "tool" (then tool_name)
    tool_name: str = ""
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False


@dataclass
class Reply:
    id: str
    model: str
    parts: list[Text | ToolCall]
    stop: str  # "stop" | "length" | "tool_calls" | "content_filter"


# -- one call ------------------------------------------------------------------------------------


class Translation:
    """One call from a `caller` wire to an `upstream` wire.

    `body` is the request to send upstream, with `model` forced. `reply`, `error` and
    `start_stream` bring back what the upstream answers. Raises TranslationError for a request
    it cannot translate.
    """

    def __init__(self, caller: str, upstream: str, payload: dict, model: str) -> None:
        self.caller = caller
        self.upstream = upstream
        request = _REQUEST_READERS[caller](payload)
        self.model = model or str(payload.get("model") or "")
        self.stream = request.stream
        options = payload.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        self.custom_tools = {tool.name for tool in request.tools if tool.custom}
        self.body = _REQUEST_WRITERS[upstream](request, self.model)

    def reply(self, data: dict, usage: Usage) -> dict:
        """The upstream's JSON reply, in the caller's format."""
        reply = _REPLY_READERS[self.upstream](data)
        return _REPLY_WRITERS[self.caller](reply, usage, self)

    def error(self, status: int, body: bytes) -> dict:
        """The upstream's error body, in the caller's format."""
        return error_payload(self.caller, status, upstream_error_message(body))

    def start_stream(self) -> StreamTranslation:
        return StreamTranslation(self)


class StreamTranslation:
    """The upstream's stream, read event by event and written as the caller's events.

    `feed` takes each upstream event's data and the call's usage as metered so far, and returns
    the caller's events it makes (often none, sometimes several). `close` ends the caller's
    stream when the upstream's has ended.
    """

    def __init__(self, translation: Translation) -> None:
        self._reader = _STREAM_READERS[translation.upstream]()
        self._writer = _STREAM_WRITERS[translation.caller](translation)

    def feed(self, data: bytes, usage: Usage) -> bytes:
        writer = self._writer
        if writer.ended or not data.strip():
            return b""
        if data.strip() == b"[DONE]":
            self._reader.over = True
        else:
            try:
                event = json.loads(data)
            except ValueError:
                event = None
            if isinstance(event, dict):
                self._reader.read(event, writer)
        if self._reader.over and not writer.ended:
            writer.end(usage)
        return writer.drain()

    def close(self, usage: Usage) -> bytes:
        writer = self._writer
        if not writer.ended:
            if writer.stop is None:
                writer.error("the model endpoint ended its stream before finishing the answer")
            else:
                writer.end(usage)
        return writer.drain()

    def replay(self, data: dict, usage: Usage) -> bytes:
        """A whole JSON reply (from an upstream that would not stream) as the caller's stream."""
        reply = _REPLY_READERS[self._reader.wire](data)
        writer = self._writer
        writer.start(reply.id, reply.model)
        for part in reply.parts:
            if isinstance(part, Text):
                writer.text(part.text)
            else:
                index = len(writer.tools)
                writer.tool_start(index, part.call_id, part.name)
                writer.tool_arguments(index, part.arguments)
                writer.tool_done(index)
        writer.finish(reply.stop)
        writer.end(usage)
        return writer.drain()


# -- reading requests ----------------------------------------------------------------------------


def _read_chat_request(payload: dict) -> Request:
    request = Request(stream=bool(payload.get("stream")))
    for message in _objects(payload.get("messages"), "messages"):
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            request.turns.append(Turn("system", _texts(content)))
        elif role == "user":
            request.turns.append(Turn("user", _texts(content)))
        elif role == "assistant":
            parts: list[Text | ToolCall | ToolResult] = list(_texts(content))
            for call in _objects(message.get("tool_calls"), "tool_calls"):
                function = call.get("function") if isinstance(call.get("function"), dict) else {}
                parts.append(
                    ToolCall(
                        _text(call.get("id")),
                        _text(function.get("name")),
                        _arguments_text(function.get("arguments")),
                    )
                )
            request.turns.append(Turn("assistant", parts))
        elif role == "tool":
            result = ToolResult(_text(message.get("tool_call_id")), _joined(_texts(content)))
            request.turns.append(Turn("user", [result]))
        else:
            raise TranslationError(f"a message has an unknown role {role!r}")
    for tool in _objects(payload.get("tools"), "tools"):
        function = tool.get("function")
        if tool.get("type", "function") == "function" and isinstance(function, dict):
            request.tools.append(_tool(function.get("name"), function))
    choice = payload.get("tool_choice")
    if isinstance(choice, dict):
        function = choice.get("function") if isinstance(choice.get("function"), dict) else {}
        request.tool_choice, request.tool_name = "tool", _text(function.get("name"))
    elif choice in ("auto", "none", "required"):
        request.tool_choice = choice
    request.parallel_tool_calls = _bool_or_none(payload.get("parallel_tool_calls"))
    request.max_tokens = _int_or_none(
        payload.get("max_completion_tokens") or payload.get("max_tokens")
    )
    _read_sampling(request, payload)
    stop = payload.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    request.stop = [text for text in stops if isinstance(text, str)]
    return request


def _read_messages_request(payload: dict) -> Request:
    request = Request(stream=bool(payload.get("stream")))
    system = _texts(payload.get("system"))
    if system:
        request.turns.append(Turn("system", system))
    for message in _objects(payload.get("messages"), "messages"):
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant", "system"):
            raise TranslationError(f"a message has an unknown role {role!r}")
        parts: list[Text | ToolCall | ToolResult] = []
        for block in [content] if isinstance(content, str) else _objects(content, "content"):
            if isinstance(block, str):
                parts.append(Text(block))
            elif block.get("type") == "tool_use":
                arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
                parts.append(ToolCall(_text(block.get("id")), _text(block.get("name")), arguments))
            elif block.get("type") == "tool_result":
                output = _joined(_texts(block.get("content")))
                result = ToolResult(
                    _text(block.get("tool_use_id")), output, bool(block.get("is_error"))
                )
                parts.append(result)
            else:
                parts.extend(_texts([block]))
        request.turns.append(Turn(role, parts))
    for tool in _objects(payload.get("tools"), "tools"):
        # Typed tools (web_search_..., bash_..., text_editor_...) run on Anthropic's side.
        if tool.get("type") in (None, "custom"):
            request.tools.append(_tool(tool.get("name"), tool, schema_key="input_schema"))
    choice = payload.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        request.tool_choice = {"any": "required"}.get(kind, kind)
        request.tool_name = _text(choice.get("name"))
        if choice.get("disable_parallel_tool_use") is not None:
            request.parallel_tool_calls = not choice["disable_parallel_tool_use"]
    request.max_tokens = _int_or_none(payload.get("max_tokens"))
    _read_sampling(request, payload)
    request.stop = [s for s in payload.get("stop_sequences") or [] if isinstance(s, str)]
    return request


def _read_responses_request(payload: dict) -> Request:
    if payload.get("previous_response_id"):
        raise TranslationError(
            "previous_response_id cannot be translated: the gateway keeps no conversation, so "
            "send the whole conversation as input"
        )
    request = Request(stream=bool(payload.get("stream")))
    instructions = payload.get("instructions")
    if isinstance(instructions, str) and instructions:
        request.turns.append(Turn("system", [Text(instructions)]))
    items = payload.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    for item in _objects(items, "input"):
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            role = {"developer": "system"}.get(role, role)
            if role not in ("system", "user", "assistant"):
                raise TranslationError(f"an input message has an unknown role {role!r}")
            request.turns.append(Turn(role, _texts(item.get("content"))))
        elif kind == "function_call":
            arguments = _arguments_text(item.get("arguments"))
            call = ToolCall(_text(item.get("call_id")), _text(item.get("name")), arguments)
            request.turns.append(Turn("assistant", [call]))
        elif kind == "custom_tool_call":
            arguments = json.dumps({"input": _text(item.get("input"))}, ensure_ascii=False)
            call = ToolCall(_text(item.get("call_id")), _text(item.get("name")), arguments)
            request.turns.append(Turn("assistant", [call]))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            text = output if isinstance(output, str) else _joined(_texts(output))
            request.turns.append(Turn("user", [ToolResult(_text(item.get("call_id")), text)]))
        # reasoning, web_search_call, local_shell_call...: nothing another model can use
    for tool in _objects(payload.get("tools"), "tools"):
        if tool.get("type") == "function":
            request.tools.append(_tool(tool.get("name"), tool))
        elif tool.get("type") == "custom":
            schema = {
                "type": "object",
                "properties": {"input": {"type": "string", "description": "The tool's input."}},
                "required": ["input"],
            }
            request.tools.append(
                Tool(_text(tool.get("name")), _text(tool.get("description")), schema, custom=True)
            )
    choice = payload.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom"):
        request.tool_choice, request.tool_name = "tool", _text(choice.get("name"))
    elif choice in ("auto", "none", "required"):
        request.tool_choice = choice
    request.parallel_tool_calls = _bool_or_none(payload.get("parallel_tool_calls"))
    request.max_tokens = _int_or_none(payload.get("max_output_tokens"))
    _read_sampling(request, payload)
    return request


def _read_sampling(request: Request, payload: dict) -> None:
    for name in ("temperature", "top_p"):
        value = payload.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            setattr(request, name, value)


def _tool(name: Any, definition: dict, schema_key: str = "parameters") -> Tool:
    schema = definition.get(schema_key)
    if not isinstance(schema, dict):
        schema = {"type": "object", "properties": {}}
    return Tool(_text(name), _text(definition.get("description")), schema)


def _texts(content: Any) -> list[Text]:
    """The text of a message's content in any of the three formats; images become a
    placeholder, anything else (thinking, reasoning, documents...) is dropped."""
    if isinstance(content, str):
        return [Text(content)] if content else []
    texts = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, str):
            texts.append(Text(part))
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
            texts.append(Text(part["text"]))
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(Text(part["refusal"]))
        elif kind in ("image", "image_url", "input_image"):
            texts.append(Text(IMAGE_PLACEHOLDER))
    return [text for text in texts if text.text]


def _joined(texts: list[Text]) -> str:
    return "\n\n".join(text.text for text in texts)


def _objects(value: Any, name: str) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise TranslationError(f"{name} must be a list of objects")
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool_or_none(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


# -- writing requests ----------------------------------------------------------------------------


def _write_chat_request(request: Request, model: str) -> dict:
    system, turns = _split_system(request.turns)
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    for turn in _merged(turns):
        texts = _joined([part for part in turn.parts if isinstance(part, Text)])
        if turn.role == "assistant":
            calls = [part for part in turn.parts if isinstance(part, ToolCall)]
            message: dict[str, Any] = {"role": "assistant", "content": texts or None}
            if calls:
                message["tool_calls"] = [
                    {
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in calls
                ]
            messages.append(message)
        else:
            # Tool messages must follow the assistant's calls at once, before any user text.
            for result in (part for part in turn.parts if isinstance(part, ToolResult)):
                messages.append(
                    {"role": "tool", "tool_call_id": result.call_id, "content": result.output}
                )
            if texts:
                messages.append({"role": "user", "content": texts})
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": request.stream}
    if request.stream:
        body["stream_options"] = {"include_usage": True}  # the meter needs it
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in request.tools
        ]
        if request.tool_choice == "tool":
            body["tool_choice"] = {"type": "function", "function": {"name": request.tool_name}}
        elif request.tool_choice:
            body["tool_choice"] = request.tool_choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    # max_tokens, not max_completion_tokens: it is what OpenAI-compatible servers understand.
    _put(body, max_tokens=request.max_tokens, temperature=request.temperature)
    _put(body, top_p=request.top_p, stop=request.stop or None)
    return body


def _write_messages_request(request: Request, model: str) -> dict:
    system, turns = _split_system(request.turns)
    messages = []
    for turn in _merged(turns):
        if turn.role == "assistant":
            content = [_messages_block(part) for part in turn.parts]
        else:  # tool results come first in a user turn
            results = [part for part in turn.parts if isinstance(part, ToolResult)]
            others = [part for part in turn.parts if not isinstance(part, ToolResult)]
            content = [_messages_block(part) for part in results + others]
        if content:
            messages.append({"role": turn.role, "content": content})
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages,
        "stream": request.stream,
    }
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = [
            {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
            for tool in request.tools
        ]
        if request.tool_choice:
            kind = {"required": "any"}.get(request.tool_choice, request.tool_choice)
            choice: dict[str, Any] = {"type": kind}
            if kind == "tool":
                choice["name"] = request.tool_name
            if kind != "none" and request.parallel_tool_calls is False:
                choice["disable_parallel_tool_use"] = True
            body["tool_choice"] = choice
        elif request.parallel_tool_calls is False:
            body["tool_choice"] = {"type": "auto", "disable_parallel_tool_use": True}
    _put(body, temperature=request.temperature, top_p=request.top_p)
    _put(body, stop_sequences=request.stop or None)
    return body


def _messages_block(part: Text | ToolCall | ToolResult) -> dict:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, ToolCall):
        return {
            "type": "tool_use",
            "id": _anthropic_id(part.call_id),
            "name": part.name,
            "input": _arguments_object(part.arguments),
        }
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": _anthropic_id(part.call_id),
        "content": part.output,
    }
    if part.is_error:
        block["is_error"] = True
    return block


def _write_responses_request(request: Request, model: str) -> dict:
    instructions, turns = _split_system(request.turns)
    items: list[dict] = []
    for turn in turns:
        for part in turn.parts:
            if isinstance(part, Text):
                kind = "output_text" if turn.role == "assistant" else "input_text"
                content = [{"type": kind, "text": part.text}]
                items.append({"type": "message", "role": turn.role, "content": content})
            elif isinstance(part, ToolCall):
                items.append(
                    {
                        "type": "function_call",
                        "call_id": part.call_id,
                        "name": part.name,
                        "arguments": part.arguments,
                    }
                )
            else:
                items.append(
                    {"type": "function_call_output", "call_id": part.call_id, "output": part.output}
                )
    # store: false, as Codex sends it: the gateway keeps no conversation, nor should the server.
    body: dict[str, Any] = {
        "model": model,
        "input": items,
        "stream": request.stream,
        "store": False,
    }
    if instructions:
        body["instructions"] = instructions
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
                # The Responses API makes tools strict by default, which most schemas fail.
                "strict": False,
            }
            for tool in request.tools
        ]
        if request.tool_choice == "tool":
            body["tool_choice"] = {"type": "function", "name": request.tool_name}
        elif request.tool_choice:
            body["tool_choice"] = request.tool_choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    _put(body, max_output_tokens=request.max_tokens, temperature=request.temperature)
    _put(body, top_p=request.top_p)
    return body


def _split_system(turns: list[Turn]) -> tuple[str, list[Turn]]:
    """The system prompt (the system turns before any other, joined) and the other turns.

    A system turn later on becomes the user's: Anthropic takes a system prompt only before the
    turns, and many local models' chat templates refuse a system message anywhere but first.
    """
    system: list[str] = []
    rest: list[Turn] = []
    for turn in turns:
        if turn.role == "system" and not rest:
            system.extend(part.text for part in turn.parts if isinstance(part, Text))
        else:
            rest.append(Turn("user", turn.parts) if turn.role == "system" else turn)
    return "\n\n".join(system), rest


def _merged(turns: list[Turn]) -> list[Turn]:
    """Adjacent turns of one role as one turn, as chat and Messages want them."""
    merged: list[Turn] = []
    for turn in turns:
        if merged and merged[-1].role == turn.role:
            merged[-1] = Turn(turn.role, merged[-1].parts + turn.parts)
        else:
            merged.append(Turn(turn.role, list(turn.parts)))
    return [turn for turn in merged if turn.parts]


def _put(body: dict, **values: Any) -> None:
    body.update({name: value for name, value in values.items() if value is not None})


def _anthropic_id(call_id: str) -> str:
    """Anthropic wants tool ids of letters, digits, _ and -; some servers use others."""
    return _ANTHROPIC_ID.sub("_", call_id) or "call_"


def _arguments_object(arguments: str) -> dict:
    """Arguments as the JSON object Anthropic wants; {} if the model wrote something else."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        logger.info(
            "gateway: tool arguments that are not a JSON object became {}: %.200s", arguments
        )
        return {}
    return value


# -- reading replies -----------------------------------------------------------------------------


def _read_chat_reply(data: dict) -> Reply:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TranslationError("the model endpoint answered without choices")
    message = choices[0].get("message") if isinstance(choices[0].get("message"), dict) else {}
    parts: list[Text | ToolCall] = list(_texts(message.get("content")))
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.append(
                ToolCall(
                    _text(call.get("id")) or _new_id("call_"),
                    _text(function.get("name")),
                    _arguments_text(function.get("arguments")),
                )
            )
    stop = _STOP_FROM_CHAT.get(choices[0].get("finish_reason"), "stop")
    return _reply(data, parts, stop)


def _read_messages_reply(data: dict) -> Reply:
    parts: list[Text | ToolCall] = []
    for block in data.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and block.get("text"):
            parts.append(Text(_text(block["text"])))
        elif block.get("type") == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            parts.append(ToolCall(_text(block.get("id")), _text(block.get("name")), arguments))
    return _reply(data, parts, _STOP_FROM_MESSAGES.get(data.get("stop_reason"), "stop"))


def _read_responses_reply(data: dict) -> Reply:
    parts: list[Text | ToolCall] = []
    for item in data.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            parts.extend(_texts(item.get("content")))
        elif item.get("type") == "function_call":
            arguments = _arguments_text(item.get("arguments"))
            parts.append(ToolCall(_text(item.get("call_id")), _text(item.get("name")), arguments))
    return _reply(data, parts, _responses_stop(data))


def _responses_stop(response: dict) -> str:
    details = response.get("incomplete_details")
    if response.get("status") == "incomplete" and isinstance(details, dict):
        return "content_filter" if details.get("reason") == "content_filter" else "length"
    return "stop"


def _reply(data: dict, parts: list[Text | ToolCall], stop: str) -> Reply:
    # Some servers answer a tool call with finish_reason "stop"; callers look for the reason.
    if stop == "stop" and any(isinstance(part, ToolCall) for part in parts):
        stop = "tool_calls"
    return Reply(_text(data.get("id")) or _new_id("gw_"), _text(data.get("model")), parts, stop)


# -- writing replies -----------------------------------------------------------------------------


def _write_chat_reply(reply: Reply, usage: Usage, translation: Translation) -> dict:
    calls = [part for part in reply.parts if isinstance(part, ToolCall)]
    text = _joined([part for part in reply.parts if isinstance(part, Text)])
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ]
    return {
        "id": reply.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": translation.model or reply.model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.stop}],
        "usage": _chat_usage(usage),
    }


def _write_messages_reply(reply: Reply, usage: Usage, translation: Translation) -> dict:
    return {
        "id": reply.id,
        "type": "message",
        "role": "assistant",
        "model": translation.model or reply.model,
        "content": [_messages_block(part) for part in reply.parts],
        "stop_reason": _STOP_TO_MESSAGES[reply.stop],
        "stop_sequence": None,
        "usage": _messages_usage(usage),
    }


def _write_responses_reply(reply: Reply, usage: Usage, translation: Translation) -> dict:
    output = []
    for part in reply.parts:
        if isinstance(part, Text):
            output.append(_responses_message(_new_id("msg_"), part.text, "completed"))
        else:
            output.append(_responses_call(part, translation, "completed"))
    return _responses_object(reply.id, translation.model or reply.model, reply.stop, output, usage)


def _responses_object(
    response_id: str, model: str, stop: str | None, output: list[dict], usage: Usage | None
) -> dict:
    """A Responses `response`; `stop` None: still in progress."""
    incomplete = _INCOMPLETE_REASONS.get(stop or "")
    status = "in_progress" if stop is None else "incomplete" if incomplete else "completed"
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": model,
        "output": output,
        "usage": _responses_usage(usage) if usage is not None else None,
    }


def _responses_message(item_id: str, text: str, status: str) -> dict:
    content = [{"type": "output_text", "text": text, "annotations": []}] if text else []
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _responses_call(
    call: ToolCall, translation: Translation, status: str, item_id: str = ""
) -> dict:
    """A function_call output item, or a custom_tool_call for the caller's custom tools."""
    if call.name in translation.custom_tools:
        value = _arguments_object(call.arguments).get("input")
        return {
            "id": item_id or _new_id("ctc_"),
            "type": "custom_tool_call",
            "status": status,
            "call_id": call.call_id,
            "name": call.name,
            "input": value if isinstance(value, str) else "",
        }
    return {
        "id": item_id or _new_id("fc_"),
        "type": "function_call",
        "status": status,
        "call_id": call.call_id,
        "name": call.name,
        "arguments": call.arguments,
    }


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# -- reading streams -----------------------------------------------------------------------------


class _StreamReader:
    """Reads one upstream event at a time into calls on a _StreamWriter; `over` once the
    upstream has said its last."""

    wire = ""

    def __init__(self) -> None:
        self.over = False
        self.tools: dict[Any, int] = {}  # the upstream's index of a tool call -> ours

    def read(self, event: dict, writer: _StreamWriter) -> None:
        raise NotImplementedError

    def _tool(self, key: Any, writer: _StreamWriter, call_id: str, name: str) -> int:
        index = self.tools[key] = len(self.tools)
        writer.tool_start(index, call_id or _new_id("call_"), name)
        return index


class _ChatStreamReader(_StreamReader):
    wire = "chat"

    def read(self, event: dict, writer: _StreamWriter) -> None:
        if "error" in event and not event.get("choices"):
            writer.error(upstream_error_message(json.dumps(event).encode()))
            return
        writer.start(_text(event.get("id")), _text(event.get("model")))
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                writer.text(delta["content"])
            for position, call in enumerate(delta.get("tool_calls") or []):
                if not isinstance(call, dict):
                    continue
                key = call.get("index", position)
                function = call.get("function") if isinstance(call.get("function"), dict) else {}
                if key not in self.tools:
                    self._tool(key, writer, _text(call.get("id")), _text(function.get("name")))
                if function.get("arguments"):
                    writer.tool_arguments(self.tools[key], _arguments_text(function["arguments"]))
            if choice.get("finish_reason"):
                for index in self.tools.values():
                    writer.tool_done(index)
                writer.finish(_STOP_FROM_CHAT.get(choice["finish_reason"], "stop"))


class _MessagesStreamReader(_StreamReader):
    wire = "messages"

    def read(self, event: dict, writer: _StreamWriter) -> None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") if isinstance(event.get("message"), dict) else {}
            writer.start(_text(message.get("id")), _text(message.get("model")))
        elif kind == "content_block_start":
            block = event.get("content_block")
            block = block if isinstance(block, dict) else {}
            if block.get("type") == "tool_use":
                index = self._tool(
                    event.get("index"), writer, _text(block.get("id")), _text(block.get("name"))
                )
                if block.get("input"):
                    writer.tool_arguments(index, json.dumps(block["input"], ensure_ascii=False))
            elif block.get("type") == "text" and block.get("text"):
                writer.text(_text(block["text"]))
        elif kind == "content_block_delta":
            delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                writer.text(_text(delta["text"]))
            elif delta.get("type") == "input_json_delta" and event.get("index") in self.tools:
                writer.tool_arguments(self.tools[event["index"]], _text(delta.get("partial_json")))
        elif kind == "content_block_stop" and event.get("index") in self.tools:
            writer.tool_done(self.tools[event["index"]])
        elif kind == "message_delta":
            delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
            if delta.get("stop_reason"):
                writer.finish(_STOP_FROM_MESSAGES.get(delta["stop_reason"], "stop"))
        elif kind == "message_stop":
            self.over = True
        elif kind == "error":
            writer.error(upstream_error_message(json.dumps(event).encode()))


class _ResponsesStreamReader(_StreamReader):
    wire = "responses"

    def __init__(self) -> None:
        super().__init__()
        self.streamed: set[int] = set()  # tool calls whose arguments came as deltas

    def read(self, event: dict, writer: _StreamWriter) -> None:
        kind = event.get("type")
        response = event.get("response") if isinstance(event.get("response"), dict) else {}
        item = event.get("item") if isinstance(event.get("item"), dict) else {}
        key = event.get("output_index")
        if kind == "response.created":
            writer.start(_text(response.get("id")), _text(response.get("model")))
        elif kind == "response.output_item.added" and item.get("type") == "function_call":
            self._tool(key, writer, _text(item.get("call_id")), _text(item.get("name")))
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            if event.get("delta"):
                writer.text(_text(event["delta"]))
        elif kind == "response.function_call_arguments.delta" and key in self.tools:
            if event.get("delta"):
                self.streamed.add(self.tools[key])
                writer.tool_arguments(self.tools[key], _text(event["delta"]))
        elif kind == "response.output_item.done" and key in self.tools:
            index = self.tools[key]
            if index not in self.streamed and item.get("arguments"):
                writer.tool_arguments(index, _arguments_text(item["arguments"]))
            writer.tool_done(index)
        elif kind in ("response.completed", "response.incomplete"):
            writer.start(_text(response.get("id")), _text(response.get("model")))
            writer.finish(_responses_stop(response))
            self.over = True
        elif kind == "response.failed":
            error = response.get("error") if isinstance(response.get("error"), dict) else {}
            writer.error(_text(error.get("message")) or "the model endpoint failed")
        elif kind == "error":
            writer.error(_text(event.get("message")) or "the model endpoint failed")


# -- writing streams -----------------------------------------------------------------------------


class _StreamWriter:
    """Writes the caller's events, given the upstream's answer as it comes: start, text deltas,
    tool calls (start, argument deltas, done), finish, then end (with the metered usage), or an
    error instead. Events collect in `out` until drained."""

    def __init__(self, translation: Translation) -> None:
        self.translation = translation
        self.out: list[bytes] = []
        self.id = ""
        self.model = translation.model
        self.started = False
        self.stop: str | None = None
        self.ended = False
        self.tools: dict[int, ToolCall] = {}
        self.done: set[int] = set()

    def drain(self) -> bytes:
        data, self.out = b"".join(self.out), []
        return data

    def start(self, response_id: str, model: str) -> None:
        if self.started:
            return
        self.started = True
        self.id = response_id or _new_id("gw_")
        self.model = self.model or model
        self._on_start()

    def text(self, delta: str) -> None:
        self.start("", "")
        self._on_text(delta)

    def tool_start(self, index: int, call_id: str, name: str) -> None:
        self.start("", "")
        self.tools[index] = ToolCall(call_id, name, "")
        self._on_tool_start(index)

    def tool_arguments(self, index: int, fragment: str) -> None:
        if index in self.tools and index not in self.done:
            self.tools[index].arguments += fragment
            self._on_tool_arguments(index, fragment)

    def tool_done(self, index: int) -> None:
        if index in self.tools and index not in self.done:
            self.done.add(index)
            self._on_tool_done(index)

    def finish(self, stop: str) -> None:
        self.stop = stop

    def end(self, usage: Usage) -> None:
        self.start("", "")
        for index in list(self.tools):
            self.tool_done(index)
        stop = self.stop or "stop"
        if stop == "stop" and self.tools:
            stop = "tool_calls"
        self.ended = True
        self._on_end(stop, usage)

    def error(self, message: str) -> None:
        self.ended = True
        self._on_error(message)

    def _event(self, name: str | None, data: dict | str) -> None:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        prefix = f"event: {name}\n" if name else ""
        self.out.append(f"{prefix}data: {text}\n\n".encode())

    def _on_start(self) -> None:
        pass

    def _on_text(self, delta: str) -> None:
        raise NotImplementedError

    def _on_tool_start(self, index: int) -> None:
        pass

    def _on_tool_arguments(self, index: int, fragment: str) -> None:
        pass

    def _on_tool_done(self, index: int) -> None:
        pass

    def _on_end(self, stop: str, usage: Usage) -> None:
        raise NotImplementedError

    def _on_error(self, message: str) -> None:
        raise NotImplementedError


class _ChatStreamWriter(_StreamWriter):
    def _chunk(self, delta: dict, finish_reason: str | None = None) -> None:
        self._event(None, {**self._base(), "choices": [_choice(delta, finish_reason)]})

    def _base(self) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
        }

    def _on_start(self) -> None:
        self._chunk({"role": "assistant", "content": ""})

    def _on_text(self, delta: str) -> None:
        self._chunk({"content": delta})

    def _on_tool_start(self, index: int) -> None:
        call = self.tools[index]
        function = {"name": call.name, "arguments": ""}
        self._chunk({"tool_calls": [{"index": index, "id": call.call_id, "type": "function",
                                     "function": function}]})  # fmt: skip

    def _on_tool_arguments(self, index: int, fragment: str) -> None:
        self._chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})

    def _on_end(self, stop: str, usage: Usage) -> None:
        self._chunk({}, stop)
        if self.translation.include_usage:
            self._event(None, {**self._base(), "choices": [], "usage": _chat_usage(usage)})
        self._event(None, "[DONE]")

    def _on_error(self, message: str) -> None:
        self._event(None, error_payload("chat", 500, message))


def _choice(delta: dict, finish_reason: str | None) -> dict:
    return {"index": 0, "delta": delta, "finish_reason": finish_reason}


class _MessagesStreamWriter(_StreamWriter):
    """Text blocks stream delta by delta; a tool_use block goes out whole once its call is done,
    with its input checked to be a JSON object."""

    def __init__(self, translation: Translation) -> None:
        super().__init__(translation)
        self.blocks = 0
        self.open_text: int | None = None  # the index of the text block being streamed

    def _on_start(self) -> None:
        message = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _messages_usage(Usage()),  # known once the upstream is done: message_delta
        }
        self._event("message_start", {"type": "message_start", "message": message})

    def _on_text(self, delta: str) -> None:
        if self.open_text is None:
            self.open_text = self._open_block({"type": "text", "text": ""})
        self._event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": self.open_text,
                "delta": {"type": "text_delta", "text": delta},
            },
        )

    def _on_tool_done(self, index: int) -> None:
        self._close_text()
        call = self.tools[index]
        block = _messages_block(call)
        number = self._open_block({**block, "input": {}})
        partial = json.dumps(block["input"], ensure_ascii=False)
        delta = {"type": "input_json_delta", "partial_json": partial}
        self._event(
            "content_block_delta", {"type": "content_block_delta", "index": number, "delta": delta}
        )
        self._close_block(number)

    def _on_end(self, stop: str, usage: Usage) -> None:
        self._close_text()
        delta = {"stop_reason": _STOP_TO_MESSAGES[stop], "stop_sequence": None}
        self._event(
            "message_delta",
            {"type": "message_delta", "delta": delta, "usage": _messages_usage(usage)},
        )
        self._event("message_stop", {"type": "message_stop"})

    def _on_error(self, message: str) -> None:
        self._event("error", error_payload("messages", 500, message))

    def _open_block(self, block: dict) -> int:
        number, self.blocks = self.blocks, self.blocks + 1
        self._event(
            "content_block_start",
            {"type": "content_block_start", "index": number, "content_block": block},
        )
        return number

    def _close_block(self, number: int) -> None:
        self._event("content_block_stop", {"type": "content_block_stop", "index": number})

    def _close_text(self) -> None:
        if self.open_text is not None:
            self._close_block(self.open_text)
            self.open_text = None


class _ResponsesStreamWriter(_StreamWriter):
    """Output items as Codex reads them: added, deltas, done; the whole response at the end."""

    def __init__(self, translation: Translation) -> None:
        super().__init__(translation)
        self.sequence = 0
        self.output: list[dict] = []  # finished items, for response.completed
        self.items = 0  # output indexes handed out
        self.message: tuple[int, str] | None = None  # the open message item: index, id
        self.message_text = ""
        self.calls: dict[int, tuple[int, str]] = {}  # tool index -> output index, item id

    def _send(self, kind: str, **fields: Any) -> None:
        self._event(kind, {"type": kind, "sequence_number": self.sequence, **fields})
        self.sequence += 1

    def _on_start(self) -> None:
        response = _responses_object(self.id, self.model, None, [], None)
        self._send("response.created", response=response)
        self._send("response.in_progress", response=response)

    def _on_text(self, delta: str) -> None:
        if self.message is None:
            self.message = (self._next_index(), _new_id("msg_"))
            index, item_id = self.message
            item = _responses_message(item_id, "", "in_progress")
            self._send("response.output_item.added", output_index=index, item=item)
            part = {"type": "output_text", "text": "", "annotations": []}
            self._send(
                "response.content_part.added",
                item_id=item_id,
                output_index=index,
                content_index=0,
                part=part,
            )
        index, item_id = self.message
        self.message_text += delta
        self._send(
            "response.output_text.delta",
            item_id=item_id,
            output_index=index,
            content_index=0,
            delta=delta,
        )

    def _on_tool_start(self, index: int) -> None:
        self._close_message()
        item = _responses_call(self.tools[index], self.translation, "in_progress")
        output_index = self._next_index()
        self.calls[index] = (output_index, item["id"])
        self._send("response.output_item.added", output_index=output_index, item=item)

    def _on_tool_arguments(self, index: int, fragment: str) -> None:
        output_index, item_id = self.calls[index]
        if self.tools[index].name not in self.translation.custom_tools:  # those go out whole
            self._send(
                "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=output_index,
                delta=fragment,
            )

    def _on_tool_done(self, index: int) -> None:
        output_index, item_id = self.calls[index]
        item = _responses_call(self.tools[index], self.translation, "completed", item_id)
        if item["type"] == "function_call":
            self._send(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=output_index,
                arguments=item["arguments"],
            )
        self._send("response.output_item.done", output_index=output_index, item=item)
        self.output.append(item)

    def _on_end(self, stop: str, usage: Usage) -> None:
        self._close_message()
        response = _responses_object(self.id, self.model, stop, self.output, usage)
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        self._send(kind, response=response)

    def _on_error(self, message: str) -> None:
        response = _responses_object(self.id or _new_id("gw_"), self.model, None, self.output, None)
        response.update(status="failed", error={"code": "server_error", "message": message})
        self._send("response.failed", response=response)

    def _next_index(self) -> int:
        index, self.items = self.items, self.items + 1
        return index

    def _close_message(self) -> None:
        if self.message is None:
            return
        index, item_id = self.message
        text = self.message_text
        part = {"type": "output_text", "text": text, "annotations": []}
        fields = {"item_id": item_id, "output_index": index, "content_index": 0}
        self._send("response.output_text.done", **fields, text=text)
        self._send("response.content_part.done", **fields, part=part)
        item = _responses_message(item_id, text, "completed")
        self._send("response.output_item.done", output_index=index, item=item)
        self.output.append(item)
        self.message, self.message_text = None, ""


_REQUEST_READERS = {
    "chat": _read_chat_request,
    "responses": _read_responses_request,
    "messages": _read_messages_request,
}
_REQUEST_WRITERS = {
    "chat": _write_chat_request,
    "responses": _write_responses_request,
    "messages": _write_messages_request,
}
_REPLY_READERS = {
    "chat": _read_chat_reply,
    "responses": _read_responses_reply,
    "messages": _read_messages_reply,
}
_REPLY_WRITERS = {
    "chat": _write_chat_reply,
    "responses": _write_responses_reply,
    "messages": _write_messages_reply,
}
_STREAM_READERS: dict[str, type[_StreamReader]] = {
    "chat": _ChatStreamReader,
    "responses": _ResponsesStreamReader,
    "messages": _MessagesStreamReader,
}
_STREAM_WRITERS: dict[str, type[_StreamWriter]] = {
    "chat": _ChatStreamWriter,
    "responses": _ResponsesStreamWriter,
    "messages": _MessagesStreamWriter,
}
