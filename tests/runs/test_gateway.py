"""The per-run model gateway, end to end: clients on its Unix socket, FakeLLM as the provider."""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
import threading
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from runs.gateway import CallRecord, Gateway, GatewayLimits, Totals
from runs.providers import ModelConfig, ProviderError, ToolSpec, for_model
from tests.fake_llm import FakeLLM

SECRET = "sk-test-GATEWAY-SECRET-4b8e1d9a"

READ_FILE = ToolSpec(
    name="read_file",
    description="Read a file",
    parameters={"type": "object", "properties": {"path": {"type": "string"}}},
)


@pytest.fixture
def llm():
    with FakeLLM() as server:
        yield server


@pytest.fixture
def socket_dir():
    # Not tmp_path: a Unix socket's path must fit in 107 bytes, and test names are long.
    path = Path(tempfile.mkdtemp(prefix="gw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def model_config(llm: FakeLLM, provider: str = "openai", **overrides) -> ModelConfig:
    base_url = llm.base_url_openai if provider == "openai" else llm.base_url_anthropic
    model = "gpt-test" if provider == "openai" else "claude-test"
    return ModelConfig(
        provider=provider,
        **{"model": model, "base_url": base_url, "api_key": SECRET, **overrides},
    )


@pytest.fixture
def make_gateway(llm, socket_dir):
    """A started gateway in front of FakeLLM; `config` overrides fields of the model."""
    gateways = []

    def make(provider: str = "openai", config: dict | None = None, **kwargs) -> Gateway:
        gateway = Gateway(
            model_config(llm, provider, **(config or {})),
            socket_dir / f"gw{len(gateways)}.sock",
            **kwargs,
        )
        gateways.append(gateway.start())
        return gateway

    yield make
    for gateway in gateways:
        gateway.close()


@pytest.fixture
def connect():
    """An httpx client on a gateway's socket, as an agent in the sandbox would have."""
    clients = []

    def make(gateway: Gateway) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(gateway.socket_path))
        client = httpx.Client(transport=transport, base_url="http://gateway", timeout=5)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def bearer(gateway: Gateway) -> dict[str, str]:
    return {"authorization": f"Bearer {gateway.token}"}


def anthropic_auth(gateway: Gateway) -> dict[str, str]:
    return {"x-api-key": gateway.token, "anthropic-version": "2023-06-01"}


def chat(**extra) -> dict:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], **extra}


def message(**extra) -> dict:
    return {
        "model": "claude-test",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


def events_of(text: str) -> list:
    """The data of each server-sent event, parsed as JSON except `[DONE]`."""
    data = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    return [item if item == "[DONE]" else json.loads(item) for item in data]


# -- the key and the token -----------------------------------------------------------------------


def test_it_sends_the_real_key_upstream_and_never_the_token(llm, make_gateway, connect):
    gateway = make_gateway()

    response = connect(gateway).post("/v1/chat/completions", json=chat(), headers=bearer(gateway))

    assert response.status_code == 200
    [request] = llm.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {SECRET}"
    assert not any(gateway.token in value for value in request["headers"].values())
    assert SECRET not in response.text
    assert not any(SECRET in value for value in response.headers.values())


def test_it_sends_the_anthropic_key_as_x_api_key_and_keeps_the_client_headers(
    llm, make_gateway, connect
):
    gateway = make_gateway("anthropic")
    headers = {"x-api-key": gateway.token, "anthropic-beta": "tools-2024-04-04"}

    response = connect(gateway).post("/v1/messages", json=message(), headers=headers)

    assert response.status_code == 200
    upstream = llm.requests[0]["headers"]
    assert upstream["x-api-key"] == SECRET
    assert upstream["anthropic-version"] == "2023-06-01"
    assert upstream["anthropic-beta"] == "tools-2024-04-04"
    assert "authorization" not in upstream
    assert not any(gateway.token in value for value in upstream.values())


def test_it_sends_no_key_when_the_model_has_none(llm, make_gateway, connect):
    gateway = make_gateway(config={"api_key": ""})

    connect(gateway).post("/v1/chat/completions", json=chat(), headers=bearer(gateway))

    assert "authorization" not in llm.requests[0]["headers"]


@pytest.mark.parametrize(
    "header",
    [
        lambda token: {"authorization": f"Bearer {token}"},
        lambda token: {"authorization": f"bearer {token}"},
        lambda token: {"x-api-key": token},
        lambda token: {"api-key": token},
    ],
    ids=["bearer", "lowercase-bearer", "x-api-key", "api-key"],
)
def test_it_accepts_the_token_in_each_usual_header(make_gateway, connect, header):
    gateway = make_gateway()

    response = connect(gateway).post(
        "/v1/chat/completions", json=chat(), headers=header(gateway.token)
    )

    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer not-the-token"},
        {"x-api-key": "nope"},
        {"authorization": SECRET},
    ],
    ids=["none", "wrong-bearer", "wrong-x-api-key", "the-key-without-bearer"],
)
def test_it_refuses_a_missing_or_wrong_token(llm, make_gateway, connect, headers):
    gateway = make_gateway()

    response = connect(gateway).post("/v1/chat/completions", json=chat(), headers=headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert "run token" in response.json()["error"]["message"]
    assert llm.requests == []
    assert [call.status for call in gateway.calls] == [401]


def test_it_refuses_a_wrong_token_in_the_anthropic_format(llm, make_gateway, connect):
    gateway = make_gateway("anthropic")

    response = connect(gateway).post("/v1/messages", json=message(), headers={"x-api-key": "x"})

    assert response.status_code == 401
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "authentication_error"
    assert llm.requests == []


def test_it_never_relays_the_key_when_the_provider_echoes_it(llm, make_gateway, connect):
    llm.queue({"text": f"your key is {SECRET}"}, {"text": f"streamed: {SECRET}"})
    gateway = make_gateway()
    client = connect(gateway)

    plain = client.post("/v1/chat/completions", json=chat(), headers=bearer(gateway))
    streamed = client.post("/v1/chat/completions", json=chat(stream=True), headers=bearer(gateway))

    assert plain.json()["choices"][0]["message"]["content"] == "your key is [redacted]"
    assert events_of(streamed.text)[0]["choices"][0]["delta"]["content"] == "streamed: [redacted]"
    assert not any(SECRET in call.response for call in gateway.calls)


# -- forwarding ----------------------------------------------------------------------------------


def test_it_forces_the_run_model(llm, make_gateway, connect):
    gateway = make_gateway()
    client = connect(gateway)

    client.post("/v1/chat/completions", json=chat(model="gpt-5-pro"), headers=bearer(gateway))
    client.post("/v1/responses", json={"model": "o3-pro", "input": "hi"}, headers=bearer(gateway))
    client.post("/chat/completions", json={"messages": []}, headers=bearer(gateway))

    assert [request["body"]["model"] for request in llm.requests] == ["gpt-test"] * 3
    assert json.loads(gateway.calls[0].request)["model"] == "gpt-test"


def test_it_maps_the_sandbox_paths_onto_the_configured_base_url(llm, make_gateway, connect):
    # An OpenAI base_url need not end in /v1: the gateway appends to it whatever it is.
    gateway = make_gateway(config={"base_url": llm.base_url_anthropic + "/"})

    connect(gateway).post("/v1/chat/completions", json=chat(), headers=bearer(gateway))

    assert llm.requests[0]["path"] == "/chat/completions"


def test_it_keeps_the_query_string(llm, make_gateway, connect):
    gateway = make_gateway("anthropic")

    response = connect(gateway).post(
        "/v1/messages?beta=true", json=message(), headers=anthropic_auth(gateway)
    )

    assert response.status_code == 200
    assert (llm.requests[0]["path"], llm.requests[0]["query"]) == ("/v1/messages", "beta=true")
    assert gateway.calls[0].path == "/v1/messages?beta=true"


def test_it_reads_a_chunked_request_body(llm, make_gateway, connect):
    gateway = make_gateway()
    body = json.dumps(chat()).encode()

    response = connect(gateway).post(
        "/v1/chat/completions",
        content=iter([body[:10], body[10:]]),  # no length known: sent chunked
        headers={**bearer(gateway), "content-type": "application/json"},
    )

    assert response.status_code == 200
    assert llm.requests[0]["body"]["messages"] == chat()["messages"]


def test_it_refuses_a_body_that_is_not_a_json_object(llm, make_gateway, connect):
    gateway = make_gateway()

    response = connect(gateway).post(
        "/v1/chat/completions", content=b"[1, 2]", headers=bearer(gateway)
    )

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert llm.requests == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_it_serves_the_repo_providers_through_worker_model(llm, make_gateway, provider):
    llm.queue(
        {
            "text": "Let me look.",
            "tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}],
            "usage": {"input_tokens": 1200, "output_tokens": 300},
        }
    )
    gateway = make_gateway(provider, config={"input_per_mtok": 3.0, "output_per_mtok": 15.0})

    with for_model(gateway.worker_model()) as model:
        reply = model.complete([{"role": "user", "content": "Fix it."}], [READ_FILE])

    assert reply.text == "Let me look."
    assert [call.name for call in reply.tool_calls] == ["read_file"]
    assert reply.tool_calls[0].arguments == {"path": "a.py"}
    cost = 1200 * 3.0 / 1e6 + 300 * 15.0 / 1e6
    assert gateway.totals == Totals(
        calls=1, input_tokens=1200, output_tokens=300, cost_usd=pytest.approx(cost)
    )
    assert gateway.calls[0].cost_usd == pytest.approx(cost)
    key_header = "authorization" if provider == "openai" else "x-api-key"
    assert SECRET in llm.requests[0]["headers"][key_header]


def test_it_shows_the_worker_a_refusal_as_a_provider_error(make_gateway):
    gateway = make_gateway(limits=GatewayLimits(max_calls=0))

    with for_model(gateway.worker_model(), sleep=lambda seconds: None) as model:
        with pytest.raises(ProviderError) as raised:
            model.complete([{"role": "user", "content": "hi"}], [])

    assert raised.value.status_code == 403
    assert "limit of 0 model calls" in str(raised.value)


def test_it_passes_provider_errors_through(llm, make_gateway, connect):
    llm.fail_next(429, retry_after=3)
    gateway = make_gateway()

    response = connect(gateway).post("/v1/chat/completions", json=chat(), headers=bearer(gateway))

    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["message"] == "fake failure with status 429"
    assert gateway.calls[0].status == 429


def test_it_answers_502_when_the_provider_cannot_be_reached(socket_dir, connect):
    with FakeLLM() as gone:
        config = model_config(gone)
    with Gateway(config, socket_dir / "gw.sock") as gateway:
        response = connect(gateway).post(
            "/v1/chat/completions", json=chat(), headers=bearer(gateway)
        )

        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_unreachable"
        assert "could not reach the model endpoint" in response.json()["error"]["message"]
        assert SECRET not in response.text
        [record] = gateway.calls
        assert (record.status, record.input_tokens) == (502, 0)
        assert "ConnectError" in record.error
        assert SECRET not in record.error + record.response


def test_it_answers_502_in_the_anthropic_format(socket_dir, connect):
    with FakeLLM() as gone:
        config = model_config(gone, "anthropic")
    with Gateway(config, socket_dir / "gw.sock") as gateway:
        response = connect(gateway).post(
            "/v1/messages", json=message(), headers=anthropic_auth(gateway)
        )

    assert response.status_code == 502
    assert response.json()["error"]["type"] == "api_error"


def test_it_forwards_count_tokens_without_metering_it(llm, make_gateway, connect):
    gateway = make_gateway("anthropic", limits=GatewayLimits(max_calls=0))
    client = connect(gateway)

    counted = client.post(
        "/v1/messages/count_tokens", json=message(model="x"), headers=anthropic_auth(gateway)
    )
    refused = client.post("/v1/messages", json=message(), headers=anthropic_auth(gateway))

    assert counted.status_code == 200
    assert counted.json()["input_tokens"] > 0
    assert llm.requests[0]["body"]["model"] == "claude-test"
    assert refused.status_code == 403
    assert gateway.totals.calls == 0
    assert [call.status for call in gateway.calls] == [200, 403]


# -- streams -------------------------------------------------------------------------------------


def test_it_relays_an_openai_chat_stream_and_meters_it(llm, make_gateway, connect):
    llm.queue(
        {
            "text": "hi",
            "tool_calls": [{"name": "finish", "arguments": {"summary": "s"}}],
            "usage": {"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 200},
        }
    )
    gateway = make_gateway()

    response = connect(gateway).post(
        "/v1/chat/completions", json=chat(stream=True), headers=bearer(gateway)
    )

    assert response.headers["content-type"] == "text/event-stream"
    # The gateway asked for usage; the client, which did not, gets no usage-only chunk.
    assert llm.requests[0]["body"]["stream_options"] == {"include_usage": True}
    events = events_of(response.text)
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"]["content"] == "hi"
    assert events[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "finish"
    assert events[2]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(event == "[DONE]" or event["choices"] for event in events)
    [record] = gateway.calls
    assert record.stream is True
    assert (record.input_tokens, record.output_tokens, record.cache_read_tokens) == (1200, 300, 200)
    assert '"usage"' in record.response  # the record keeps the stream as the provider sent it
    assert gateway.totals.tokens == 1500


def test_it_relays_the_usage_chunk_to_a_client_that_asked_for_it(llm, make_gateway, connect):
    gateway = make_gateway()
    body = chat(stream=True, stream_options={"include_usage": True})

    response = connect(gateway).post("/v1/chat/completions", json=body, headers=bearer(gateway))

    usage_chunks = [e for e in events_of(response.text) if e != "[DONE]" and e.get("usage")]
    assert [chunk["usage"]["completion_tokens"] for chunk in usage_chunks] == [5]
    assert gateway.totals.output_tokens == 5


def test_it_relays_an_anthropic_stream_and_counts_cached_input(llm, make_gateway, connect):
    llm.queue(
        {
            "text": "Looking.",
            "tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}],
            "usage": {
                "input_tokens": 1000,
                "output_tokens": 50,
                "cache_read_tokens": 600,
                "cache_write_tokens": 100,
            },
        }
    )
    gateway = make_gateway("anthropic", config={"input_per_mtok": 3.0, "output_per_mtok": 15.0})

    response = connect(gateway).post(
        "/v1/messages?beta=true", json=message(stream=True), headers=anthropic_auth(gateway)
    )

    [record] = gateway.calls
    assert response.text == record.response  # relayed byte for byte
    events = events_of(response.text)
    assert [event["type"] for event in events][0] == "message_start"
    assert events[0]["message"]["usage"]["input_tokens"] == 300  # the uncached rest, on the wire
    assert events[-1]["type"] == "message_stop"
    assert events[2]["delta"]["text"] == "Looking."
    assert json.loads(events[5]["delta"]["partial_json"]) == {"path": "a.py"}
    assert record.stream is True
    assert (
        record.input_tokens,
        record.output_tokens,
        record.cache_read_tokens,
        record.cache_write_tokens,
    ) == (1000, 50, 600, 100)
    assert record.cost_usd == pytest.approx(1000 * 3.0 / 1e6 + 50 * 15.0 / 1e6)
    assert gateway.totals.cache_write_tokens == 100


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
def test_it_relays_the_responses_api_and_meters_it(llm, make_gateway, connect, stream):
    llm.queue(
        {
            "text": "Patched.",
            "tool_calls": [{"name": "exec_command", "arguments": {"cmd": "ls"}}],
            "usage": {"input_tokens": 900, "output_tokens": 40, "cache_read_tokens": 512},
        }
    )
    gateway = make_gateway(config={"params": {"wire_api": "responses"}})
    body = {"model": "gpt-5-codex", "input": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True

    response = connect(gateway).post("/v1/responses", json=body, headers=bearer(gateway))

    assert response.status_code == 200
    assert llm.requests[0]["path"] == "/v1/responses"
    if stream:
        events = events_of(response.text)
        assert events[0]["type"] == "response.created"
        completed = events[-1]
        assert completed["type"] == "response.completed"
        output = completed["response"]["output"]
    else:
        output = response.json()["output"]
    assert output[0]["content"][0]["text"] == "Patched."
    assert output[1]["name"] == "exec_command"
    [record] = gateway.calls
    assert record.stream is stream
    assert (record.input_tokens, record.output_tokens, record.cache_read_tokens) == (900, 40, 512)


def test_it_relays_a_stream_as_it_arrives(llm, make_gateway, connect):
    llm.queue({"text": "first", "tool_calls": [{"name": "finish", "arguments": {}}]})
    llm.stream_gate = threading.Event()  # the provider holds the stream after its first event
    gateway = make_gateway()
    client = connect(gateway)

    try:
        with client.stream(
            "POST", "/v1/chat/completions", json=chat(stream=True), headers=bearer(gateway)
        ) as response:
            lines = response.iter_lines()
            # Were the stream buffered, this would wait for the gate and time out.
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["choices"][0]["delta"]["content"] == "first"
            assert not llm.stream_gate.is_set()
            llm.stream_gate.set()
            rest = [line for line in lines if line.startswith("data: ")]
    finally:
        llm.stream_gate.set()

    assert rest[-1] == "data: [DONE]"
    assert gateway.totals.output_tokens == 5


def test_it_keeps_a_connection_alive_across_streams_and_plain_replies(make_gateway, connect):
    gateway = make_gateway()
    client = connect(gateway)

    statuses = []
    for stream in (True, False, True, True, False):
        response = client.post(
            "/v1/chat/completions", json=chat(stream=stream), headers=bearer(gateway)
        )
        statuses.append(response.status_code)
        assert "done" in response.text

    assert statuses == [200] * 5
    assert gateway.totals.calls == 5


# -- answered by the gateway itself --------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_it_answers_the_model_list_itself(llm, make_gateway, connect, provider):
    gateway = make_gateway(provider)
    client = connect(gateway)
    headers = bearer(gateway)
    model = gateway.upstream.model

    listed = client.get("/v1/models", headers=headers)
    one = client.get(f"/v1/models/{model}", headers=headers)
    other = client.get("/v1/models/gpt-5-pro", headers=headers)

    assert [entry["id"] for entry in listed.json()["data"]] == [model]
    assert one.json()["id"] == model
    assert other.status_code == 404
    assert llm.requests == []


def test_it_answers_the_model_list_without_the_v1_prefix_too(make_gateway, connect):
    gateway = make_gateway()

    response = connect(gateway).get("/models", headers=bearer(gateway))

    assert response.json() == {
        "object": "list",
        "data": [{"id": "gpt-test", "object": "model", "created": 0, "owned_by": "mergeable"}],
    }


def test_it_wants_the_token_for_the_model_list(make_gateway, connect):
    gateway = make_gateway()

    assert connect(gateway).get("/v1/models").status_code == 401


def test_it_answers_a_probe_at_the_root_without_a_token(llm, make_gateway, connect):
    gateway = make_gateway("anthropic")
    client = connect(gateway)

    probe = client.head("/")
    page = client.get("/")

    assert (probe.status_code, probe.content) == (200, b"")
    assert page.status_code == 200
    assert b"gateway" in page.content
    assert llm.requests == []


@pytest.mark.parametrize(
    "provider, method, path",
    [
        ("openai", "POST", "/v1/embeddings"),
        ("openai", "POST", "/v1/completions"),
        ("openai", "GET", "/v1/chat/completions"),
        ("anthropic", "POST", "/v1/complete"),
        ("anthropic", "DELETE", "/v1/messages"),
    ],
)
def test_it_answers_other_routes_with_a_404_in_the_provider_format(
    llm, make_gateway, connect, provider, method, path
):
    gateway = make_gateway(provider)

    response = connect(gateway).request(method, path, json={}, headers=bearer(gateway))

    assert response.status_code == 404
    if provider == "openai":
        assert path in response.json()["error"]["message"]
    else:
        assert response.json()["error"]["type"] == "not_found_error"
    assert llm.requests == []


# -- limits --------------------------------------------------------------------------------------

# FakeLLM's default usage is 10 input + 5 output tokens a call; at $1,000 per million tokens each
# way, a call costs $0.015. Each limit below lets two calls through and refuses the third.
PRICES = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}
LIMITS = [
    (GatewayLimits(max_cost_usd=0.02), "max_cost_usd", "cost limit ($0.02)"),
    (GatewayLimits(max_tokens=20), "max_tokens", "token limit (20 tokens)"),
    (GatewayLimits(max_calls=2), "max_calls", "limit of 2 model calls"),
]


@pytest.mark.parametrize(
    "limits, name, words", LIMITS, ids=[name for _limits, name, _words in LIMITS]
)
def test_it_refuses_calls_once_a_limit_is_reached(llm, make_gateway, connect, limits, name, words):
    gateway = make_gateway(config=PRICES, limits=limits)
    client = connect(gateway)

    statuses = [
        client.post("/v1/chat/completions", json=chat(), headers=bearer(gateway)).status_code
        for _ in range(2)
    ]
    assert gateway.limit_hit is None
    assert gateway.limit_message() == ""
    refused = client.post("/v1/chat/completions", json=chat(), headers=bearer(gateway))

    assert statuses == [200, 200]
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("mergeable_limit_reached", name)
    assert words in error["message"]
    assert gateway.limit_hit == name
    assert error["message"] == gateway.limit_message()
    assert gateway.limit_message().endswith("no further model calls are allowed.")
    assert len(llm.requests) == 2
    assert gateway.totals.calls == 2
    assert gateway.calls[-1].status == 403


@pytest.mark.parametrize(
    "limits, name, words", LIMITS, ids=[name for _limits, name, _words in LIMITS]
)
def test_it_refuses_anthropic_calls_in_the_anthropic_format(
    llm, make_gateway, connect, limits, name, words
):
    gateway = make_gateway("anthropic", config=PRICES, limits=limits)
    client = connect(gateway)

    for _ in range(2):
        client.post("/v1/messages", json=message(stream=True), headers=anthropic_auth(gateway))
    refused = client.post("/v1/messages", json=message(), headers=anthropic_auth(gateway))

    assert refused.status_code == 403
    assert refused.json()["type"] == "error"
    assert refused.json()["error"]["type"] == "permission_error"
    assert words in refused.json()["error"]["message"]
    assert gateway.limit_hit == name
    assert len(llm.requests) == 2


def test_it_counts_concurrent_calls_against_the_call_limit(llm, make_gateway, connect):
    llm.delay = 0.2  # all eight are in flight at once
    gateway = make_gateway(limits=GatewayLimits(max_calls=3))
    statuses: list[int] = []

    def call() -> None:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(gateway.socket_path))) as client:
            response = client.post(
                "http://gateway/v1/chat/completions", json=chat(), headers=bearer(gateway)
            )
            statuses.append(response.status_code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] * 3 + [403] * 5
    assert len(llm.requests) == 3


# -- records -------------------------------------------------------------------------------------


def test_it_records_every_call_and_logs_a_json_line_each(llm, make_gateway, connect, socket_dir):
    llm.queue({"text": "hello", "usage": {"input_tokens": 100, "output_tokens": 20}})
    reported: list[tuple[CallRecord, Totals]] = []
    log_path = socket_dir / "calls.jsonl"
    gateway = make_gateway(
        config={"input_per_mtok": 2.0, "output_per_mtok": 8.0},
        on_call=lambda record, totals: reported.append((record, totals)),
        log_path=log_path,
    )
    client = connect(gateway)

    client.post("/v1/chat/completions", json=chat(model="other"), headers=bearer(gateway))
    client.post("/v1/chat/completions", json=chat(stream=True), headers=bearer(gateway))
    client.post("/v1/chat/completions", json=chat(), headers={"authorization": "Bearer wrong"})

    calls = gateway.calls
    assert [call.index for call in calls] == [0, 1, 2]
    assert [call.status for call in calls] == [200, 200, 401]
    assert [call.stream for call in calls] == [False, True, False]
    first = calls[0]
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert json.loads(first.request)["model"] == "gpt-test"
    assert json.loads(first.response)["choices"][0]["message"]["content"] == "hello"
    assert (first.input_tokens, first.output_tokens) == (100, 20)
    assert first.cost_usd == pytest.approx(100 * 2.0 / 1e6 + 20 * 8.0 / 1e6)
    assert first.latency_s > 0
    assert datetime.fromisoformat(first.started_at).tzinfo is not None
    assert calls[1].response.startswith("data: ")
    assert "run token" in calls[2].response
    assert [record for record, _totals in reported] == calls
    assert [totals.calls for _record, totals in reported] == [1, 2, 2]
    assert reported[-1][1] == gateway.totals
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [CallRecord(**line) for line in lines] == calls
    assert SECRET not in log_path.read_text()


def test_it_keeps_serving_when_on_call_fails(make_gateway, connect):
    def explode(record: CallRecord, totals: Totals) -> None:
        raise RuntimeError("the database is down")

    gateway = make_gateway(on_call=explode)
    client = connect(gateway)

    responses = [
        client.post("/v1/chat/completions", json=chat(), headers=bearer(gateway)) for _ in range(2)
    ]

    assert [response.status_code for response in responses] == [200, 200]
    assert len(gateway.calls) == 2


def test_it_caps_the_bodies_it_records(llm, make_gateway, connect):
    gateway = make_gateway()
    huge = "x" * 200_000

    response = connect(gateway).post(
        "/v1/chat/completions",
        json=chat(messages=[{"role": "user", "content": huge}]),
        headers=bearer(gateway),
    )

    assert response.status_code == 200
    assert llm.requests[0]["body"]["messages"][0]["content"] == huge  # forwarded whole
    [record] = gateway.calls
    assert len(record.request) < 70_000
    assert record.request.endswith("more bytes not recorded]")


# -- set-up --------------------------------------------------------------------------------------


def test_it_opens_its_socket_to_the_sandbox_user_and_removes_it_on_close(llm, socket_dir):
    path = socket_dir / "gw.sock"
    gateway = Gateway(model_config(llm), path).start()

    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666

    gateway.close()
    gateway.close()

    assert not path.exists()


def test_it_refuses_to_serve_a_scripted_model(socket_dir):
    with pytest.raises(ValueError, match="scripted"):
        Gateway(ModelConfig(provider="scripted", script=[]), socket_dir / "gw.sock")


def test_it_makes_a_fresh_token_for_each_gateway(llm, socket_dir):
    first = Gateway(model_config(llm), socket_dir / "a.sock")
    second = Gateway(model_config(llm), socket_dir / "b.sock")

    assert len(first.token) >= 40
    assert first.token != second.token
    assert Gateway(model_config(llm), socket_dir / "c.sock", token="given").token == "given"


@pytest.mark.parametrize(
    "provider, sandbox_url, worker_url",
    [
        ("openai", "http://127.0.0.1:4100/v1", "http://gateway/v1"),
        ("anthropic", "http://127.0.0.1:4100", "http://gateway"),
    ],
)
def test_it_describes_the_model_for_the_sandbox_and_the_worker(
    llm, socket_dir, provider, sandbox_url, worker_url
):
    config = model_config(llm, provider, input_per_mtok=3.0)
    gateway = Gateway(config, socket_dir / "gw.sock")

    sandboxed = gateway.sandbox_model(4100)
    in_worker = gateway.worker_model()

    assert (sandboxed.base_url, sandboxed.api_key, sandboxed.socket_path) == (
        sandbox_url,
        gateway.token,
        "",
    )
    assert (in_worker.base_url, in_worker.api_key, in_worker.socket_path) == (
        worker_url,
        gateway.token,
        str(socket_dir / "gw.sock"),
    )
    assert (sandboxed.model, sandboxed.input_per_mtok) == (config.model, 3.0)
    assert config.api_key == SECRET  # the upstream's own config is left alone


def test_it_sends_the_provider_its_own_host_name(llm, make_gateway, connect):
    gateway = make_gateway()

    connect(gateway).post("/v1/chat/completions", json=chat(), headers=bearer(gateway))

    assert llm.requests[0]["headers"]["host"] == llm.base_url_anthropic.removeprefix("http://")
