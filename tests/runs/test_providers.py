from __future__ import annotations

import json
import socket

import httpx
import pytest

from runs import providers
from runs.providers import (
    ModelConfig,
    ProviderError,
    ToolCall,
    ToolSpec,
    check_connection,
    for_model,
    load_script,
)
from tests.fake_llm import FakeLLM

SECRET = "sk-test-DISTINCTIVE-7f3a9c2e1b"

READ_FILE = ToolSpec(
    name="read_file",
    description="Read a file",
    parameters={"type": "object", "properties": {"path": {"type": "string"}}},
)

CONVERSATION = [
    {"role": "system", "content": "You are a careful engineer."},
    {"role": "user", "content": "Fix the bug."},
    {
        "role": "assistant",
        "content": "Looking.",
        "tool_calls": [
            {"id": "c1", "name": "read_file", "arguments": {"path": "a.py"}},
            {"id": "c2", "name": "read_file", "arguments": {"path": "b.py"}},
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "print('a')"},
    {"role": "tool", "tool_call_id": "c2", "content": "print('b')"},
]


@pytest.fixture
def llm():
    with FakeLLM() as server:
        yield server


@pytest.fixture
def sleeps():
    return []


def openai_config(llm: FakeLLM, **overrides) -> ModelConfig:
    return ModelConfig(
        provider="openai",
        model="gpt-test",
        **{"base_url": llm.base_url_openai, "api_key": SECRET, **overrides},
    )


def anthropic_config(llm: FakeLLM, **overrides) -> ModelConfig:
    return ModelConfig(
        provider="anthropic",
        model="claude-test",
        **{"base_url": llm.base_url_anthropic, "api_key": SECRET, **overrides},
    )


def provider_for(config: ModelConfig, sleeps: list[float]):
    return for_model(config, sleep=sleeps.append)


# -- OpenAI --------------------------------------------------------------------------------------


def test_it_round_trips_openai_tool_calls(llm, sleeps):
    llm.queue(
        {
            "text": "Let me look.",
            "tool_calls": [{"name": "read_file", "arguments": {"path": "src/app.py"}}],
            "usage": {"input_tokens": 1200, "output_tokens": 300},
        }
    )
    config = openai_config(llm, input_per_mtok=3.0, output_per_mtok=15.0)

    reply = provider_for(config, sleeps).complete(CONVERSATION, [READ_FILE])

    assert reply.text == "Let me look."
    assert reply.tool_calls == [
        ToolCall(id="call_fake_1_0", name="read_file", arguments={"path": "src/app.py"})
    ]
    assert reply.stop_reason == "tool_calls"
    assert (reply.input_tokens, reply.output_tokens) == (1200, 300)
    assert reply.cost_usd == pytest.approx(1200 * 3.0 / 1e6 + 300 * 15.0 / 1e6)
    assert reply.raw["id"] == "chatcmpl-fake-1"


def test_it_sends_the_openai_wire_shape(llm, sleeps):
    config = openai_config(llm, params={"temperature": 0.2, "max_tokens": 512})

    provider_for(config, sleeps).complete(CONVERSATION, [READ_FILE])

    [request] = llm.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {SECRET}"
    assert request["body"] == {
        "model": "gpt-test",
        "temperature": 0.2,
        "max_tokens": 512,
        "messages": [
            {"role": "system", "content": "You are a careful engineer."},
            {"role": "user", "content": "Fix the bug."},
            {
                "role": "assistant",
                "content": "Looking.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "a.py"}'},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "b.py"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "print('a')"},
            {"role": "tool", "tool_call_id": "c2", "content": "print('b')"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "read_file",
                    "description": "Read a file",
                    "parameters": READ_FILE.parameters,
                },
            }
        ],
    }


def test_it_sends_no_tools_and_no_authorization_when_there_are_none(llm, sleeps):
    config = ModelConfig(provider="openai", model="local", base_url=llm.base_url_openai)

    reply = provider_for(config, sleeps).complete([{"role": "user", "content": "hi"}], [])

    assert reply.text == "done"
    assert reply.stop_reason == "stop"
    assert "authorization" not in llm.requests[0]["headers"]
    assert "tools" not in llm.requests[0]["body"]


def test_it_accepts_a_base_url_without_v1(llm, sleeps):
    config = openai_config(llm, base_url=llm.base_url_anthropic + "/")

    provider_for(config, sleeps).complete([{"role": "user", "content": "hi"}], [])

    assert llm.requests[0]["path"] == "/chat/completions"


def test_it_keeps_invalid_json_arguments_as_raw_text(llm, sleeps):
    llm.queue({"tool_calls": [{"name": "write_file", "arguments": '{"path": "a.py", '}]})

    reply = provider_for(openai_config(llm), sleeps).complete(CONVERSATION, [READ_FILE])

    assert reply.tool_calls[0].name == "write_file"
    assert reply.tool_calls[0].arguments == {"_raw": '{"path": "a.py", '}
    assert reply.text == ""


def test_it_reports_a_truncated_openai_reply_as_length(llm, sleeps):
    llm.queue({"text": "partial", "stop_reason": "length"})

    reply = provider_for(openai_config(llm), sleeps).complete(CONVERSATION, [])

    assert reply.stop_reason == "length"


# -- Anthropic -----------------------------------------------------------------------------------


def test_it_round_trips_anthropic_tool_calls(llm, sleeps):
    llm.queue(
        {
            "text": "Reading.",
            "tool_calls": [{"name": "read_file", "arguments": {"path": "x.py"}}],
            "usage": {"input_tokens": 2000, "output_tokens": 100},
        }
    )
    config = anthropic_config(llm, input_per_mtok=3.0, output_per_mtok=15.0)

    reply = provider_for(config, sleeps).complete(CONVERSATION, [READ_FILE])

    assert reply.text == "Reading."
    assert reply.tool_calls == [
        ToolCall(id="toolu_fake_1_0", name="read_file", arguments={"path": "x.py"})
    ]
    assert reply.stop_reason == "tool_calls"
    assert (reply.input_tokens, reply.output_tokens) == (2000, 100)
    assert reply.cost_usd == pytest.approx(2000 * 3.0 / 1e6 + 100 * 15.0 / 1e6)


def test_it_sends_the_anthropic_wire_shape_with_the_system_prompt_apart(llm, sleeps):
    provider_for(anthropic_config(llm), sleeps).complete(CONVERSATION, [READ_FILE])

    [request] = llm.requests
    assert request["path"] == "/v1/messages"
    assert request["headers"]["x-api-key"] == SECRET
    assert request["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request["headers"]
    body = request["body"]
    assert body["system"] == "You are a careful engineer."
    assert body["max_tokens"] == 4096
    assert body["tools"] == [
        {"name": "read_file", "description": "Read a file", "input_schema": READ_FILE.parameters}
    ]
    assert body["messages"] == [
        {"role": "user", "content": "Fix the bug."},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "c1", "name": "read_file", "input": {"path": "a.py"}},
                {"type": "tool_use", "id": "c2", "name": "read_file", "input": {"path": "b.py"}},
            ],
        },
        # both tool results in ONE user message: Anthropic requires alternating roles
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "print('a')"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "print('b')"},
            ],
        },
    ]


def test_it_lets_params_set_anthropic_max_tokens(llm, sleeps):
    config = anthropic_config(llm, params={"max_tokens": 100, "temperature": 0})

    provider_for(config, sleeps).complete([{"role": "user", "content": "hi"}], [])

    body = llm.requests[0]["body"]
    assert (body["max_tokens"], body["temperature"]) == (100, 0)
    assert "system" not in body


def test_it_merges_a_user_note_after_tool_results_into_the_same_turn(llm, sleeps):
    messages = CONVERSATION[1:4] + [{"role": "user", "content": "Hurry up."}]
    messages[1] = {**messages[1], "tool_calls": messages[1]["tool_calls"][:1]}

    provider_for(anthropic_config(llm), sleeps).complete(messages, [])

    last = llm.requests[0]["body"]["messages"][-1]
    assert last == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "print('a')"},
            {"type": "text", "text": "Hurry up."},
        ],
    }


def test_it_normalizes_anthropic_stop_reasons(llm, sleeps):
    llm.queue({"text": "All done."}, {"text": "cut", "stop_reason": "length"})
    provider = provider_for(anthropic_config(llm), sleeps)

    first = provider.complete([{"role": "user", "content": "hi"}], [])
    second = provider.complete([{"role": "user", "content": "hi"}], [])

    assert (first.stop_reason, first.tool_calls) == ("stop", [])
    assert second.stop_reason == "length"


# -- Retries and errors --------------------------------------------------------------------------


@pytest.mark.parametrize("make_config", [openai_config, anthropic_config])
def test_it_retries_rate_limits_and_server_errors_then_succeeds(llm, sleeps, make_config):
    llm.fail_next(429)
    llm.fail_next(503)
    llm.queue({"text": "finally"})

    reply = provider_for(make_config(llm), sleeps).complete(CONVERSATION, [])

    assert reply.text == "finally"
    assert len(llm.requests) == 3
    assert len(sleeps) == 2
    # full jitter: somewhere between zero and the exponential bound
    assert 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 2.0


def test_it_honours_retry_after_up_to_a_cap(llm, sleeps):
    llm.fail_next(429, retry_after=2)
    llm.fail_next(429, retry_after=3600)

    provider_for(openai_config(llm), sleeps).complete(CONVERSATION, [])

    assert sleeps == [2.0, providers.RETRY_AFTER_CAP]


def test_it_gives_up_after_max_retries(llm, sleeps):
    llm.fail_next(503, times=10)

    with pytest.raises(ProviderError) as caught:
        provider_for(openai_config(llm, max_retries=2), sleeps).complete(CONVERSATION, [])

    assert len(llm.requests) == 3
    assert caught.value.status_code == 503
    assert "gave up after 3 attempts" in str(caught.value)
    assert "fake failure with status 503" in str(caught.value)


@pytest.mark.parametrize("make_config", [openai_config, anthropic_config])
def test_it_does_not_retry_a_bad_request(llm, sleeps, make_config):
    llm.fail_next(400)

    with pytest.raises(ProviderError) as caught:
        provider_for(make_config(llm), sleeps).complete(CONVERSATION, [])

    assert len(llm.requests) == 1
    assert sleeps == []
    assert caught.value.status_code == 400
    assert "HTTP 400: fake failure with status 400" in str(caught.value)


def test_it_retries_when_the_server_cannot_be_reached(sleeps):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ModelConfig(
        provider="openai", base_url=f"http://127.0.0.1:{port}/v1", api_key=SECRET, max_retries=2
    )

    with pytest.raises(ProviderError) as caught:
        provider_for(config, sleeps).complete(CONVERSATION, [])

    assert len(sleeps) == 2
    assert "could not reach" in str(caught.value)
    assert caught.value.status_code is None


def test_it_times_out_a_slow_server(sleeps):
    with FakeLLM(delay=1.0) as slow:
        config = openai_config(slow, timeout=0.2, max_retries=0)
        with pytest.raises(ProviderError) as caught:
            provider_for(config, sleeps).complete(CONVERSATION, [])

    assert "Timeout" in str(caught.value)


def test_it_never_shows_the_api_key_even_when_the_provider_echoes_it(sleeps):
    def handler(request: httpx.Request) -> httpx.Response:
        message = f"Incorrect API key provided: {SECRET}. Find your key at the dashboard."
        return httpx.Response(401, json={"error": {"message": message}})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    config = ModelConfig(provider="openai", base_url="http://llm.invalid/v1", api_key=SECRET)

    with pytest.raises(ProviderError) as caught:
        for_model(config, client=client, sleep=sleeps.append).complete(CONVERSATION, [])

    assert "Incorrect API key provided" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    assert SECRET not in repr(config)


@pytest.mark.parametrize("status", [400, 401, 503])
def test_it_keeps_the_key_out_of_every_error(llm, sleeps, status):
    llm.fail_next(status, times=10)

    for make_config in (openai_config, anthropic_config):
        with pytest.raises(ProviderError) as caught:
            provider_for(make_config(llm, max_retries=1), sleeps).complete(CONVERSATION, [])
        assert str(status) in str(caught.value)
        assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


def test_it_truncates_long_provider_errors(llm, sleeps):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"error": {"message": "x" * 5000}})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    config = ModelConfig(provider="openai", base_url="http://llm.invalid/v1")

    with pytest.raises(ProviderError) as caught:
        for_model(config, client=client).complete(CONVERSATION, [])

    assert len(str(caught.value)) < 600


def test_it_refuses_an_unknown_provider():
    with pytest.raises(ProviderError, match="unknown provider 'gemini'"):
        for_model(ModelConfig(provider="gemini", base_url="http://x"))


# -- Scripted ------------------------------------------------------------------------------------

SCRIPT = [
    {
        "text": "Reading first.",
        "tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}],
        "usage": {"input_tokens": 1000, "output_tokens": 200},
    },
    {"tool_calls": [{"name": "finish", "arguments": {"summary": "fixed"}}]},
]


def test_it_replays_a_script_turn_by_turn_from_the_conversation():
    config = ModelConfig(
        provider="scripted", script=SCRIPT, input_per_mtok=1.0, output_per_mtok=2.0
    )
    provider = for_model(config)
    messages = [{"role": "user", "content": "Fix it."}]

    first = provider.complete(messages, [READ_FILE])
    messages += [
        {"role": "assistant", "content": first.text, "tool_calls": [vars(first.tool_calls[0])]},
        {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "..."},
    ]
    second = provider.complete(messages, [READ_FILE])

    assert first.text == "Reading first."
    assert first.tool_calls == [ToolCall("call_0_0", "read_file", {"path": "a.py"})]
    assert first.stop_reason == "tool_calls"
    assert first.cost_usd == pytest.approx(1000 * 1.0 / 1e6 + 200 * 2.0 / 1e6)
    assert second.tool_calls == [ToolCall("call_1_0", "finish", {"summary": "fixed"})]
    assert (second.text, second.input_tokens) == ("", 0)
    # stateless: a fresh provider given the same history replays the same turn
    assert for_model(config).complete(messages, []).tool_calls == second.tool_calls


def test_it_finishes_when_the_script_runs_out():
    provider = for_model(ModelConfig(provider="scripted", script=SCRIPT[:1]))
    messages = [{"role": "user", "content": "go"}, {"role": "assistant", "content": "x"}]

    reply = provider.complete(messages, [])

    assert reply.text == "(script ended)"
    assert reply.tool_calls == [ToolCall("call_1_0", "finish", {"summary": "script ended"})]


def test_it_refuses_a_scripted_model_without_a_script():
    with pytest.raises(ProviderError, match="no script"):
        for_model(ModelConfig(provider="scripted"))


def test_it_loads_a_yaml_script_with_defaults():
    text = """
turns:
  - text: I will look around.
  - tool_calls:
      - name: list_files
        arguments: {path: src}
    usage: {input_tokens: 50, output_tokens: 7}
"""
    assert load_script(text) == [
        {
            "text": "I will look around.",
            "tool_calls": [],
            "usage": {"input_tokens": 0, "output_tokens": 0},
        },
        {
            "text": "",
            "tool_calls": [{"name": "list_files", "arguments": {"path": "src"}}],
            "usage": {"input_tokens": 50, "output_tokens": 7},
        },
    ]


def test_it_loads_a_json_list_script():
    turns = load_script(json.dumps([{"text": "hi"}, {"tool_calls": [{"name": "finish"}]}]))

    assert [t["text"] for t in turns] == ["hi", ""]
    assert turns[1]["tool_calls"] == [{"name": "finish", "arguments": {}}]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("- text: ok\n- text: 3\n", "turn 2: 'text' must be a string"),
        ("- tool_calls: [{arguments: {}}]\n", "turn 1: tool_calls[1]: 'name'"),
        ("- tool_calls: [{name: x, arguments: [1]}]\n", "turn 1: tool_calls[1]: 'arguments'"),
        ("- tool_call: [{name: x}]\n", "turn 1: unknown field 'tool_call'"),
        ("- text: ok\n  usage: {input_tokens: -1}\n", "turn 1: 'usage.input_tokens'"),
        ("- {}\n", "turn 1: needs 'text' or 'tool_calls'"),
        ("- just a string\n", "turn 1: must be a mapping"),
        ("text: hello\n", "a list of turns"),
        ("- text: [unclosed\n", "not valid YAML"),
    ],
)
def test_it_explains_what_is_wrong_with_a_script(text, error):
    with pytest.raises(ValueError) as caught:
        load_script(text)

    assert error in str(caught.value)


# -- check_connection ----------------------------------------------------------------------------


def test_it_tests_an_openai_connection_with_a_tiny_request(llm):
    llm.queue({"text": " OK\n"})

    assert check_connection(openai_config(llm)) == "OK"
    body = llm.requests[0]["body"]
    assert body["messages"] == [{"role": "user", "content": "Reply with OK"}]
    assert body["max_tokens"] == 16


def test_it_reports_the_provider_error_when_a_connection_test_fails(llm):
    llm.fail_next(401)

    with pytest.raises(ProviderError) as caught:
        check_connection(anthropic_config(llm))

    assert "HTTP 401: fake failure with status 401" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_it_does_not_keep_retrying_a_connection_test(llm, monkeypatch):
    waits = []
    monkeypatch.setattr(providers, "_sleep", waits.append)
    llm.fail_next(503, times=10)

    with pytest.raises(ProviderError):
        check_connection(openai_config(llm))

    assert len(llm.requests) == 2
    assert len(waits) == 1


def test_it_describes_a_scripted_model_when_testing_its_connection():
    config = ModelConfig(provider="scripted", script=SCRIPT)

    assert check_connection(config) == "scripted model with 2 turns"


# -- The fake server itself, as other tests rely on it ------------------------------------------


def test_it_streams_openai_replies_from_the_fake_server(llm):
    llm.queue({"text": "hi", "tool_calls": [{"name": "finish", "arguments": {"summary": "s"}}]})
    body = {"model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True}}

    response = httpx.post(llm.base_url_openai + "/chat/completions", json=body)
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]

    assert response.headers["content-type"] == "text/event-stream"
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["content"] == "hi"
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "finish"
    assert chunks[2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[3]["usage"]["completion_tokens"] == 5
