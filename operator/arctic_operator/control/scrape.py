"""Scraping the engines' /metrics: every pod at once (bounded), each with its own timeout.

``scrape(session, targets, now)`` GETs every ``pod -> URL`` and returns ``pod -> PodSample`` for the
pods that answered with Prometheus text, and ``pod -> "why not"`` (a short, readable string) for the
others: timeout, connection refused, an HTTP status, a body that is not Prometheus text. One bad pod
never fails the others and nothing here raises for a pod; the controller decides what an error
means (the policies hold).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import aiohttp

from arctic_operator.control.metrics import MetricsParseError, PodSample, parse_metrics

#: A /metrics body larger than this is not an engine's (vLLM's is ~100 KB with histograms).
MAX_BODY_BYTES = 8 * 1024 * 1024

Parser = Callable[[str, float], PodSample]


def _describe(exc: BaseException, url: str, timeout_s: float) -> str:
    """A one-line reason for a failed request, without the stack."""
    if isinstance(exc, TimeoutError):
        return f"timeout: no answer from {url} within {timeout_s:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error.strerror or str(exc.os_error)
        return f"cannot connect to {url}: {cause}"
    if isinstance(exc, aiohttp.ClientError):
        return f"request to {url} failed: {type(exc).__name__}: {exc}"
    return f"scrape of {url} failed: {type(exc).__name__}: {exc}"


async def scrape_one(
    session: aiohttp.ClientSession,
    url: str,
    now: float,
    *,
    timeout_s: float = 2.0,
    parse: Parser = parse_metrics,
) -> PodSample | str:
    """One pod's metrics as a PodSample, or why they could not be read."""
    try:
        async with session.get(
            url,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            headers={"Accept": "text/plain"},
            allow_redirects=False,
        ) as response:
            if response.status != 200:
                reason = response.reason or ""
                return f"HTTP {response.status} {reason} from {url}".replace("  ", " ")
            body = await response.content.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                return f"the body of {url} is larger than {MAX_BODY_BYTES} bytes"
    except Exception as exc:  # one pod's failure is reported, never raised
        return _describe(exc, url, timeout_s)
    try:
        return parse(body.decode("utf-8", errors="replace"), now)
    except MetricsParseError as exc:
        return f"parse error in {url}: {exc}"
    except Exception as exc:  # a parser bug must not stop the other pods either
        return f"parse error in {url}: {type(exc).__name__}: {exc}"


async def scrape(
    session: aiohttp.ClientSession,
    targets: Mapping[str, str],
    now: float,
    *,
    timeout_s: float = 2.0,
    concurrency: int = 8,
    parse: Parser = parse_metrics,
) -> dict[str, PodSample | str]:
    """Scrape ``pod -> metrics URL`` with at most ``concurrency`` requests in flight. Every sample
    is stamped ``now`` (the controller's clock, so windows do not depend on request latency)."""
    if concurrency < 1:
        raise ValueError(f"concurrency: must be at least 1, got {concurrency}")
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str) -> PodSample | str:
        async with gate:
            return await scrape_one(session, url, now, timeout_s=timeout_s, parse=parse)

    pods = list(targets)
    results = await asyncio.gather(*(one(targets[p]) for p in pods))
    return dict(zip(pods, results, strict=True))
