"""The operator's speculation-cap controller closing the loop on a real engine (issue 6).

A real server (``arctic-serve serve``: our runtime on vLLM's CPU build, the real SmolLM2 model,
n-gram speculation with 3 draft tokens, at most ``MAX_NUM_SEQS`` running requests) listens on
loopback. The operator's ``ServiceController`` -- its scraper, metrics window, cap policy and admin
client, unchanged -- looks at it as one ready pod and ticks every second, while a bounded load
generator keeps 1, then 16, then 1 request(s) in flight:

* low load: the controller measures acceptance and sets soft = the break-even size, hard = soft + 1
  (below ``MAX_NUM_SEQS``), and the engine drafts;
* high load (a queue of ~12 behind 4 running): nobody drafts, by the engine's per-step hard cap:
  the engine's own counters (``vllm:spec_decode_num_drafts_total``, the runtime's drafting-steps
  counters) stop growing while steps keep running;
* low load again: the engine drafts again;
* no request fails or is cut short while the cap changes under it.

Everything asserted is read from the engine: /metrics and the admin API's GET. The controller's
decisions are only logged (they are in the assertion messages).

Settings, chosen for a 2-core machine and a test of ~1.5 minutes including the engine start:

* Cost model: the policy's default curves are the H100's (Llama-3.1-8B). Here a cost model
  (``CPU_COST``: 1.0 with one running request, 4.5 with two, 8.0 with four) under which drafting
  pays for one request only, at any acceptance these prompts get (up to ~3.9 tokens per draft), so
  the controller sets soft 1, hard 2 once acceptance is measured, and from then on the engine's own
  per-step hard cap turns drafting off whenever two or more run (under the queue: this CPU engine
  may run fewer than 4 while 12 wait) and on again when one does: the cap does not need to move
  with the load.
* No TTFT budget: the budget prices drafting against a new request's time to first token from the
  cost file's decode step times and prefill rate, which are a GPU's, not this CPU engine's (with
  them it would lower the hard cap under the queue too, so the engine's own per-step cap would not
  be what is tested here). The budget's decisions are tested on worked examples in
  tests/operator/test_control_cap_ttft.py.
* Time: a 4 s metrics window, a 3 s dwell and a tick per second, instead of the operator's 30 s
  (the policy's logic is the same; only its time constants are short).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from arctic_operator.control.cap import CapPolicy, VerifyCostModel
from arctic_operator.control.controller import ControllerConfig, PodTarget, ServiceController
from arctic_operator.control.cost import VerifyCosts
from arctic_operator.control.metrics import parse_metrics
from arctic_operator.control.refine import refine_costs
from tests.engine.loadgen import Load, LoadStats
from tests.engine.prompts import PROMPTS
from tests.engine.server import Server, metric_sum, serve

pytestmark = pytest.mark.engine

T = TypeVar("T")

MODEL = "smollm2-135m-instruct"
MAX_NUM_SEQS = 4
"""Most requests the engine runs at once; more wait in its queue (vllm:num_requests_waiting)."""
LOW, HIGH = 1, 16
"""Requests kept in flight by the load generator in the low and high phases."""
MAX_TOKENS = 48
REPETITIVE = [PROMPTS[i] for i in (1, 2, 3, 4)]
"""Prompts whose continuations n-gram speculation drafts well (counting, repeated text, code)."""

CPU_COST = VerifyCostModel(batch_sizes=(1, 4), cost_ratios=(1.0, 8.0))
POLICY = CapPolicy(min_cap=1, max_cap=MAX_NUM_SEQS, dwell_s=3.0, cost_model=CPU_COST, ttft_budget=None)
CONFIG = ControllerConfig(window_s=4.0, max_age_s=3.0)
TICK_S = 1.0


def paying_caps(cap: tuple[int | None, int | None]) -> bool:
    """Caps from measured acceptance: a lone request drafts, a full batch (4 running) does not."""
    soft, hard = cap
    return soft is not None and hard is not None and 1 <= soft < hard <= MAX_NUM_SEQS - 1


SPAN_S = 3.0
"""Seconds over which drafting is judged on or off (three of the runtime's metric refreshes)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Iterator[Server]:
    with serve(
        tmp_path_factory.mktemp("cap-control"),
        "--speculation",
        "ngram",
        "--num-speculative-tokens",
        "3",
        "--",
        "--max-num-seqs",
        str(MAX_NUM_SEQS),
    ) as srv:
        yield srv


# --------------------------------------------------------------------------------------------
# The test's own view of the engine (not the operator's parser)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineMetrics:
    """One reading of the engine's /metrics."""

    at: float
    """arctic_state_timestamp_seconds: when the runtime last refreshed its arctic_* snapshot."""
    running: float
    waiting: float
    drafts: float
    """vllm:spec_decode_num_drafts_total: drafts vLLM verified."""
    drafting_on: float
    """Scheduler steps in which some request drafted."""
    drafting_off: float
    """Scheduler steps in which nobody drafted."""
    cap_changes: float
    soft_cap: float
    hard_cap: float

    def describe(self) -> str:
        return (
            f"running {self.running:g}, waiting {self.waiting:g}, cap {self.soft_cap:g}/{self.hard_cap:g}, "
            f"drafts {self.drafts:g}, drafting steps on {self.drafting_on:g} off {self.drafting_off:g}"
        )


@dataclass(frozen=True)
class Span:
    """How the engine's counters moved between two readings."""

    start: EngineMetrics
    end: EngineMetrics

    @property
    def drafts(self) -> float:
        return self.end.drafts - self.start.drafts

    @property
    def drafting_on(self) -> float:
        return self.end.drafting_on - self.start.drafting_on

    @property
    def drafting_off(self) -> float:
        return self.end.drafting_off - self.start.drafting_off

    def drafting_now(self) -> bool:
        """vLLM verified drafts, and steps carried them."""
        return self.drafts > 0 and self.drafting_on > 0

    def stopped_with_queue(self) -> bool:
        """Requests queued, steps ran, and none of them drafted."""
        return self.drafts == 0 and self.drafting_on == 0 and self.drafting_off > 0 and self.end.waiting > 0

    def describe(self) -> str:
        return (
            f"{self.end.at - self.start.at:.1f}s: +{self.drafts:g} drafts, drafting steps "
            f"+{self.drafting_on:g} on / +{self.drafting_off:g} off; now {self.end.describe()}"
        )


class Engine:
    """Reads the engine's /metrics and its admin API's GET."""

    def __init__(self, session: aiohttp.ClientSession, base: str, admin_base: str, token: str) -> None:
        self.session, self.base, self.admin_base, self.token = session, base, admin_base, token

    async def metrics(self) -> EngineMetrics:
        async with self.session.get(self.base + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return EngineMetrics(
            at=samples["arctic_state_timestamp_seconds"],
            running=metric_sum(samples, "vllm:num_requests_running"),
            waiting=metric_sum(samples, "vllm:num_requests_waiting"),
            drafts=metric_sum(samples, "vllm:spec_decode_num_drafts_total"),
            drafting_on=metric_sum(samples, "arctic_speculation_drafting_steps_total", drafting="on"),
            drafting_off=metric_sum(samples, "arctic_speculation_drafting_steps_total", drafting="off"),
            cap_changes=metric_sum(samples, "arctic_speculation_cap_changes_total"),
            soft_cap=samples["arctic_speculation_soft_cap"],
            hard_cap=samples["arctic_speculation_hard_cap"],
        )

    async def metrics_after(self, after: float) -> EngineMetrics:
        """The first reading whose arctic_* snapshot is newer than ``after`` (refreshed each second)."""
        return await until(
            f"the engine's arctic_* metrics to be refreshed after {after:.1f}",
            lambda: self._newer(after),
            timeout_s=10,
        )

    async def _newer(self, after: float) -> EngineMetrics | None:
        reading = await self.metrics()
        return reading if reading.at > after else None

    async def span(self, seconds: float = SPAN_S) -> Span:
        start = await self.metrics_after(time.time())
        return Span(start, await self.metrics_after(start.at + seconds))

    async def cap(self) -> tuple[int | None, int | None]:
        """The engine's caps as its admin API's GET reports them (None: no cap)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.get(self.admin_base + "/arctic/v1/speculation", headers=headers) as response:
            body: dict[str, Any] = await response.json()
            assert response.status == 200, body
        return body["soft_cap"], body["hard_cap"]


async def until(what: str, check: Callable[[], Awaitable[T | None]], *, timeout_s: float) -> T:
    """Poll ``check`` until it returns something other than None."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(0.25)


# --------------------------------------------------------------------------------------------
# The operator's controller, ticking against the engine
# --------------------------------------------------------------------------------------------


class ControlLoop:
    """Ticks the real ServiceController every ``TICK_S`` with the server as its one ready pod, as
    the operator's timer does; keeps a log line per tick for the assertion messages."""

    def __init__(self, server: Server) -> None:
        assert server.token is not None
        self.controller = ServiceController(cap_policy=POLICY, admin_token=server.token, config=CONFIG)
        self.pod = PodTarget(
            name="engine-0", ready=True, metrics_url=server.base + "/metrics", admin_url=server.admin_base
        )
        self.started = time.monotonic()
        self.log: list[str] = []
        self.pushes: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            result = await self.controller.tick([self.pod], 1, 0, time.time())
            decision = result.caps[self.pod.name]
            line = f"{decision.reason}: {decision.message}"
            if self.pod.name in result.scrape_errors:
                line += f" [metrics: {result.scrape_errors[self.pod.name]}]"
            if self.pod.name in result.pushed:
                line += f" [pushed: {result.pushed[self.pod.name]}]"
                self.pushes.append(result.pushed[self.pod.name])
            self.note(line)
            await asyncio.sleep(TICK_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        assert self._task is not None
        if self._task.done():
            self._task.result()  # the controller raised: that is the failure
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def alive(self) -> None:
        assert self._task is not None
        if self._task.done():
            self._task.result()
            raise AssertionError("the control loop stopped")

    def note(self, line: str) -> None:
        self.log.append(f"{time.monotonic() - self.started:6.1f}s {line}")

    def recent(self, n: int = 30) -> str:
        return "\n".join(self.log[-n:])


# --------------------------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------------------------


async def scenario(server: Server, loop: ControlLoop) -> tuple[list[str], LoadStats]:
    """The three phases; returns a line per phase (durations, caps, counters) and the load's stats."""
    assert server.token is not None
    report: list[str] = []
    async with (
        aiohttp.ClientSession() as session,
        Load(
            server.base, model=MODEL, prompts=REPETITIVE, max_tokens=MAX_TOKENS, max_concurrency=HIGH
        ) as load,
    ):
        engine = Engine(session, server.base, server.admin_base, server.token)
        changes_before = (await engine.metrics()).cap_changes

        async def paying() -> tuple[int | None, int | None] | None:
            loop.alive()
            cap = await engine.cap()
            return cap if paying_caps(cap) else None

        async def span_where(want: Callable[[Span], bool]) -> Span | None:
            loop.alive()
            span = await engine.span()
            loop.note(f"engine: {span.describe()}")
            return span if want(span) else None

        # Low load: the controller measures acceptance and sets the break-even caps; a lone request drafts.
        began = time.monotonic()
        loop.start()
        await load.set_concurrency(LOW)
        caps = await until("caps from measured acceptance", paying, timeout_s=30)
        low = await until("drafting at low load", lambda: span_where(Span.drafting_now), timeout_s=20)
        report.append(f"low: {time.monotonic() - began:.1f}s, cap {caps}, {low.describe()}")

        # High load: a queue builds and nobody drafts while steps keep running (the hard cap)...
        began = time.monotonic()
        await load.set_concurrency(HIGH)
        stopped = await until(
            "drafting to stop under high load", lambda: span_where(Span.stopped_with_queue), timeout_s=45
        )
        stopped_after = time.monotonic() - began
        soft, hard = await engine.cap()
        assert paying_caps((soft, hard)), f"caps ({soft}, {hard}) under high load"
        # ... and it stays off while the queue lasts.
        held = await engine.span()
        loop.note(f"engine: {held.describe()}")
        assert held.stopped_with_queue(), f"drafting came back under load: {held.describe()}"
        report.append(
            f"high: drafting stopped within {stopped_after:.1f}s, cap ({soft}, {hard}), "
            f"{stopped.describe()}; then {held.describe()}"
        )

        # Low load again: the queue drains and the engine drafts again.
        began = time.monotonic()
        await load.set_concurrency(LOW)
        again = await until("drafting once load dropped", lambda: span_where(Span.drafting_now), timeout_s=60)
        report.append(f"low again: drafting within {time.monotonic() - began:.1f}s, {again.describe()}")
        assert paying_caps(await engine.cap())

        await loop.stop()
        await load.set_concurrency(0)
        changes = (await engine.metrics()).cap_changes - changes_before
        report.append(f"{changes:g} cap changes reached the engine")
        assert changes >= 1, "the controller should have set the caps from the measured acceptance"
    return report, load.stats


def test_cap_controller_follows_load_on_a_real_engine(server: Server) -> None:
    loop = ControlLoop(server)
    began = time.monotonic()
    try:
        report, stats = asyncio.run(scenario(server, loop))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe controller's last ticks and the engine:\n{loop.recent()}") from None
    print("\n".join(report), f"\nscenario: {time.monotonic() - began:.1f}s\n{loop.recent(200)}")
    latencies = sorted(stats.latencies_s) or [0.0]
    print(
        f"requests: {stats.sent} sent, {stats.ok} good, {len(stats.failures)} failed; latency "
        f"median {latencies[len(latencies) // 2]:.1f}s, max {latencies[-1]:.1f}s"
    )
    assert stats.failures == [], stats.failures[:5]
    assert stats.ok == stats.sent > 0
    assert set(loop.pushes) == {"ok"}, loop.pushes


def _until_idle_snapshot(server: Server, timeout_s: float = 30.0) -> tuple[str, dict[str, Any]]:
    """/metrics and the admin API's counters once the engine is idle and the arctic_* snapshot was
    refreshed after it went idle (the API server polls the engine core every second), so both show
    the same totals."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = server.metrics()
        reported = any(key.startswith("vllm:num_requests_running") for key in samples)
        queued = metric_sum(samples, "vllm:num_requests_running") + metric_sum(
            samples, "vllm:num_requests_waiting"
        )
        if reported and queued == 0:
            time.sleep(2.5)  # two snapshot refreshes while idle
            _, text = server.request("GET", "/metrics", token=None)
            _, again = server.request("GET", "/arctic/v1/speculation")
            return str(text), dict(again)
        assert time.monotonic() < deadline, "the engine did not go idle"
        time.sleep(0.5)


def test_the_operator_refines_verify_costs_from_the_engines_own_steps(server: Server) -> None:
    """The runtime's decode-step series on a real engine, read by the operator's parser, give the
    refinement a measured verify cost: n-gram drafts only where the text repeats, so one running
    request makes steps with and without drafts."""
    for prompt in REPETITIVE:  # steps at one running request, whatever ran before in this module
        status, body = server.request(
            "POST", "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": MAX_TOKENS}
        )
        assert status == 200, body
    text, view = _until_idle_snapshot(server)
    totals = parse_metrics(text, time.time()).decode_steps
    assert totals is not None, "the engine exports no arctic_decode_step* series"
    # /metrics and the admin API count the same steps
    counters = view["counters"]["decode_steps"]
    for (bucket, drafting), found in totals.items():
        expected = counters[str(bucket)]["on" if drafting else "off"]
        assert (found.steps, found.requests, found.drafting, found.draft_tokens) == (
            expected["steps"],
            expected["requests"],
            expected["drafting"],
            expected["draft_tokens"],
        )
        assert found.seconds == pytest.approx(expected["seconds"])
    alone, plain = totals[(1, True)], totals[(1, False)]
    print(
        f"batch 1: {alone.steps:g} steps with drafts, {alone.seconds / alone.steps * 1e3:.1f} ms; "
        f"{plain.steps:g} without, {plain.seconds / plain.steps * 1e3:.1f} ms"
    )
    assert alone.steps >= 10 and plain.steps >= 10, totals
    assert alone.requests == alone.steps and alone.drafting == alone.steps  # one request, drafting
    assert alone.draft_tokens <= 3 * alone.drafting
    # the operator's refinement, this engine as its only pod, against a file that says drafts are free
    free = VerifyCosts(batch_sizes=(1, MAX_NUM_SEQS), by_draft_len=((3, (1.0, 1.0)),))
    refinement = refine_costs(free, totals, min_steps=10)
    assert refinement.refined
    # one request drafting in every step with drafts: the measured cost is the ratio of step times
    measured = (alone.seconds / alone.steps) / (plain.seconds / plain.steps)
    refined = dict(refinement.costs.by_draft_len)[3][0]
    print(f"verify cost at one running request: measured {measured:.2f}, refined file {refined:.2f}")
    # a step that verifies drafts does the plain step's work and more (the drafts' forward pass,
    # their sampling); the refined cost is the measured one, at most one plain step over the file's
    assert measured > 1.0
    assert refined == pytest.approx(min(measured, 2.0))
    assert refinement.change_at(1) == pytest.approx(refined - 1.0)
