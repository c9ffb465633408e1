"""A bounded load generator for engine tests: keeps N completion requests in flight against a real
server, checks every answer, and collects the failures instead of raising.

``Load`` runs ``max_concurrency`` workers; worker i sends requests back to back while
i < ``concurrency`` and idles otherwise, so the load can be raised and lowered while requests run
(``set_concurrency``). A request counts as good only if it answers HTTP 200 with a non-empty
completion of exactly ``max_tokens`` tokens (``ignore_eos``: every request costs the same); anything
else (status, body, timeout, connection error) is recorded in ``failures`` with the reason. Leaving
the ``async with`` block lets the requests in flight finish (none is cut off) and stops the workers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Failure:
    """One request that did not get a good answer."""

    at: float
    """When it was sent (time.monotonic())."""
    concurrency: int
    """The load's concurrency when it was sent."""
    reason: str


@dataclass
class LoadStats:
    sent: int = 0
    ok: int = 0
    failures: list[Failure] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)


class Load:
    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        prompts: Sequence[str],
        max_tokens: int,
        max_concurrency: int,
        timeout_s: float = 120.0,
    ) -> None:
        if not prompts:
            raise ValueError("prompts: at least one is needed")
        self.url = base_url.rstrip("/") + "/v1/completions"
        self.model = model
        self.prompts = list(prompts)
        self.max_tokens = max_tokens
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.stats = LoadStats()
        self._concurrency = 0
        self._closing = False
        self._wake = asyncio.Condition()
        self._next_prompt = 0
        self._session: aiohttp.ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []

    async def set_concurrency(self, n: int) -> None:
        """Keep ``n`` requests in flight from now on (lowering it lets running requests finish)."""
        if not 0 <= n <= self.max_concurrency:
            raise ValueError(f"concurrency: must be within 0..{self.max_concurrency}, got {n}")
        async with self._wake:
            self._concurrency = n
            self._wake.notify_all()

    async def __aenter__(self) -> Load:
        # One connection per worker, so the pool never queues a request on our side.
        connector = aiohttp.TCPConnector(limit=self.max_concurrency + 1)
        self._session = aiohttp.ClientSession(connector=connector)
        self._workers = [asyncio.create_task(self._worker(i)) for i in range(self.max_concurrency)]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        async with self._wake:
            self._closing = True
            self._wake.notify_all()
        try:
            await asyncio.gather(*self._workers)
        finally:
            for task in self._workers:
                task.cancel()
            if self._session is not None:
                await self._session.close()

    async def _worker(self, index: int) -> None:
        while True:
            async with self._wake:
                await self._wake.wait_for(lambda: self._closing or index < self._concurrency)
                if self._closing:
                    return
                prompt = self.prompts[self._next_prompt % len(self.prompts)]
                self._next_prompt += 1
                concurrency = self._concurrency
            await self._one(prompt, concurrency)

    async def _one(self, prompt: str, concurrency: int) -> None:
        assert self._session is not None
        sent = time.monotonic()
        self.stats.sent += 1
        reason = await self._request(self._session, prompt)
        if reason is None:
            self.stats.ok += 1
            self.stats.latencies_s.append(time.monotonic() - sent)
        else:
            self.stats.failures.append(Failure(sent, concurrency, reason))

    async def _request(self, session: aiohttp.ClientSession, prompt: str) -> str | None:
        """None for a good answer, else why it is not."""
        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "ignore_eos": True,
        }
        try:
            async with session.post(
                self.url, json=body, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as response:
                text = await response.text()
            if response.status != 200:
                return f"HTTP {response.status}: {text[:300]}"
            answer: Any = json.loads(text)
        except TimeoutError:
            return f"timeout: no answer within {self.timeout_s:g}s"
        except (aiohttp.ClientError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        try:
            choice = answer["choices"][0]
            completion_tokens = answer["usage"]["completion_tokens"]
        except (KeyError, IndexError, TypeError):
            return f"unexpected answer: {str(answer)[:300]}"
        if not choice.get("text"):
            return f"empty completion: {str(answer)[:300]}"
        if completion_tokens != self.max_tokens or choice.get("finish_reason") != "length":
            return (
                f"cut short: {completion_tokens} of {self.max_tokens} tokens, "
                f"finish_reason={choice.get('finish_reason')!r}"
            )
        return None
