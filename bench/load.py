"""Online load generator for an OpenAI-compatible vLLM server.

Method
------
Arrivals are *open loop*. Before the run starts, every request gets a send time: an offset from
the start of the run, drawn from a Poisson process of rate ``rate_per_s`` (exponential gaps between
arrivals with mean ``1 / rate_per_s``, from a seeded numpy Generator, so the same seed gives the same
schedule). Each request is sent at its time whether or not earlier requests have finished. A server
that falls behind therefore sees a growing queue, as it would with real users. A closed-loop client
(send the next request when one finishes) would instead slow down to the server's pace, and the
overload would not show. ``rate_per_s=math.inf`` sends all the requests at once.

The only limit on sending is ``max_concurrency``, the number of requests in flight. Keep it above the
concurrency the server can reach. If the limit is hit, the run is no longer open loop, and the time a
request waits for a free slot is not counted in its latency: timing starts when the request is sent.

Each request is ``POST /v1/completions`` with:

* the prompt as token ids, so prompt lengths are exact and no tokenizer runs in the client;
* greedy sampling (``temperature: 0``) and ``ignore_eos``, so every request generates exactly
  ``max_tokens`` tokens;
* ``stream: true`` and ``stream_options.include_usage``, so the server-sent event stream ends with a
  usage chunk.

Per request, the client measures these times from the moment the request is sent:

* TTFT (time to first token): until the first stream chunk that carries output, that is a non-empty
  ``choices[0].text`` or any token in ``choices[0].token_ids`` / ``choices[0].logprobs.tokens``. It
  includes the network round trip and the request's queueing and prefill on the server.
* e2e (end-to-end latency): until ``data: [DONE]``.
* TPOT (time per output token, after the first): ``(e2e - TTFT) / (output_tokens - 1)``. This is the
  mean gap between tokens during decode, as the user sees it. Requests with only one output token have
  no TPOT.

The number of output tokens is ``usage.completion_tokens`` from the last chunk that has it. If the
server sends no usage, it is the number of chunks that carried output (``len(token_ids)`` for a chunk
that lists token ids).

A request fails in any of these cases: an HTTP status other than 200, a connection error, a timeout
(``timeout_s`` for the whole request, from connecting to ``[DONE]``), an error object in the stream,
or a stream that ends without ``[DONE]``. A failure gives ``RequestResult(ok=False, error=...)`` and
never raises. ``summarize`` counts failed requests in ``requests`` and ``failed`` and leaves them out
of every latency and throughput figure. Throughput is successful output tokens divided by the wall
time, which runs from the first send to the last completion.

Usage::

    from bench.load import run_load_sync, summarize

    prompts = [[1, 2, 3, 4]] * 100  # token ids
    results, wall_s = run_load_sync(
        "http://127.0.0.1:8000", "smollm2", prompts, max_tokens=128, rate_per_s=4.0
    )
    print(summarize(results, wall_s))
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

DEFAULT_QUANTILES: tuple[float, ...] = (50, 95, 99)
# One SSE line longer than this is a broken stream, not a big chunk (vLLM's chunks are ~300 bytes).
MAX_SSE_LINE_BYTES = 16 * 1024 * 1024
# How much of an error response body is kept in RequestResult.error.
ERROR_BODY_CHARS = 500


@dataclass(frozen=True)
class RequestResult:
    """The result of one request. For a failed request, ttft_s, e2e_s and output_tokens describe what
    happened before the failure."""

    ok: bool
    ttft_s: float | None
    e2e_s: float
    output_tokens: int
    error: str | None
    chunks: tuple[tuple[float, int], ...] = ()
    """With ``run_load(record_chunks=True)``: per stream chunk that carried output, (seconds from
    the run's start, tokens in it), in arrival order; else empty."""


# ---------------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------------


def poisson_arrivals(rate_per_s: float, n: int, seed: int) -> list[float]:
    """Send times of ``n`` requests, in seconds from the start of the run. They form a Poisson process
    of rate ``rate_per_s``, so the gaps between them are exponential with mean ``1 / rate_per_s``.
    The first gap is before the first request. ``rate_per_s=math.inf`` gives all zeros."""
    if not rate_per_s > 0:  # also rejects NaN
        raise ValueError(f"rate_per_s must be > 0 (math.inf sends everything at once), got {rate_per_s!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if math.isinf(rate_per_s):
        return [0.0] * n
    gaps = np.random.default_rng(seed).exponential(scale=1.0 / rate_per_s, size=n)
    return [float(t) for t in np.cumsum(gaps)]


def percentiles(values: Sequence[float], qs: Sequence[float] = DEFAULT_QUANTILES) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` (keys ``f"p{q:g}"``), computed by numpy with linear
    interpolation. Every value is NaN if ``values`` is empty."""
    keys = [f"p{q:g}" for q in qs]
    if len(values) == 0:
        return dict.fromkeys(keys, math.nan)
    got = np.percentile(np.asarray(values, dtype=np.float64), list(qs), method="linear")
    return {key: float(v) for key, v in zip(keys, got, strict=True)}


def _stats(values: Sequence[float]) -> dict[str, float]:
    mean = float(np.mean(values)) if len(values) else math.nan
    return {**percentiles(values), "mean": mean}


def _per_s(count: float, wall_s: float) -> float:
    return count / wall_s if wall_s > 0 else math.nan


def summarize(results: Sequence[RequestResult], wall_s: float) -> dict[str, Any]:
    """Aggregate figures for a run, as a JSON-ready dict. Only successful requests count toward the
    latencies and rates. Times are in seconds. Figures with no data (or ``wall_s <= 0``) are NaN."""
    ok = [r for r in results if r.ok]
    output_tokens = sum(r.output_tokens for r in ok)
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpots = [
        (r.e2e_s - r.ttft_s) / (r.output_tokens - 1)
        for r in ok
        if r.ttft_s is not None and r.output_tokens > 1
    ]
    return {
        "requests": len(results),
        "failed": len(results) - len(ok),
        "output_tokens": output_tokens,
        "wall_s": wall_s,
        "throughput_output_tok_s": _per_s(output_tokens, wall_s),
        "request_rate_achieved": _per_s(len(ok), wall_s),
        "ttft_s": _stats(ttfts),
        "tpot_s": _stats(tpots),
        "e2e_s": _stats([r.e2e_s for r in ok]),
        "first_error": next((r.error for r in results if not r.ok), None),
    }


class SSEDecoder:
    """Incremental server-sent-events decoder. ``feed`` takes raw bytes as they arrive, split
    anywhere, and returns the ``data`` of every event those bytes complete. Several ``data:`` lines in
    one event are joined with newlines. Comments and other fields (``event:``, ``id:``) are ignored."""

    def __init__(self, max_line_bytes: int = MAX_SSE_LINE_BYTES) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._max_line_bytes = max_line_bytes

    def feed(self, chunk: bytes) -> list[str]:
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        if len(self._buffer) > self._max_line_bytes:
            raise ValueError(f"SSE line longer than {self._max_line_bytes} bytes")
        events = [self._line(line) for line in lines]
        return [e for e in events if e is not None]

    def flush(self) -> list[str]:
        """At the end of the stream: the event left open, if any (a last line with no newline, or no
        blank line after the last event)."""
        events = [self._line(self._buffer), self._line(b"")] if self._buffer else [self._line(b"")]
        self._buffer = b""
        return [e for e in events if e is not None]

    def _line(self, raw: bytes) -> str | None:
        line = raw.removesuffix(b"\r").decode("utf-8")
        if not line:  # a blank line ends the event
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        if line.startswith("data:"):
            value = line[len("data:") :]
            self._data.append(value.removeprefix(" "))
        return None


def chunk_tokens(chunk: dict[str, Any]) -> int:
    """How many output tokens a streamed completion chunk visibly carries: ``len(token_ids)`` (or of
    ``logprobs.tokens``) when the server lists them, else 1 for a non-empty ``text``, else 0."""
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return 0
    choice: dict[str, Any] = choices[0]
    token_ids = choice.get("token_ids")
    if isinstance(token_ids, list) and token_ids:
        return len(token_ids)
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict):
        tokens = logprobs.get("tokens")
        if isinstance(tokens, list) and tokens:
            return len(tokens)
    text = choice.get("text")
    return 1 if isinstance(text, str) and text else 0


def chunk_error(chunk: dict[str, Any]) -> str | None:
    """The error message in a stream chunk (vLLM sends ``{"error": {...}}`` when generation fails after
    the HTTP 200 went out), or None."""
    error = chunk.get("error")
    if error is None and chunk.get("object") == "error":
        error = chunk
    if error is None:
        return None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return f"error in stream: {error['message']}"
    return f"error in stream: {json.dumps(error)[:ERROR_BODY_CHARS]}"


@dataclass
class _Progress:
    """What one request's stream has shown so far."""

    sent: float
    ttft_s: float | None = None
    chunk_tokens: int = 0
    usage_tokens: int | None = None
    chunks: list[tuple[float, int]] | None = None
    """(seconds from the send, tokens) per chunk with output, when recording."""

    @property
    def output_tokens(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else self.chunk_tokens

    def result(self, now: float, error: str | None) -> RequestResult:
        chunks = tuple(self.chunks) if self.chunks is not None else ()
        return RequestResult(error is None, self.ttft_s, now - self.sent, self.output_tokens, error, chunks)


# ---------------------------------------------------------------------------------------------------
# I/O
# ---------------------------------------------------------------------------------------------------


async def _read_stream(response: aiohttp.ClientResponse, progress: _Progress) -> RequestResult:
    decoder = SSEDecoder()
    async for raw in response.content.iter_any():
        now = time.perf_counter()
        for data in decoder.feed(raw):
            if data.strip() == "[DONE]":
                return progress.result(now, None)
            chunk = json.loads(data)
            if not isinstance(chunk, dict):
                return progress.result(now, f"stream chunk is not a JSON object: {data[:ERROR_BODY_CHARS]}")
            error = chunk_error(chunk)
            if error is not None:
                return progress.result(now, error)
            tokens = chunk_tokens(chunk)
            if tokens and progress.ttft_s is None:
                progress.ttft_s = now - progress.sent
            progress.chunk_tokens += tokens
            if tokens and progress.chunks is not None:
                progress.chunks.append((now - progress.sent, tokens))
            usage = chunk.get("usage")
            if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
                progress.usage_tokens = usage["completion_tokens"]
    now = time.perf_counter()
    if any(data.strip() == "[DONE]" for data in decoder.flush()):
        return progress.result(now, None)
    return progress.result(now, "stream ended before data: [DONE]")


async def _one_request(
    session: aiohttp.ClientSession,
    url: str,
    payload: dict[str, Any],
    timeout_s: float,
    record_chunks: bool = False,
) -> tuple[RequestResult, float, float]:
    """Send one streaming request. Returns (result, send time, end time). Never raises (except on
    cancellation)."""
    progress = _Progress(sent=time.perf_counter(), chunks=[] if record_chunks else None)
    try:
        async with asyncio.timeout(timeout_s), session.post(url, json=payload) as response:
            if response.status != 200:
                body = (await response.text(errors="replace"))[:ERROR_BODY_CHARS]
                result = progress.result(time.perf_counter(), f"HTTP {response.status}: {body}")
            else:
                result = await _read_stream(response, progress)
    except TimeoutError:
        result = progress.result(time.perf_counter(), f"timeout after {timeout_s:g} s")
    except Exception as exc:  # connection errors, bad JSON, ...: a failed request, never a crash
        result = progress.result(time.perf_counter(), f"{type(exc).__name__}: {exc}")
    return result, progress.sent, time.perf_counter()


async def run_load(
    base_url: str | Sequence[str],
    model: str,
    prompts: Sequence[list[int]],
    max_tokens: int | Sequence[int],
    rate_per_s: float,
    seed: int = 0,
    timeout_s: float = 300.0,
    max_concurrency: int = 512,
    offsets: Sequence[float] | None = None,
    record_chunks: bool = False,
) -> tuple[list[RequestResult], float]:
    """Send ``prompts`` (token ids) to ``{base_url}/v1/completions`` at Poisson arrival times of rate
    ``rate_per_s`` (see the module docstring). ``base_url`` is the server root, e.g.
    ``http://127.0.0.1:8000``, or several roots that take requests in turn (round robin by request
    index: data-parallel replicas behind a plain load balancer). ``max_tokens`` is one value or one
    per prompt; ``offsets`` (seconds from the start, one per prompt) replace the Poisson schedule, to
    replay a trace; ``record_chunks`` keeps each chunk's arrival time and tokens in
    ``RequestResult.chunks``. Returns the results in prompt order and the wall time in seconds from
    the first send to the last completion. Failed requests are results, not exceptions."""
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    if offsets is None:
        offsets = poisson_arrivals(rate_per_s, len(prompts), seed)
    elif len(offsets) != len(prompts) or any(b < a for a, b in itertools.pairwise(offsets)):
        raise ValueError("offsets must give one non-decreasing send time per prompt")
    lengths = [max_tokens] * len(prompts) if isinstance(max_tokens, int) else list(max_tokens)
    if len(lengths) != len(prompts):
        raise ValueError(f"max_tokens: {len(lengths)} values for {len(prompts)} prompts")
    if not prompts:
        return [], 0.0
    bases = [base_url] if isinstance(base_url, str) else list(base_url)
    urls = [b.rstrip("/") + "/v1/completions" for b in bases]
    semaphore = asyncio.Semaphore(max_concurrency)
    outcomes: list[tuple[RequestResult, float, float] | None] = [None] * len(prompts)

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        payload = {
            "model": model,
            "prompt": list(prompts[i]),
            "max_tokens": lengths[i],
            "temperature": 0.0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
            # token ids in every chunk: exact TTFT and token counts, also without a tokenizer
            "return_token_ids": True,
        }
        async with semaphore:
            outcomes[i] = await _one_request(session, urls[i % len(urls)], payload, timeout_s, record_chunks)

    # The connector's own pool limit (100 by default) would cap concurrency silently; timeouts are
    # per request (asyncio.timeout in _one_request), not aiohttp's 5-minute session default.
    connector = aiohttp.TCPConnector(limit=max_concurrency)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session,
        asyncio.TaskGroup() as group,
    ):
        start = time.perf_counter()
        for i, offset in enumerate(offsets):
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            group.create_task(one(i, session))

    done = [o for o in outcomes if o is not None]
    assert len(done) == len(prompts), "a request task ended without a result"
    wall_s = max(end for _, _, end in done) - min(sent for _, sent, _ in done)
    if record_chunks:  # from each request's send to the run's start
        return [
            dataclasses.replace(result, chunks=tuple((sent - start + t, n) for t, n in result.chunks))
            for result, sent, _ in done
        ], wall_s
    return [result for result, _, _ in done], wall_s


def run_load_sync(
    base_url: str | Sequence[str],
    model: str,
    prompts: Sequence[list[int]],
    max_tokens: int | Sequence[int],
    rate_per_s: float,
    seed: int = 0,
    timeout_s: float = 300.0,
    max_concurrency: int = 512,
    offsets: Sequence[float] | None = None,
) -> tuple[list[RequestResult], float]:
    """``run_load`` in a fresh event loop (``asyncio.run``), for callers that are not async."""
    return asyncio.run(
        run_load(
            base_url,
            model,
            prompts,
            max_tokens,
            rate_per_s,
            seed=seed,
            timeout_s=timeout_s,
            max_concurrency=max_concurrency,
            offsets=offsets,
        )
    )
