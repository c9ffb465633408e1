"""A fake engine pod for control-loop tests: /metrics in vLLM 0.26's real text format (a body
recorded from a real server, tests/operator/data/vllm-0.26.0-metrics.txt, with the values the test
sets) and the runtime's admin API (PUT /arctic/v1/speculation with the bearer token, FastAPI's 422
shape). It runs on loopback on its own thread and event loop, so sync tests (and kopf in its own
thread) can use it; the admin API has its own port, as in the runtime. ``kill()`` closes the
ports (connection refused), ``start()`` opens them again on the same ports with the engine's
startup caps (a restarted pod).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

BODY = (Path(__file__).parent / "data" / "vllm-0.26.0-metrics.txt").read_text(encoding="utf-8")


def _set_series(body: str, name: str, value: float | None) -> str:
    """Replace the value of every sample of ``name`` (None: +Inf)."""
    text = "+Inf" if value is None else repr(float(value))
    pattern = re.compile(rf"^({re.escape(name)}(?:\{{[^}}]*\}})?) \S+$", re.MULTILINE)
    new, count = pattern.subn(lambda m: f"{m[1]} {text}", body)
    assert count, f"{name} is not in the recorded metrics body"
    return new


@dataclass
class Load:
    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.1
    accepted_per_draft: float = 1.5
    """Drafted tokens accepted per draft (3 tokens drafted per draft)."""
    drafts_per_scrape: float = 40.0
    """How much the draft counters grow between two scrapes (0: nothing drafted); a real engine
    drafts in most steps, tens of steps a second, so a window holds more than the cap policy's
    ``min_drafts`` (8)."""


@dataclass
class FakeEngine:
    token: str = "secret"
    startup_soft_cap: int | None = None
    startup_hard_cap: int | None = None
    load: Load = field(default_factory=Load)
    garbage: bool = False
    """Serve a body that is not Prometheus text."""
    port: int = 0
    """The serving port (/metrics)."""
    admin_port: int = 0
    """The admin API's own port (PUT /arctic/v1/speculation), as the runtime serves it."""
    soft_cap: int | None = None
    hard_cap: int | None = None
    puts: list[tuple[int | None, int | None]] = field(default_factory=list)
    """Every cap accepted through the admin API, in order."""
    rejected: list[int] = field(default_factory=list)
    """Status codes of rejected admin requests."""
    scrapes: int = 0

    def __post_init__(self) -> None:
        self._drafts = self._draft_tokens = self._accepted = 0.0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self.soft_cap, self.hard_cap = self.startup_soft_cap, self.startup_hard_cap

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeEngine:
        """Serve on 127.0.0.1 (the same port again after kill(): a restarted pod)."""
        with self._lock:
            self.soft_cap, self.hard_cap = self.startup_soft_cap, self.startup_hard_cap
        if self._loop is None:
            ready = threading.Event()

            def run() -> None:
                self._loop = asyncio.new_event_loop()
                ready.set()
                self._loop.run_forever()

            self._thread = threading.Thread(target=run, name="fake-engine", daemon=True)
            self._thread.start()
            ready.wait(10)
        self._call(self._serve())
        return self

    def kill(self) -> None:
        """Close the ports: scrapes and admin calls get connection refused."""
        for runner in self._runners:
            self._call(runner.cleanup())
        self._runners = []

    def stop(self) -> None:
        self.kill()
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> FakeEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    @property
    def url(self) -> str:
        """The serving port's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """The admin port's base URL."""
        return f"http://127.0.0.1:{self.admin_port}"

    async def _serve(self) -> None:
        serving = web.Application()
        serving.router.add_get("/metrics", self._metrics)
        admin = web.Application()
        admin.router.add_put("/arctic/v1/speculation", self._put)
        self.port = await self._open(serving, self.port)
        self.admin_port = await self._open(admin, self.admin_port)

    async def _open(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        bound: int = server.sockets[0].getsockname()[1]
        return bound

    # ---- handlers -------------------------------------------------------------------------

    def metrics_text(self) -> str:
        with self._lock:
            load = self.load
            self.scrapes += 1
            self._drafts += load.drafts_per_scrape
            self._draft_tokens += 3 * load.drafts_per_scrape
            self._accepted += load.accepted_per_draft * load.drafts_per_scrape
            body = BODY
            for name, value in (
                ("vllm:num_requests_running", load.running),
                ("vllm:num_requests_waiting", load.waiting),
                ("vllm:kv_cache_usage_perc", load.kv_cache_usage),
                ("vllm:spec_decode_num_drafts_total", self._drafts),
                ("vllm:spec_decode_num_draft_tokens_total", self._draft_tokens),
                ("vllm:spec_decode_num_accepted_tokens_total", self._accepted),
                ("arctic_speculation_soft_cap", self.soft_cap),
                ("arctic_speculation_hard_cap", self.hard_cap),
            ):
                body = _set_series(body, name, value)
        return body

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.garbage:
            return web.Response(text="<html>not metrics</html>\n{{{", content_type="text/plain")
        return web.Response(text=self.metrics_text(), content_type="text/plain", charset="utf-8")

    async def _put(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.rejected.append(401)
            return web.json_response({"detail": "wrong admin token"}, status=401)
        try:
            data = json.loads(await request.read())
        except ValueError:
            data = None
        errors = []
        if not isinstance(data, dict):
            errors.append({"loc": ["body"], "msg": "must be a JSON object", "type": "value_error"})
            data = {}
        for key in ("soft_cap", "hard_cap"):
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                errors.append({"loc": ["body", key], "msg": "must be an integer >= 0", "type": "value_error"})
        soft, hard = data.get("soft_cap"), data.get("hard_cap")
        if not errors and soft is not None and hard is not None and hard < soft:
            errors.append({"loc": ["body", "hard_cap"], "msg": "must be >= soft_cap", "type": "value_error"})
        if errors:
            self.rejected.append(422)
            return web.json_response({"detail": errors}, status=422)
        with self._lock:
            self.soft_cap, self.hard_cap = soft, hard
            self.puts.append((soft, hard))
        return web.json_response(
            {
                "soft_cap": soft,
                "hard_cap": hard,
                "method": "suffix",
                "num_speculative_tokens": 3,
                "counters": {},
                "engine_core": None,
                "workers": [],
            }
        )
