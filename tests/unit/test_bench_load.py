"""bench/load.py: the pure parts (arrivals, percentiles, summary, SSE decoding) and run_load end to end
against a fake OpenAI streaming server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import socket
from typing import Any

import pytest
from aiohttp import web
from bench.load import (
    RequestResult,
    SSEDecoder,
    chunk_error,
    chunk_tokens,
    percentiles,
    poisson_arrivals,
    run_load,
    summarize,
)

# ---------------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------------


def test_poisson_arrivals() -> None:
    rate, n = 8.0, 20000
    times = poisson_arrivals(rate, n, seed=1)
    assert len(times) == n
    assert all(b >= a for a, b in itertools.pairwise(times))
    assert times[0] > 0
    mean_gap = times[-1] / n
    assert mean_gap == pytest.approx(1 / rate, rel=0.03)  # std error of the mean is 1/sqrt(n) = 0.7 %
    assert poisson_arrivals(rate, n, seed=1) == times
    assert poisson_arrivals(rate, 50, seed=2) != times[:50]
    assert poisson_arrivals(rate, 0, seed=1) == []
    assert poisson_arrivals(math.inf, 3, seed=1) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan])
def test_poisson_arrivals_rejects_bad_rates(rate: float) -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        poisson_arrivals(rate, 10, seed=0)


def test_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    got = percentiles(values)
    assert list(got) == ["p50", "p95", "p99"]
    assert got["p50"] == pytest.approx(50.5)
    assert got["p95"] == pytest.approx(95.05)
    assert got["p99"] == pytest.approx(99.01)
    assert percentiles([3.0, 1.0, 2.0], qs=(0, 100, 99.9)) == {
        "p0": 1.0,
        "p100": 3.0,
        "p99.9": pytest.approx(2.998),
    }
    empty = percentiles([])
    assert list(empty) == ["p50", "p95", "p99"] and all(math.isnan(v) for v in empty.values())


def test_summarize() -> None:
    results = [
        RequestResult(ok=True, ttft_s=0.1, e2e_s=1.1, output_tokens=11, error=None),  # tpot 0.1
        RequestResult(ok=True, ttft_s=0.3, e2e_s=0.9, output_tokens=4, error=None),  # tpot 0.2
        RequestResult(ok=True, ttft_s=0.2, e2e_s=0.2, output_tokens=1, error=None),  # no tpot
        RequestResult(ok=False, ttft_s=0.5, e2e_s=9.0, output_tokens=7, error="HTTP 500: boom"),
        RequestResult(ok=False, ttft_s=None, e2e_s=0.01, output_tokens=0, error="ClientConnectorError"),
    ]
    s = summarize(results, wall_s=2.0)
    assert s["requests"] == 5 and s["failed"] == 2
    assert s["output_tokens"] == 16  # failed requests' tokens do not count
    assert s["throughput_output_tok_s"] == pytest.approx(8.0)
    assert s["request_rate_achieved"] == pytest.approx(1.5)
    assert s["ttft_s"]["p50"] == pytest.approx(0.2) and s["ttft_s"]["mean"] == pytest.approx(0.2)
    assert s["tpot_s"]["mean"] == pytest.approx(0.15)
    assert s["tpot_s"]["p50"] == pytest.approx(0.15) and s["tpot_s"]["p99"] == pytest.approx(0.199)
    assert s["e2e_s"]["mean"] == pytest.approx(2.2 / 3) and s["e2e_s"]["p50"] == pytest.approx(0.9)
    assert s["first_error"] == "HTTP 500: boom"
    assert set(s["ttft_s"]) == {"p50", "p95", "p99", "mean"}


def test_summarize_with_nothing_to_measure() -> None:
    s = summarize([RequestResult(ok=False, ttft_s=None, e2e_s=0.0, output_tokens=0, error="x")], wall_s=0.0)
    assert s["requests"] == 1 and s["failed"] == 1 and s["output_tokens"] == 0
    assert math.isnan(s["throughput_output_tok_s"]) and math.isnan(s["request_rate_achieved"])
    assert all(math.isnan(v) for key in ("ttft_s", "tpot_s", "e2e_s") for v in s[key].values())


def test_sse_decoder_handles_any_split() -> None:
    stream = b': comment\r\ndata: {"a": 1}\r\n\r\nevent: x\ndata: {"b":\ndata: 2}\n\ndata:[DONE]\n\n'
    expected = ['{"a": 1}', '{"b":\n2}', "[DONE]"]
    for size in (1, 2, 7, len(stream)):
        decoder = SSEDecoder()
        events = [e for i in range(0, len(stream), size) for e in decoder.feed(stream[i : i + size])]
        assert events + decoder.flush() == expected, size
    unterminated = SSEDecoder()
    assert unterminated.feed(b"data: [DONE]") == [] and unterminated.flush() == ["[DONE]"]
    with pytest.raises(ValueError, match="longer than"):
        SSEDecoder(max_line_bytes=8).feed(b"data: 0123456789")


def test_chunk_parsing() -> None:
    assert chunk_tokens({"choices": [{"text": "hi"}]}) == 1
    assert chunk_tokens({"choices": [{"text": ""}]}) == 0
    assert chunk_tokens({"choices": [{"text": "", "token_ids": [5, 6]}]}) == 2
    assert chunk_tokens({"choices": [{"text": "", "logprobs": {"tokens": ["a"]}}]}) == 1
    assert chunk_tokens({"choices": [], "usage": {"completion_tokens": 3}}) == 0
    assert chunk_error({"choices": [{"text": "x"}]}) is None
    assert chunk_error({"error": {"message": "oom", "code": 500}}) == "error in stream: oom"
    assert chunk_error({"object": "error", "message": "bad"}) == "error in stream: bad"


# ---------------------------------------------------------------------------------------------------
# run_load against a fake server
# ---------------------------------------------------------------------------------------------------

FAIL_PROMPT = [666]  # the fake server answers HTTP 500
NO_USAGE_PROMPT = [777]  # the fake server sends no usage chunk (tokens counted from chunks)
STREAM_ERROR_PROMPT = [888]  # the fake server sends an error object mid-stream
HANG_PROMPT = [999]  # the fake server stalls after the first token
FIRST_TOKEN_DELAY_S = 0.03
TOKEN_DELAY_S = 0.005
SEEN = web.AppKey("seen", list[dict[str, Any]])  # request bodies the fake server received


async def _completions(request: web.Request) -> web.StreamResponse:
    body: dict[str, Any] = await request.json()
    request.app[SEEN].append(body)
    prompt, n = body["prompt"], body["max_tokens"]
    if prompt == FAIL_PROMPT:
        return web.json_response({"error": {"message": "boom"}}, status=500)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)

    async def send(obj: object) -> None:
        await response.write(f"data: {json.dumps(obj)}\n\n".encode())

    await asyncio.sleep(FIRST_TOKEN_DELAY_S)
    await send({"choices": [{"index": 0, "text": ""}]})  # no output yet: must not count as the first token
    for k in range(n):
        if k == 2 and prompt == STREAM_ERROR_PROMPT:
            await send({"error": {"message": "engine died", "code": 500}})
            break
        await send({"choices": [{"index": 0, "text": f" t{k}", "finish_reason": None}]})
        await asyncio.sleep(30.0 if prompt == HANG_PROMPT else TOKEN_DELAY_S)
    if prompt != NO_USAGE_PROMPT:
        await send({"choices": [], "usage": {"prompt_tokens": len(prompt), "completion_tokens": n}})
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _run_against_fake_server(
    prompts: list[list[int]], max_tokens: int, timeout_s: float = 5.0
) -> tuple[list[RequestResult], float, list[dict[str, Any]]]:
    app = web.Application()
    app[SEEN] = []
    app.router.add_post("/v1/completions", _completions)
    # handler_cancellation: a handler still streaming when its client gives up is cancelled, so
    # cleanup() does not wait for it.
    runner = web.AppRunner(app, shutdown_timeout=1.0, handler_cancellation=True)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        await web.SockSite(runner, sock).start()
        results, wall_s = await run_load(
            f"http://127.0.0.1:{port}/",
            "fake-model",
            prompts,
            max_tokens,
            rate_per_s=100.0,
            seed=3,
            timeout_s=timeout_s,
        )
    finally:
        await runner.cleanup()
        sock.close()
    return results, wall_s, app[SEEN]


def test_run_load_end_to_end() -> None:
    prompts = [[1, 2, 3], FAIL_PROMPT, [4, 5], NO_USAGE_PROMPT, [6], STREAM_ERROR_PROMPT, [7, 8, 9, 10]]
    max_tokens = 6
    results, wall_s, seen = asyncio.run(_run_against_fake_server(prompts, max_tokens))

    assert len(results) == len(prompts) == len(seen)
    assert sorted(map(tuple, (b["prompt"] for b in seen))) == sorted(map(tuple, prompts))
    for body in seen:
        assert body["model"] == "fake-model" and body["max_tokens"] == max_tokens
        assert body["temperature"] == 0.0 and body["ignore_eos"] is True and body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}

    failed = {i for i, r in enumerate(results) if not r.ok}
    assert failed == {1, 5}  # results are in prompt order
    error = results[1].error
    assert error is not None and error.startswith("HTTP 500") and "boom" in error
    assert results[5].error == "error in stream: engine died" and results[5].output_tokens == 2

    for i in (0, 2, 3, 4, 6):
        r = results[i]
        assert r.ok and r.error is None, r
        assert r.output_tokens == max_tokens, r  # from usage, and from counting chunks for NO_USAGE_PROMPT
        assert r.ttft_s is not None and FIRST_TOKEN_DELAY_S * 0.5 <= r.ttft_s <= r.e2e_s, r
        assert r.e2e_s - r.ttft_s >= (max_tokens - 1) * TOKEN_DELAY_S * 0.5, r
        assert r.e2e_s <= wall_s

    summary = summarize(results, wall_s)
    assert summary["requests"] == 7 and summary["failed"] == 2
    assert summary["output_tokens"] == 5 * max_tokens
    assert 0 < summary["tpot_s"]["p50"] < summary["e2e_s"]["p50"]


def test_run_load_connection_refused_is_a_result() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        results, wall_s = asyncio.run(
            run_load(f"http://127.0.0.1:{port}", "m", [[1], [2]], 4, rate_per_s=math.inf, timeout_s=5.0)
        )
    assert [r.ok for r in results] == [False, False]
    assert all(r.error and "Connect" in r.error and r.ttft_s is None for r in results)
    assert wall_s >= 0
    assert asyncio.run(run_load("http://127.0.0.1:1", "m", [], 4, rate_per_s=1.0)) == ([], 0.0)


def test_run_load_timeout_is_a_result() -> None:
    results, wall_s, _ = asyncio.run(_run_against_fake_server([[1], HANG_PROMPT], 3, timeout_s=0.3))
    assert results[0].ok and results[0].output_tokens == 3
    hung = results[1]
    assert not hung.ok and hung.error == "timeout after 0.3 s"
    assert hung.ttft_s is not None and hung.output_tokens == 1  # what it got before stalling
    assert 0.25 <= hung.e2e_s < 2.0 and wall_s < 2.0
