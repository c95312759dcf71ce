"""The gateway translating between wire formats: real clients in one format, FakeLLM in another.

Each caller speaks its format as the CLI that uses it does (Claude Code: Anthropic Messages;
Codex: OpenAI Responses; opencode, aider: chat completions) and reads the answer in it; each
upstream is FakeLLM answering in its own. Every directed pair, plain and streamed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from runs.gateway import Gateway, GatewayLimits, Totals
from runs.providers import ModelConfig
from runs.wire_formats import Translation, Usage
from tests.fake_llm import FakeLLM

SECRET = "sk-test-TRANSLATE-SECRET-77c1e0b2"
UPSTREAM_MODEL = "up-model"
SYSTEM = "You fix bugs."
TASK = "Fix a.py"
RESULT = "def add(a, b):\n    return a - b"
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
WIRES = ("chat", "responses", "messages")
PAIRS = [(caller, upstream) for caller in WIRES for upstream in WIRES if caller != upstream]
PAIR_IDS = [f"{caller}-to-{upstream}" for caller, upstream in PAIRS]
TOOL_TURN = {
    "text": "Let me look.",
    "tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}],
    "usage": {
        "input_tokens": 1000,
        "output_tokens": 50,
        "cache_read_tokens": 600,
        "cache_write_tokens": 100,
    },
}


@pytest.fixture
def llm():
    with FakeLLM() as server:
        yield server


@pytest.fixture
def socket_dir():
    # Not tmp_path: a Unix socket's path must fit in 107 bytes, and test names are long.
    path = Path(tempfile.mkdtemp(prefix="gwt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def upstream_config(llm: FakeLLM, wire: str, **overrides) -> ModelConfig:
    if wire == "messages":
        provider, base_url, params = "anthropic", llm.base_url_anthropic, {}
    else:
        provider, base_url, params = "openai", llm.base_url_openai, {"wire_api": wire}
    fields = {"model": UPSTREAM_MODEL, "base_url": base_url, "api_key": SECRET, "params": params}
    return ModelConfig(provider=provider, **{**fields, **overrides})


@pytest.fixture
def make_gateway(llm, socket_dir):
    gateways = []

    def make(wire: str, **kwargs) -> Gateway:
        config = kwargs.pop("config", {})
        path = socket_dir / f"gw{len(gateways)}.sock"
        gateway = Gateway(upstream_config(llm, wire, **config), path, **kwargs)
        gateways.append(gateway.start())
        return gateway

    yield make
    for gateway in gateways:
        gateway.close()


@pytest.fixture
def connect():
    clients = []

    def make(gateway: Gateway) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(gateway.socket_path))
        client = httpx.Client(transport=transport, base_url="http://gateway", timeout=5)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def events_of(text: str) -> list:
    data = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    return [item if item == "[DONE]" else json.loads(item) for item in data]


# -- the callers, each as its CLI speaks ---------------------------------------------------------


@dataclass
class Answer:
    """What a caller understood of an answer, in neutral terms."""

    text: str
    calls: list[tuple[str, str, dict]]  # id, name, arguments
    stop: str  # "stop" | "tool_calls" | "length"
    usage: tuple[int, int, int]  # input (cached included), output, cache read


class ChatCaller:
    path = "/v1/chat/completions"

    def headers(self, gateway: Gateway) -> dict:
        return {"authorization": f"Bearer {gateway.token}"}

    def first(self, stream: bool) -> dict:
        tool = {"name": "read_file", "description": "Read a file", "parameters": SCHEMA}
        body = {
            "model": "caller-model",
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": TASK},
            ],
            "tools": [{"type": "function", "function": tool}],
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def second(self, stream: bool, answer: Answer) -> dict:
        body = self.first(stream)
        [(call_id, name, arguments)] = answer.calls
        function = {"name": name, "arguments": json.dumps(arguments)}
        body["messages"] += [
            {
                "role": "assistant",
                "content": answer.text,
                "tool_calls": [{"id": call_id, "type": "function", "function": function}],
            },
            {"role": "tool", "tool_call_id": call_id, "content": RESULT},
        ]
        return body

    def read(self, response: httpx.Response, stream: bool) -> Answer:
        if not stream:
            data = response.json()
            assert data["object"] == "chat.completion"
            choice = data["choices"][0]
            calls = [
                (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
                for c in choice["message"].get("tool_calls") or []
            ]
            return Answer(
                choice["message"]["content"] or "", calls, choice["finish_reason"], _chat(data)
            )
        events = events_of(response.text)
        assert events[-1] == "[DONE]"
        text, calls, stop, usage = "", {}, "", (0, 0, 0)
        for event in events[:-1]:
            assert event["object"] == "chat.completion.chunk"
            if event.get("usage"):
                usage = _chat(event)
            for choice in event["choices"]:
                text += choice["delta"].get("content") or ""
                for call in choice["delta"].get("tool_calls") or []:
                    entry = calls.setdefault(call["index"], ["", "", ""])
                    entry[0] = call.get("id") or entry[0]
                    entry[1] = call.get("function", {}).get("name") or entry[1]
                    entry[2] += call.get("function", {}).get("arguments") or ""
                stop = choice["finish_reason"] or stop
        parsed = [(i, name, json.loads(arguments)) for i, name, arguments in calls.values()]
        return Answer(text, parsed, stop, usage)

    def limit_error(self, response: httpx.Response) -> str:
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("mergeable_limit_reached", "max_calls")
        return error["message"]

    def error_message(self, response: httpx.Response) -> str:
        return response.json()["error"]["message"]


def _chat(data: dict) -> tuple[int, int, int]:
    usage = data["usage"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return usage["prompt_tokens"], usage["completion_tokens"], cached


class ResponsesCaller:
    """As Codex: the system prompt as a developer message, no instructions, streams."""

    path = "/v1/responses"

    def headers(self, gateway: Gateway) -> dict:
        return {"authorization": f"Bearer {gateway.token}"}

    def first(self, stream: bool) -> dict:
        return {
            "model": "caller-model",
            "input": [
                {"type": "message", "role": "developer", "content": SYSTEM},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": TASK}],
                },
            ],
            "tools": [
                {
                    "type": "function",
                    "name": "read_file",
                    "description": "Read a file",
                    "parameters": SCHEMA,
                }
            ],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
            "reasoning": {"effort": "medium", "summary": "auto"},
            "store": False,
            "stream": stream,
        }

    def second(self, stream: bool, answer: Answer) -> dict:
        body = self.first(stream)
        [(call_id, name, arguments)] = answer.calls
        body["input"] += [
            {"type": "reasoning", "summary": [], "encrypted_content": "opaque"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": answer.text}],
            },
            {
                "type": "function_call",
                "call_id": call_id,
                "name": name,
                "arguments": json.dumps(arguments),
            },
            {"type": "function_call_output", "call_id": call_id, "output": RESULT},
        ]
        return body

    def read(self, response: httpx.Response, stream: bool) -> Answer:
        if not stream:
            return self._answer(response.json(), response.json()["output"])
        events = events_of(response.text)
        assert events[0]["type"] == "response.created"
        assert [event["sequence_number"] for event in events] == list(range(len(events)))
        items = [e["item"] for e in events if e["type"] == "response.output_item.done"]
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        final = events[-1]
        assert final["type"] in ("response.completed", "response.incomplete")
        assert final["response"]["output"] == items
        answer = self._answer(final["response"], items)
        assert deltas == answer.text
        return answer

    def _answer(self, response: dict, items: list[dict]) -> Answer:
        assert response["object"] == "response"
        text = "".join(
            part["text"] for item in items if item["type"] == "message" for part in item["content"]
        )
        calls = [
            (item["call_id"], item["name"], json.loads(item["arguments"]))
            for item in items
            if item["type"] == "function_call"
        ]
        if response["status"] == "incomplete":
            assert response["incomplete_details"] == {"reason": "max_output_tokens"}
            stop = "length"
        else:
            stop = "tool_calls" if calls else "stop"
        usage = response["usage"]
        cached = usage["input_tokens_details"]["cached_tokens"]
        return Answer(text, calls, stop, (usage["input_tokens"], usage["output_tokens"], cached))

    def limit_error(self, response: httpx.Response) -> str:
        return ChatCaller().limit_error(response)

    def error_message(self, response: httpx.Response) -> str:
        return response.json()["error"]["message"]


_MESSAGES_STOPS = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


class MessagesCaller:
    """As Claude Code: system blocks with cache_control, an anthropic-beta header."""

    path = "/v1/messages?beta=true"

    def headers(self, gateway: Gateway) -> dict:
        return {
            "x-api-key": gateway.token,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "claude-code-20250219",
        }

    def first(self, stream: bool) -> dict:
        return {
            "model": "caller-model",
            "max_tokens": 1000,
            "system": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": TASK}]}],
            "tools": [{"name": "read_file", "description": "Read a file", "input_schema": SCHEMA}],
            "thinking": {"type": "enabled", "budget_tokens": 500},
            "stream": stream,
        }

    def second(self, stream: bool, answer: Answer) -> dict:
        body = self.first(stream)
        [(call_id, name, arguments)] = answer.calls
        body["messages"] += [
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": answer.text},
                    {"type": "tool_use", "id": call_id, "name": name, "input": arguments},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call_id, "content": RESULT}],
            },
        ]
        return body

    def read(self, response: httpx.Response, stream: bool) -> Answer:
        if not stream:
            data = response.json()
            assert data["type"] == "message"
            return self._answer(data["content"], data["stop_reason"], data["usage"])
        events = events_of(response.text)
        assert events[0]["type"] == "message_start"
        assert events[-1]["type"] == "message_stop"
        blocks: dict[int, dict] = {}
        usage = dict(events[0]["message"]["usage"])
        stop = None
        open_blocks: set[int] = set()
        for event in events[1:-1]:
            if event["type"] == "content_block_start":
                assert not open_blocks  # one block at a time, as Anthropic streams them
                open_blocks.add(event["index"])
                blocks[event["index"]] = {**event["content_block"], "json": ""}
            elif event["type"] == "content_block_delta":
                assert event["index"] in open_blocks
                block, delta = blocks[event["index"]], event["delta"]
                if delta["type"] == "text_delta":
                    block["text"] += delta["text"]
                else:
                    block["json"] += delta["partial_json"]
            elif event["type"] == "content_block_stop":
                open_blocks.remove(event["index"])
            elif event["type"] == "message_delta":
                stop = event["delta"]["stop_reason"]
                usage.update(event["usage"])
        assert not open_blocks
        content = []
        for _index, block in sorted(blocks.items()):
            if block["type"] == "tool_use":
                block["input"] = json.loads(block["json"])
            content.append(block)
        return self._answer(content, stop, usage)

    def _answer(self, content: list[dict], stop: str, usage: dict) -> Answer:
        text = "".join(block["text"] for block in content if block["type"] == "text")
        calls = [
            (block["id"], block["name"], block["input"])
            for block in content
            if block["type"] == "tool_use"
        ]
        read, written = usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]
        total = usage["input_tokens"] + read + written
        return Answer(text, calls, _MESSAGES_STOPS[stop], (total, usage["output_tokens"], read))

    def limit_error(self, response: httpx.Response) -> str:
        data = response.json()
        assert (data["type"], data["error"]["type"]) == ("error", "permission_error")
        return data["error"]["message"]

    def error_message(self, response: httpx.Response) -> str:
        data = response.json()
        assert data["type"] == "error"
        return data["error"]["message"]


CALLERS = {"chat": ChatCaller(), "responses": ResponsesCaller(), "messages": MessagesCaller()}


# -- what the upstream got, in its own format ----------------------------------------------------


@dataclass
class Sent:
    system: str
    user: str
    tools: list[tuple[str, dict]]  # name, schema
    call: tuple[str, str, dict] | None
    result: tuple[str, str] | None  # call id, output


def sent_upstream(wire: str, body: dict) -> Sent:
    assert body["model"] == UPSTREAM_MODEL
    call = result = None
    if wire == "chat":
        messages = body["messages"]
        assert [m["role"] for m in messages[:2]] == ["system", "user"]
        system, user = messages[0]["content"], messages[1]["content"]
        tools = [(t["function"]["name"], t["function"]["parameters"]) for t in body["tools"]]
        for message in messages[2:]:
            if message.get("tool_calls"):
                [tool_call] = message["tool_calls"]
                function = tool_call["function"]
                arguments = json.loads(function["arguments"])
                call = (tool_call["id"], function["name"], arguments)
            if message["role"] == "tool":
                result = (message["tool_call_id"], message["content"])
    elif wire == "responses":
        system = body["instructions"]
        items = body["input"]
        assert items[0]["role"] == "user"
        user = items[0]["content"][0]["text"]
        tools = [(t["name"], t["parameters"]) for t in body["tools"]]
        assert all(t["type"] == "function" and t["strict"] is False for t in body["tools"])
        for item in items[1:]:
            if item["type"] == "function_call":
                call = (item["call_id"], item["name"], json.loads(item["arguments"]))
            if item["type"] == "function_call_output":
                result = (item["call_id"], item["output"])
    else:
        system = body["system"]
        messages = body["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user"][: len(messages)]
        user = messages[0]["content"][0]["text"]
        tools = [(t["name"], t["input_schema"]) for t in body["tools"]]
        assert body["max_tokens"] > 0
        for message in messages[1:]:
            for block in message["content"]:
                if block["type"] == "tool_use":
                    call = (block["id"], block["name"], block["input"])
                if block["type"] == "tool_result":
                    result = (block["tool_use_id"], block["content"])
    return Sent(system, user, tools, call, result)


def wire_of(body: str, stream: bool) -> str:
    """The wire format a recorded answer is in."""
    first = events_of(body)[0] if stream else json.loads(body)
    if first.get("object") in ("chat.completion", "chat.completion.chunk"):
        return "chat"
    if first.get("object") == "response" or first.get("type") == "response.created":
        return "responses"
    assert first.get("type") in ("message", "message_start"), first
    return "messages"


# -- every pair, both ways of answering ----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("caller, upstream", PAIRS, ids=PAIR_IDS)
def test_it_translates_a_tool_call_and_its_result_across_two_turns(
    llm, make_gateway, connect, socket_dir, caller, upstream, stream
):
    llm.queue(TOOL_TURN, {"text": "Fixed it."})
    log_path = socket_dir / "calls.jsonl"
    gateway = make_gateway(
        upstream, config={"input_per_mtok": 3.0, "output_per_mtok": 15.0}, log_path=log_path
    )
    client, speaker = connect(gateway), CALLERS[caller]

    first = client.post(speaker.path, json=speaker.first(stream), headers=speaker.headers(gateway))
    assert first.status_code == 200, first.text
    assert first.headers["content-type"].startswith(
        "text/event-stream" if stream else "application/json"
    )
    answer = speaker.read(first, stream)
    second = client.post(
        speaker.path, json=speaker.second(stream, answer), headers=speaker.headers(gateway)
    )
    assert second.status_code == 200, second.text
    final = speaker.read(second, stream)

    # The caller understood the model, in its own format.
    assert answer.text == "Let me look."
    assert [(name, arguments) for _id, name, arguments in answer.calls] == [
        ("read_file", {"path": "a.py"})
    ]
    assert answer.stop == "tool_calls"
    assert answer.usage == (1000, 50, 600)
    assert (final.text, final.calls, final.stop, final.usage) == (
        "Fixed it.",
        [],
        "stop",
        (10, 5, 0),
    )
    # The upstream got the conversation in its format: system prompt, tools, the call and its
    # result under the id the caller was given, the run's model.
    before, after = (sent_upstream(upstream, request["body"]) for request in llm.requests)
    assert (before.system, before.user, before.call, before.result) == (SYSTEM, TASK, None, None)
    assert before.tools == [("read_file", SCHEMA)]
    [(call_id, _name, _arguments)] = answer.calls
    assert after.call == (call_id, "read_file", {"path": "a.py"})
    assert after.result == (call_id, RESULT)
    assert all(request["body"]["stream"] is stream for request in llm.requests)
    if upstream == "chat" and stream:
        assert llm.requests[0]["body"]["stream_options"] == {"include_usage": True}
    # What cannot translate stays behind.
    assert "thinking" not in json.dumps(after.__dict__)
    assert "reasoning" not in llm.requests[1]["body"]
    # The key goes out, the token does not, and the call is metered from upstream's usage.
    for request in llm.requests:
        headers = request["headers"]
        assert SECRET in headers.get("authorization", headers.get("x-api-key", ""))
        assert not any(gateway.token in value for value in headers.values())
        assert not any(name.startswith("anthropic-") for name in headers) or upstream == "messages"
    cache_write = 100 if upstream == "messages" else 0  # OpenAI formats do not report writes
    cost = 1010 * 3.0 / 1e6 + 55 * 15.0 / 1e6
    assert gateway.totals == Totals(
        calls=2,
        input_tokens=1010,
        output_tokens=55,
        cache_read_tokens=600,
        cache_write_tokens=cache_write,
        cost_usd=pytest.approx(cost),
    )
    # The record and the log keep what went upstream and what came back, untranslated.
    record = gateway.calls[0]
    assert (record.status, record.stream, record.input_tokens) == (200, stream, 1000)
    assert json.loads(record.request) == llm.requests[0]["body"]
    assert wire_of(record.response, stream) == upstream
    logged = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [line["request"] for line in logged] == [call.request for call in gateway.calls]
    assert SECRET not in log_path.read_text()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("caller, upstream", PAIRS, ids=PAIR_IDS)
def test_it_translates_the_stop_reason_of_a_truncated_answer(
    llm, make_gateway, connect, caller, upstream, stream
):
    llm.queue({"text": "Half an ans", "stop_reason": "length"})
    gateway = make_gateway(upstream)
    speaker = CALLERS[caller]

    response = connect(gateway).post(
        speaker.path, json=speaker.first(stream), headers=speaker.headers(gateway)
    )

    answer = speaker.read(response, stream)
    assert (answer.text, answer.stop) == ("Half an ans", "length")


@pytest.mark.parametrize("caller, upstream", PAIRS, ids=PAIR_IDS)
def test_it_refuses_over_the_limit_in_the_callers_format(
    llm, make_gateway, connect, caller, upstream
):
    gateway = make_gateway(upstream, limits=GatewayLimits(max_calls=0))
    speaker = CALLERS[caller]

    response = connect(gateway).post(
        speaker.path, json=speaker.first(True), headers=speaker.headers(gateway)
    )

    assert response.status_code == 403
    assert "limit of 0 model calls" in speaker.limit_error(response)
    assert llm.requests == []
    assert gateway.limit_hit == "max_calls"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("caller, upstream", PAIRS, ids=PAIR_IDS)
def test_it_translates_an_upstream_error_into_the_callers_format(
    llm, make_gateway, connect, caller, upstream, stream
):
    llm.fail_next(429, retry_after=3)
    gateway = make_gateway(upstream)
    speaker = CALLERS[caller]

    response = connect(gateway).post(
        speaker.path, json=speaker.first(stream), headers=speaker.headers(gateway)
    )

    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert speaker.error_message(response) == "fake failure with status 429"
    if caller == "messages":
        assert response.json()["error"]["type"] == "rate_limit_error"
    [record] = gateway.calls
    assert record.status == 429
    assert "fake failure" in record.response
    assert gateway.totals.calls == 1


@pytest.mark.parametrize("caller, upstream", PAIRS, ids=PAIR_IDS)
def test_it_relays_a_translated_stream_as_it_arrives(llm, make_gateway, connect, caller, upstream):
    llm.queue({"text": "first"})
    llm.stream_gate = threading.Event()  # the provider holds the stream after its first event
    gateway = make_gateway(upstream)
    speaker = CALLERS[caller]

    try:
        with connect(gateway).stream(
            "POST", speaker.path, json=speaker.first(True), headers=speaker.headers(gateway)
        ) as response:
            lines = response.iter_lines()
            # Were the stream buffered, this would wait for the gate and time out.
            first = next(line for line in lines if line.startswith("data: "))
            assert not llm.stream_gate.is_set()
            llm.stream_gate.set()
            rest = [line for line in lines if line.startswith("data: ")]
    finally:
        llm.stream_gate.set()

    events = events_of("\n".join([first, *rest]))
    opening = {"chat": "chat.completion.chunk", "responses": "response.created"}
    opening["messages"] = "message_start"
    assert opening[caller] in (events[0].get("object"), events[0].get("type"))
    assert "first" in json.dumps(events)
    assert gateway.totals.output_tokens == 5


@pytest.mark.parametrize("caller, upstream", PAIRS, ids=PAIR_IDS)
def test_it_translates_an_error_in_the_middle_of_a_stream(
    llm, make_gateway, connect, caller, upstream
):
    llm.queue({"text": "partial", "stream_error": "overloaded, try later"})
    gateway = make_gateway(upstream)
    speaker = CALLERS[caller]

    response = connect(gateway).post(
        speaker.path, json=speaker.first(True), headers=speaker.headers(gateway)
    )

    assert response.status_code == 200  # the headers were gone before the error came
    last = events_of(response.text)[-1]
    if caller == "chat":
        assert last["error"]["message"] == "overloaded, try later"
    elif caller == "responses":
        assert last["type"] == "response.failed"
        assert last["response"]["error"]["message"] == "overloaded, try later"
    else:
        assert (last["type"], last["error"]["message"]) == ("error", "overloaded, try later")
    assert "[DONE]" not in response.text
    assert gateway.totals.calls == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("caller, upstream", [("messages", "chat"), ("responses", "messages")])
def test_it_never_relays_the_key_through_a_translation(
    llm, make_gateway, connect, caller, upstream, stream
):
    llm.queue({"text": f"your key is {SECRET}"})
    gateway = make_gateway(upstream)
    speaker = CALLERS[caller]

    response = connect(gateway).post(
        speaker.path, json=speaker.first(stream), headers=speaker.headers(gateway)
    )

    assert speaker.read(response, stream).text == "your key is [redacted]"
    assert SECRET not in gateway.calls[0].response


# -- what is particular to one format ------------------------------------------------------------


def test_it_estimates_count_tokens_when_the_model_is_not_anthropics(llm, make_gateway, connect):
    gateway = make_gateway("chat", limits=GatewayLimits(max_calls=0))
    body = MessagesCaller().first(False)

    response = connect(gateway).post(
        "/v1/messages/count_tokens", json=body, headers=MessagesCaller().headers(gateway)
    )

    assert response.status_code == 200
    size = len(json.dumps([body["system"], body["messages"], body["tools"]]))
    assert response.json() == {"input_tokens": size // 4}
    assert llm.requests == []
    assert gateway.totals.calls == 0
    assert gateway.calls[0].status == 200


def test_it_refuses_previous_response_id_it_cannot_translate(llm, make_gateway, connect):
    gateway = make_gateway("messages")
    body = {**ResponsesCaller().first(False), "previous_response_id": "resp_123"}

    response = connect(gateway).post(
        "/v1/responses", json=body, headers=ResponsesCaller().headers(gateway)
    )

    assert response.status_code == 400
    assert "previous_response_id" in response.json()["error"]["message"]
    assert llm.requests == []
    assert gateway.totals.calls == 0


def test_it_refuses_a_malformed_request_in_the_callers_format(llm, make_gateway, connect):
    gateway = make_gateway("chat")

    response = connect(gateway).post(
        "/v1/messages",
        json={"model": "m", "max_tokens": 10, "messages": "hello"},
        headers=MessagesCaller().headers(gateway),
    )

    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "Mergeable gateway: messages must be a list of objects",
    }
    assert llm.requests == []


def test_it_passes_a_codex_custom_tool_as_a_function_and_brings_the_call_back(
    llm, make_gateway, connect
):
    patch = "*** Begin Patch\n*** Update File: a.py\n-a - b\n+a + b\n*** End Patch"
    llm.queue({"tool_calls": [{"name": "apply_patch", "arguments": {"input": patch}}]})
    gateway = make_gateway("chat")
    body = ResponsesCaller().first(True)
    body["tools"].append(
        {
            "type": "custom",
            "name": "apply_patch",
            "description": "Apply a patch",
            "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
        }
    )
    body["tools"].append({"type": "web_search"})

    response = connect(gateway).post(
        "/v1/responses", json=body, headers=ResponsesCaller().headers(gateway)
    )

    sent = llm.requests[0]["body"]["tools"]
    assert [tool["function"]["name"] for tool in sent] == ["read_file", "apply_patch"]
    assert sent[1]["function"]["parameters"]["required"] == ["input"]
    done = [e["item"] for e in events_of(response.text) if e["type"] == "response.output_item.done"]
    assert [(item["type"], item["name"], item["input"]) for item in done] == [
        ("custom_tool_call", "apply_patch", patch)
    ]
    assert done[0]["call_id"].startswith("call_fake")


def test_it_sends_the_custom_tool_call_back_as_a_function_call(llm, make_gateway, connect):
    gateway = make_gateway("messages")
    body = ResponsesCaller().first(False)
    body["input"] += [
        {"type": "custom_tool_call", "call_id": "call_1", "name": "apply_patch", "input": "P"},
        {"type": "custom_tool_call_output", "call_id": "call_1", "output": "Done!"},
    ]

    connect(gateway).post("/v1/responses", json=body, headers=ResponsesCaller().headers(gateway))

    messages = llm.requests[0]["body"]["messages"]
    assert messages[1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "apply_patch", "input": {"input": "P"}}
    ]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "Done!"}
    ]


def test_it_drops_thinking_and_stands_a_placeholder_for_images(llm, make_gateway, connect):
    gateway = make_gateway("chat")
    body = MessagesCaller().first(False)
    body["messages"][0]["content"].append(
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
    )
    body["tools"].append({"type": "web_search_20250305", "name": "web_search"})

    connect(gateway).post("/v1/messages", json=body, headers=MessagesCaller().headers(gateway))

    sent = llm.requests[0]["body"]
    assert set(sent) == {"model", "messages", "stream", "tools", "max_tokens"}
    assert sent["max_tokens"] == 1000
    assert sent["messages"][1] == {
        "role": "user",
        "content": TASK + "\n\n[an image was here; the gateway does not translate images]",
    }
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["read_file"]
    assert "iVBO" not in json.dumps(sent)


def test_it_moves_a_late_system_message_into_the_users_turn(llm, make_gateway, connect):
    # Local chat templates often refuse a system message anywhere but first.
    gateway = make_gateway("chat")
    body = ResponsesCaller().first(False)
    body["input"].append({"type": "message", "role": "developer", "content": "Be brief."})

    connect(gateway).post("/v1/responses", json=body, headers=ResponsesCaller().headers(gateway))

    assert llm.requests[0]["body"]["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": TASK + "\n\nBe brief."},
    ]


def test_it_gives_claude_code_an_empty_input_for_arguments_that_are_not_json(
    llm, make_gateway, connect
):
    llm.queue(
        {"tool_calls": [{"name": "read_file", "arguments": "{not json"}]},
        {"tool_calls": [{"name": "read_file", "arguments": "{not json"}]},
    )
    gateway = make_gateway("chat")
    client, speaker = connect(gateway), MessagesCaller()

    answers = [
        speaker.read(
            client.post(speaker.path, json=speaker.first(stream), headers=speaker.headers(gateway)),
            stream,
        )
        for stream in (False, True)
    ]

    assert [answer.calls[0][1:] for answer in answers] == [("read_file", {})] * 2


def test_it_ends_a_messages_stream_with_the_upstreams_usage(llm, make_gateway, connect):
    llm.queue({"text": "ok", "usage": {"input_tokens": 700, "output_tokens": 9}})
    gateway = make_gateway("responses")
    speaker = MessagesCaller()

    response = connect(gateway).post(
        speaker.path, json=speaker.first(True), headers=speaker.headers(gateway)
    )

    events = events_of(response.text)
    [delta] = [event for event in events if event["type"] == "message_delta"]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert (delta["usage"]["input_tokens"], delta["usage"]["output_tokens"]) == (700, 9)


def test_it_replays_a_whole_answer_as_a_stream_when_the_endpoint_would_not_stream():
    # Some local servers ignore "stream": true; the caller still gets its stream.
    translation = Translation("messages", "chat", MessagesCaller().first(True), UPSTREAM_MODEL)
    reply = {
        "id": "chatcmpl-1",
        "choices": [
            {
                "message": {
                    "content": "Looking.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "function": {"name": "read_file", "arguments": '{"path": "a"}'},
                        }
                    ],
                },
                "finish_reason": "stop",
            }
        ],
    }

    text = translation.start_stream().replay(reply, Usage(input_tokens=30, output_tokens=4))

    response = httpx.Response(200, text=text.decode())
    answer = MessagesCaller().read(response, stream=True)
    assert answer == Answer(
        "Looking.", [("c1", "read_file", {"path": "a"})], "tool_calls", (30, 4, 0)
    )


# -- set-up --------------------------------------------------------------------------------------


def test_it_refuses_a_wire_api_it_does_not_know(llm, socket_dir):
    config = upstream_config(llm, "chat", params={"wire_api": "completions"})

    with pytest.raises(ValueError, match="wire_api must be"):
        Gateway(config, socket_dir / "gw.sock")


def test_it_forwards_the_same_format_untranslated(llm, make_gateway, connect):
    gateway = make_gateway("responses")
    body = {**ResponsesCaller().first(False), "previous_response_id": "resp_1", "store": True}

    response = connect(gateway).post(
        "/v1/responses", json=body, headers=ResponsesCaller().headers(gateway)
    )

    assert response.status_code == 200
    assert llm.requests[0]["path"] == "/v1/responses"
    assert llm.requests[0]["body"] == {**body, "model": UPSTREAM_MODEL}


def test_it_describes_the_model_for_a_cli_that_speaks_another_format(llm, socket_dir):
    gateway = Gateway(upstream_config(llm, "responses"), socket_dir / "gw.sock")

    as_claude_code = gateway.sandbox_model(4100, speaks="anthropic")
    as_itself = gateway.sandbox_model(4100)
    in_worker = gateway.worker_model(speaks="anthropic")

    assert (as_claude_code.provider, as_claude_code.base_url) == (
        "anthropic",
        "http://127.0.0.1:4100",
    )
    assert (as_itself.provider, as_itself.base_url) == ("openai", "http://127.0.0.1:4100/v1")
    assert (in_worker.base_url, in_worker.socket_path) == (
        "http://gateway",
        str(gateway.socket_path),
    )
    assert as_claude_code.api_key == gateway.token
    assert as_claude_code.params == as_itself.params == {}  # wire_api is the gateway's business
    with pytest.raises(ValueError, match="speaks"):
        gateway.sandbox_model(4100, speaks="gemini")


def test_it_lists_the_model_in_the_anthropic_format_for_an_anthropic_client(
    llm, make_gateway, connect
):
    gateway = make_gateway("chat")
    client = connect(gateway)

    anthropic = client.get("/v1/models", headers=MessagesCaller().headers(gateway)).json()
    openai = client.get("/v1/models", headers=ChatCaller().headers(gateway)).json()
    refused = client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})

    assert anthropic["data"][0]["type"] == "model"
    assert anthropic["data"][0]["id"] == UPSTREAM_MODEL
    assert anthropic["has_more"] is False
    assert openai["object"] == "list"
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"
