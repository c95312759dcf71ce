"""LLM HTTP clients: OpenAI-compatible, Anthropic and scripted, behind one neutral format.

Pure: no Django imports, so agents and tests can use it anywhere. Messages go in as OpenAI-like
dicts and a `Reply` comes out, whichever provider answered:

    {"role": "system" | "user" | "assistant" | "tool", "content": str,
     "tool_calls": [{"id": str, "name": str, "arguments": dict}],   # assistant only, optional
     "tool_call_id": str}                                            # tool only

Every error a caller can see is a `ProviderError` whose message is safe to show users: the API
key is never part of it, even when a provider echoes the key back in its error text.
"""

from __future__ import annotations

import dataclasses
import email.utils
import functools
import json
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml

from runs import yaml_loader

ANTHROPIC_VERSION = "2023-06-01"
ANTHROPIC_DEFAULT_MAX_TOKENS = 4096
CONNECT_TIMEOUT = 10.0
BACKOFF_BASE = 1.0  # seconds before the first retry (upper bound of the jitter)
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 60.0  # a provider asking for longer is not worth blocking a worker for
# Params that describe the endpoint (runs/wire_formats.py reads them), never sent in a request.
ENDPOINT_PARAMS = frozenset({"wire_api"})
ERROR_TEXT_LIMIT = 500
SCRIPT_ENDED_TEXT = "(script ended)"

# Tests replace this (or pass `sleep=`) so retries do not actually wait.
_sleep: Callable[[float], None] = time.sleep


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict


@dataclass
class ToolSpec:
    name: str
    description: str
    parameters: dict  # JSON schema


@dataclass
class Reply:
    text: str
    tool_calls: list[ToolCall]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    stop_reason: str  # "tool_calls" | "stop" | "length" | another raw value
    raw: dict


@dataclass
class ModelConfig:
    provider: str  # "openai" | "anthropic" | "scripted"
    model: str = ""
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    params: dict = field(default_factory=dict)
    script: list[dict] | None = None
    timeout: float = 120.0
    max_retries: int = 4
    # A Unix socket to reach base_url's host through: the run gateway (runs/gateway.py) serves
    # one per run, and code in the worker talks to it this way.
    socket_path: str = ""

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return input_tokens * self.input_per_mtok / 1e6 + output_tokens * self.output_per_mtok / 1e6


def _request_params(config: ModelConfig) -> dict:
    return {name: value for name, value in config.params.items() if name not in ENDPOINT_PARAMS}


_ssl_context_lock = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """httpx builds (and loads the CA bundle into) a fresh SSL context for every client and
    transport: ~30 ms of CPU each. One context, made as httpx makes its default, is safe to share.
    Made once even when the first runs ask at the same moment (a worker starts eight at once);
    a worker makes it as it starts (runs.tasks)."""
    with _ssl_context_lock:
        return _ssl_context()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def client_for(config: ModelConfig, **kwargs: Any) -> httpx.Client:
    """An HTTP client for `config`: over the gateway's Unix socket when it names one."""
    transport = None
    if config.socket_path:
        transport = httpx.HTTPTransport(uds=config.socket_path, verify=shared_ssl_context())
    return httpx.Client(verify=shared_ssl_context(), transport=transport, **kwargs)


class ProviderError(Exception):
    """A failed LLM call. The message is safe to show users (it never contains the key)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class Provider:
    """Base class: `complete` turns neutral messages into one assistant `Reply`."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self._client = client
        self._owns_client = client is None
        self._sleep = sleep

    def complete(self, messages: list[dict], tools: list[ToolSpec]) -> Reply:
        raise NotImplementedError

    def close(self) -> None:
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- HTTP with retries -------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = client_for(self.config)
        return self._client

    def _post(self, url: str, body: dict, headers: dict[str, str]) -> dict:
        """POST with retries on 429, 5xx and transport errors; return the JSON body.

        Backoff is exponential with full jitter, unless the provider sent Retry-After.
        """
        timeout = httpx.Timeout(
            self.config.timeout, connect=min(CONNECT_TIMEOUT, self.config.timeout)
        )
        attempts = max(0, self.config.max_retries) + 1
        problem = ""
        status: int | None = None
        for attempt in range(attempts):
            retry_after = None
            try:
                response = self.client.post(url, json=body, headers=headers, timeout=timeout)
            except httpx.TransportError as exc:
                problem = f"could not reach {url}: {type(exc).__name__}: {exc}"
                status = None
            else:
                if response.status_code < 400:
                    return self._json(response)
                message = f"HTTP {response.status_code}: {_error_text(response)}"
                if not _is_retryable(response.status_code):
                    raise ProviderError(self._redact(message), status_code=response.status_code)
                problem = message
                status = response.status_code
                retry_after = _retry_after_seconds(response)
            if attempt + 1 < attempts:
                self._wait(attempt, retry_after)
        raise ProviderError(
            self._redact(f"gave up after {attempts} attempts: {problem}"), status_code=status
        )

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        if retry_after is not None:
            delay = min(retry_after, RETRY_AFTER_CAP)
        else:
            delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
        (self._sleep or _sleep)(delay)

    def _json(self, response: httpx.Response) -> dict:
        try:
            data = response.json()
        except ValueError:
            raise ProviderError(
                self._redact(f"the provider answered with non-JSON: {_truncate(response.text)}"),
                status_code=response.status_code,
            ) from None
        if not isinstance(data, dict):
            raise ProviderError("the provider answered with JSON that is not an object")
        return data

    def _redact(self, text: str) -> str:
        key = self.config.api_key
        if key:
            text = text.replace(key, "[redacted]")
        return text

    def _reply(
        self,
        text: str,
        tool_calls: list[ToolCall],
        input_tokens: int,
        output_tokens: int,
        stop_reason: str,
        raw: dict,
    ) -> Reply:
        return Reply(
            text=text,
            tool_calls=tool_calls,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=self.config.cost(input_tokens, output_tokens),
            stop_reason=stop_reason,
            raw=raw,
        )


def _is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_text(response: httpx.Response) -> str:
    """The provider's own explanation: OpenAI and Anthropic nest it in error.message."""
    try:
        data = response.json()
    except ValueError:
        return _truncate(response.text.strip() or response.reason_phrase)
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return _truncate(str(error["message"]))
        if isinstance(error, str) and error:  # Ollama, llama.cpp
            return _truncate(error)
        if data.get("message"):
            return _truncate(str(data["message"]))
    return _truncate(json.dumps(data))


def _truncate(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _join_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


# -- OpenAI-compatible ---------------------------------------------------------------------------

_OPENAI_STOP_REASONS = {
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "stop": "stop",
    "length": "length",
}


class OpenAIProvider(Provider):
    def complete(self, messages: list[dict], tools: list[ToolSpec]) -> Reply:
        body: dict[str, Any] = {
            **_request_params(self.config),
            "model": self.config.model,
            "messages": [_openai_message(m) for m in messages],
        }
        if tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        headers = {"content-type": "application/json"}
        if self.config.api_key:
            headers["authorization"] = f"Bearer {self.config.api_key}"
        data = self._post(_join_url(self.config.base_url, "/chat/completions"), body, headers)
        return self._parse(data)

    def _parse(self, data: dict) -> Reply:
        choices = data.get("choices")
        if not choices or not isinstance(choices[0], dict):
            raise ProviderError(
                self._redact(
                    f"the provider answered without choices: {_truncate(json.dumps(data))}"
                )
            )
        choice = choices[0]
        message = choice.get("message") or {}
        tool_calls = [
            _openai_tool_call(call, index)
            for index, call in enumerate(message.get("tool_calls") or [])
        ]
        raw_reason = choice.get("finish_reason") or ""
        stop_reason = _OPENAI_STOP_REASONS.get(raw_reason, raw_reason)
        # Some servers (Ollama, vLLM) say "stop" while returning tool calls.
        if tool_calls and stop_reason == "stop":
            stop_reason = "tool_calls"
        usage = data.get("usage") or {}
        return self._reply(
            text=_openai_text(message.get("content")),
            tool_calls=tool_calls,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            stop_reason=stop_reason,
            raw=data,
        )


def _openai_message(message: dict) -> dict:
    role = message["role"]
    content = message.get("content") or ""
    if role == "tool":
        return {"role": "tool", "tool_call_id": message["tool_call_id"], "content": content}
    if role == "assistant" and message.get("tool_calls"):
        return {
            "role": "assistant",
            # null, not "", is what the API documents for a turn that only calls tools
            "content": content or None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
                }
                for call in message["tool_calls"]
            ],
        }
    return {"role": role, "content": content}


def _openai_tool_call(call: dict, index: int) -> ToolCall:
    function = call.get("function") or {}
    return ToolCall(
        id=call.get("id") or f"call_{index}",
        name=function.get("name") or "",
        arguments=_parse_arguments(function.get("arguments")),
    )


def _parse_arguments(arguments: Any) -> dict:
    """Tool arguments as a dict; anything else is kept as `_raw` for the agent to report."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or arguments == "":
        return {}
    if not isinstance(arguments, str):
        return {"_raw": json.dumps(arguments)}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return {"_raw": arguments}
    return parsed if isinstance(parsed, dict) else {"_raw": arguments}


def _openai_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, list):  # content parts, as some compatible servers send
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


# -- Anthropic -----------------------------------------------------------------------------------

_ANTHROPIC_STOP_REASONS = {"tool_use": "tool_calls", "end_turn": "stop", "max_tokens": "length"}


class AnthropicProvider(Provider):
    def complete(self, messages: list[dict], tools: list[ToolSpec]) -> Reply:
        system, wire_messages = _anthropic_messages(messages)
        body: dict[str, Any] = {
            **_request_params(self.config),
            "model": self.config.model,
            "max_tokens": self.config.params.get("max_tokens", ANTHROPIC_DEFAULT_MAX_TOKENS),
            "messages": wire_messages,
        }
        if system:
            body["system"] = system
        if tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in tools
            ]
        headers = {
            "content-type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
        }
        if self.config.api_key:
            headers["x-api-key"] = self.config.api_key
        data = self._post(_join_url(self.config.base_url, "/v1/messages"), body, headers)
        return self._parse(data)

    def _parse(self, data: dict) -> Reply:
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise ProviderError(
                self._redact(
                    f"the provider answered without content: {_truncate(json.dumps(data))}"
                )
            )
        texts = []
        tool_calls = []
        for block in blocks:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                texts.append(block.get("text", ""))
            elif block.get("type") == "tool_use":
                tool_calls.append(
                    ToolCall(
                        id=block.get("id") or f"toolu_{len(tool_calls)}",
                        name=block.get("name") or "",
                        arguments=_parse_arguments(block.get("input")),
                    )
                )
        raw_reason = data.get("stop_reason") or ""
        usage = data.get("usage") or {}
        return self._reply(
            text="".join(texts),
            tool_calls=tool_calls,
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            stop_reason=_ANTHROPIC_STOP_REASONS.get(raw_reason, raw_reason),
            raw=data,
        )


def _anthropic_messages(messages: list[dict]) -> tuple[str, list[dict]]:
    """Split out the system prompt and convert the rest to Anthropic's wire shape.

    Anthropic wants tool results as `tool_result` blocks in a user turn and roles that
    alternate, so consecutive turns of the same role (several tool results, or tool results
    then a user note) are merged into one message of content blocks.
    """
    system_parts: list[str] = []
    wire: list[dict] = []
    for message in messages:
        role = message["role"]
        content = message.get("content") or ""
        if role == "system":
            system_parts.append(content)
            continue
        if role == "tool":
            converted = {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": message["tool_call_id"],
                        "content": content,
                    }
                ],
            }
        elif role == "assistant" and message.get("tool_calls"):
            blocks: list[dict] = [{"type": "text", "text": content}] if content else []
            blocks += [
                {"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]}
                for c in message["tool_calls"]
            ]
            converted = {"role": "assistant", "content": blocks}
        else:
            converted = {"role": role, "content": content}
        if wire and wire[-1]["role"] == converted["role"]:
            wire[-1]["content"] = _blocks(wire[-1]["content"]) + _blocks(converted["content"])
        else:
            wire.append(converted)
    return "\n\n".join(p for p in system_parts if p), wire


def _blocks(content: str | list[dict]) -> list[dict]:
    if isinstance(content, list):
        return content
    return [{"type": "text", "text": content}] if content else []


# -- Scripted ------------------------------------------------------------------------------------


class ScriptedProvider(Provider):
    """Replays assistant turns from a script; no network.

    Stateless: the turn played is the number of assistant messages already in the
    conversation, so a resumed run continues where it stopped. Past the end it calls `finish`
    so that agents always stop.
    """

    def __init__(self, config: ModelConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        if config.script is None:
            raise ProviderError("the scripted model has no script")
        self.script = _validate_turns(config.script)

    def complete(self, messages: list[dict], tools: list[ToolSpec]) -> Reply:
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        if turn < len(self.script):
            step = self.script[turn]
        else:
            step = {
                "text": SCRIPT_ENDED_TEXT,
                "tool_calls": [{"name": "finish", "arguments": {"summary": "script ended"}}],
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
        tool_calls = [
            ToolCall(id=f"call_{turn}_{i}", name=c["name"], arguments=dict(c["arguments"]))
            for i, c in enumerate(step["tool_calls"])
        ]
        return self._reply(
            text=step["text"],
            tool_calls=tool_calls,
            input_tokens=step["usage"]["input_tokens"],
            output_tokens=step["usage"]["output_tokens"],
            stop_reason="tool_calls" if tool_calls else "stop",
            raw={"scripted": True, "turn": turn, **step},
        )


def load_script(text: str, prompt_key: str | None = None) -> list[dict]:
    """Parse a scripted model's YAML or JSON: a list of turns, `{"turns": [...]}`, or per-prompt
    scripts `{"prompts": {KEY: [turns], ...}, "default": [turns]}` (the demo's contestants act
    differently on each task).

    Returns the turns with defaults filled in (`text` "", `tool_calls` [], `usage` zeros): for
    per-prompt scripts, those of `prompt_key`, else "default", else none. Every script in the
    file is validated. Raises ValueError naming the prompt, the turn (1-based) and the field.
    """
    try:
        data = yaml_loader.load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"the script is not valid YAML or JSON: {exc}") from None
    if isinstance(data, dict) and "prompts" in data:
        extra = set(data) - {"prompts", "default"}
        if extra:
            raise ValueError(
                f"unknown fields in a per-prompt script: {', '.join(sorted(map(str, extra)))}"
            )
        if not isinstance(data["prompts"], dict):
            raise ValueError("'prompts' must map prompt keys to lists of turns")
        scripts = {}
        for key, turns in data["prompts"].items():
            if not isinstance(turns, list):
                raise ValueError(f"prompt {key!r}: the script must be a list of turns")
            try:
                scripts[str(key)] = _validate_turns(turns)
            except ValueError as exc:
                raise ValueError(f"prompt {key!r}: {exc}") from None
        default = data.get("default") or []
        if not isinstance(default, list):
            raise ValueError("'default' must be a list of turns")
        default = _validate_turns(default)
        return scripts.get(prompt_key or "", default)
    if isinstance(data, dict):
        if set(data) != {"turns"}:
            raise ValueError("the script must be a list of turns or a mapping with only 'turns'")
        data = data["turns"]
    if not isinstance(data, list):
        raise ValueError("the script must be a list of turns or a mapping with 'turns'")
    return _validate_turns(data)


_TURN_FIELDS = {"text", "tool_calls", "usage"}


def _validate_turns(turns: list[Any]) -> list[dict]:
    return [_validate_turn(turn, number) for number, turn in enumerate(turns, start=1)]


def _validate_turn(turn: Any, number: int) -> dict:
    where = f"turn {number}"
    if not isinstance(turn, dict):
        raise ValueError(f"{where}: must be a mapping with 'text' and/or 'tool_calls'")
    unknown = sorted(set(turn) - _TURN_FIELDS)
    if unknown:
        raise ValueError(
            f"{where}: unknown field '{unknown[0]}' (expected text, tool_calls, usage)"
        )
    text = turn.get("text", "")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValueError(f"{where}: 'text' must be a string")
    calls = turn.get("tool_calls") or []
    if not isinstance(calls, list):
        raise ValueError(f"{where}: 'tool_calls' must be a list")
    if not text and not calls:
        raise ValueError(f"{where}: needs 'text' or 'tool_calls'")
    clean_calls = []
    for index, call in enumerate(calls, start=1):
        call_where = f"{where}: tool_calls[{index}]"
        if not isinstance(call, dict):
            raise ValueError(f"{call_where}: must be a mapping with 'name' and 'arguments'")
        unknown = sorted(set(call) - {"name", "arguments"})
        if unknown:
            raise ValueError(f"{call_where}: unknown field '{unknown[0]}'")
        name = call.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{call_where}: 'name' must be a non-empty string")
        arguments = call.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise ValueError(f"{call_where}: 'arguments' must be a mapping")
        clean_calls.append({"name": name, "arguments": arguments})
    usage = turn.get("usage") or {}
    if not isinstance(usage, dict):
        raise ValueError(f"{where}: 'usage' must be a mapping")
    clean_usage = {}
    for key in ("input_tokens", "output_tokens"):
        value = usage.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}: 'usage.{key}' must be a non-negative integer")
        clean_usage[key] = value
    return {"text": text, "tool_calls": clean_calls, "usage": clean_usage}


# -- Entry points --------------------------------------------------------------------------------

_PROVIDERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "scripted": ScriptedProvider,
}


def for_model(
    config: ModelConfig,
    *,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Provider:
    """The provider for `config`. `client` is reused (and not closed) if given."""
    try:
        provider_class = _PROVIDERS[config.provider]
    except KeyError:
        raise ProviderError(f"unknown provider {config.provider!r}") from None
    if config.provider != "scripted" and not config.base_url:
        raise ProviderError(f"the {config.provider} model has no base URL")
    return provider_class(config, client=client, sleep=sleep)


def check_connection(config: ModelConfig, *, client: httpx.Client | None = None) -> str:
    """Send one tiny request and return the model's answer text.

    Meant for an admin's "test connection" button: one retry at most and a short timeout, so
    a wrong URL fails in seconds. Raises ProviderError with the provider's own error text.
    """
    params = dict(config.params)
    # Reasoning models reject max_tokens in favour of max_completion_tokens; respect that choice.
    if "max_completion_tokens" not in params:
        params["max_tokens"] = 16
    probe = dataclasses.replace(
        config,
        params=params,
        timeout=min(config.timeout, 30.0),
        max_retries=min(config.max_retries, 1),
    )
    with for_model(probe, client=client) as provider:
        if isinstance(provider, ScriptedProvider):
            return f"scripted model with {len(provider.script)} turns"
        reply = provider.complete([{"role": "user", "content": "Reply with OK"}], [])
    return reply.text.strip()
