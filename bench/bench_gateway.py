"""Benchmark: what the per-run model gateway adds to each model call.

1,000 non-streaming chat-completion calls to `tests.fake_llm.FakeLLM` (a local scripted
OpenAI-compatible endpoint, no delay), made directly and through a `runs.gateway.Gateway` (the
client on the gateway's Unix socket, as the builtin agent is), alternating one with the other so
that load from elsewhere hits both alike. The request is a realistic small agent turn (a system
prompt, a few messages, three tools; about 2 KB). Both clients keep their connections alive;
FakeLLM speaks HTTP/1.0, so each upstream call opens a new TCP connection either way.

Target (issue): the gateway adds at most 5 ms per call at the median.

Figures: `direct_ms_median`/`_p95`, `gateway_ms_median`/`_p95`, `added_ms_median` (gateway
median minus direct median), `added_ms_p95` (likewise for the p95s), `gateway_recorded_ms_median`
(the latency the gateway records itself, upstream included), `calls_each`, `upstream_requests`,
`target_added_ms`, `met`, `load_average_1m`. No Django: the gateway is pure.

    .venv/bin/python bench/bench_gateway.py
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
from _common import emit, log, median, percentile, r

from runs.gateway import Gateway
from runs.providers import ModelConfig
from tests.fake_llm import FakeLLM

CALLS = 1000
WARM_UP = 50
TARGET_ADDED_MS = 5.0
KEY = "sk-bench-not-a-real-key-0123456789"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["path"],
            },
        },
    }
    for name, description in [
        ("read_file", "Read a file of the workspace, with line numbers."),
        ("write_file", "Create or replace a file of the workspace."),
        ("list_files", "List a directory of the workspace."),
    ]
]
BODY = {
    "model": "bench-model",
    "messages": [
        {"role": "system", "content": "You are a careful software engineer. " * 12},
        {"role": "user", "content": "Fix the failing test in tests/test_app.py. " * 8},
        {"role": "assistant", "content": "Reading the test first."},
        {"role": "user", "content": "def test_app():\n    assert app.run() == 42\n" * 6},
    ],
    "tools": TOOLS,
    "temperature": 0.0,
}


def timed_call(client: httpx.Client, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    response = client.post(url, json=BODY, headers=headers)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}: {response.text[:300]}")
    return elapsed


def main() -> None:
    socket_dir = Path(tempfile.mkdtemp(prefix="gw-bench-", dir="/tmp"))
    try:
        with FakeLLM() as llm:
            upstream = ModelConfig(
                provider="openai",
                model="bench-model",
                base_url=llm.base_url_openai,
                api_key=KEY,
                input_per_mtok=1.0,
                output_per_mtok=2.0,
            )
            with (
                Gateway(upstream, socket_dir / "gateway.sock") as gateway,
                httpx.Client() as direct,
                httpx.Client(
                    transport=httpx.HTTPTransport(uds=str(gateway.socket_path))
                ) as through,
            ):
                direct_call = (
                    direct,
                    f"{llm.base_url_openai}/chat/completions",
                    {"authorization": f"Bearer {KEY}"},
                )
                gateway_call = (
                    through,
                    "http://gateway/v1/chat/completions",
                    {"authorization": f"Bearer {gateway.token}"},
                )
                log(f"warming up: {WARM_UP} calls each way")
                for _ in range(WARM_UP):
                    timed_call(*direct_call)
                    timed_call(*gateway_call)
                warm_records = len(gateway.calls)
                log(f"measuring: {CALLS} calls each way, alternating")
                direct_s, gateway_s = [], []
                for number in range(CALLS):
                    # Alternate which goes first, so neither always follows the other.
                    if number % 2:
                        gateway_s.append(timed_call(*gateway_call))
                        direct_s.append(timed_call(*direct_call))
                    else:
                        direct_s.append(timed_call(*direct_call))
                        gateway_s.append(timed_call(*gateway_call))
                recorded_s = [call.latency_s for call in gateway.calls[warm_records:]]
                upstream_requests = len(llm.requests)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)

    def ms(seconds: float) -> float | None:
        return r(seconds * 1000, 3)

    added_median = median(gateway_s) - median(direct_s)
    emit(
        {
            "calls_each": CALLS,
            "direct_ms_median": ms(median(direct_s)),
            "direct_ms_p95": ms(percentile(direct_s, 0.95)),
            "gateway_ms_median": ms(median(gateway_s)),
            "gateway_ms_p95": ms(percentile(gateway_s, 0.95)),
            "added_ms_median": ms(added_median),
            "added_ms_p95": ms(percentile(gateway_s, 0.95) - percentile(direct_s, 0.95)),
            "gateway_recorded_ms_median": ms(median(recorded_s)),
            "upstream_requests": upstream_requests,
            "target_added_ms": TARGET_ADDED_MS,
            "met": added_median * 1000 <= TARGET_ADDED_MS,
            "load_average_1m": r(os.getloadavg()[0], 2),
        }
    )


if __name__ == "__main__":
    main()
