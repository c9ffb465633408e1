"""The control loop's I/O side on loopback: scraping, the admin client, ServiceController.tick
against fake engine pods, and the pure helpers (pod targets, status rendering and patches)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from arctic_operator.api import ArcticInferenceService
from arctic_operator.control.admin_client import AdminError, EffectiveCap, put_cap
from arctic_operator.control.cap import CapPolicy
from arctic_operator.control.controller import (
    ControllerConfig,
    PodTarget,
    ServiceController,
    TickResult,
    pod_target,
    pod_targets,
    rfc3339,
)
from arctic_operator.control.kube import (
    ControlTuning,
    policies,
    same_but_numbers,
    status_patch,
    wants_control,
)
from arctic_operator.control.metrics import PodSample
from arctic_operator.control.replicas import ReplicaPolicy
from arctic_operator.control.scrape import scrape
from arctic_operator.crd import openapi_schema
from arctic_operator.settings import SettingsError, from_env
from tests.operator.apiserver_rules import schema_errors
from tests.operator.fake_engine import FakeEngine, Load
from tests.operator.status_checks import assert_typed_status


def free_port() -> int:
    """A loopback port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _session_call(coro_fn: Any) -> Any:
    async with aiohttp.ClientSession() as session:
        return await coro_fn(session)


def run(coro_fn: Any) -> Any:
    return asyncio.run(_session_call(coro_fn))


@pytest.fixture
def engines() -> Iterator[list[FakeEngine]]:
    with ExitStack() as stack:
        yield [stack.enter_context(FakeEngine()) for _ in range(3)]


# ---- scrape ------------------------------------------------------------------------------


class SlowServer:
    """Answers /metrics after ``delay`` seconds, counting concurrent requests."""

    def __init__(self, delay: float) -> None:
        self.delay, self.in_flight, self.peak = delay, 0, 0

    async def handler(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return web.Response(text="vllm:num_requests_running 1\nvllm:num_requests_waiting 0\n")


async def _with_server(handler: Any, body: Any) -> Any:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            return await body(session, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def test_scrape_reads_the_real_vllm_body_and_reports_each_bad_pod(engines: list[FakeEngine]) -> None:
    good, garbage, _ = engines
    good.load = Load(running=3, waiting=7, kv_cache_usage=0.4)
    garbage.garbage = True
    targets = {
        "good": good.url + "/metrics",
        "garbage": garbage.url + "/metrics",
        "missing": good.url + "/nope",
        "refused": f"http://127.0.0.1:{free_port()}/metrics",
    }
    got = run(lambda s: scrape(s, targets, 100.0, timeout_s=2.0))
    sample = got["good"]
    assert isinstance(sample, PodSample)
    assert (sample.time, sample.running, sample.waiting, sample.kv_cache_usage) == (100.0, 3, 7, 0.4)
    assert sample.cap_reported and sample.complete
    assert got["garbage"].startswith("parse error in http://127.0.0.1:")
    assert got["missing"].startswith("HTTP 404")
    assert got["refused"].startswith("cannot connect to http://127.0.0.1:")


def test_scrape_times_out_per_request_and_bounds_concurrency() -> None:
    slow = SlowServer(delay=0.3)

    async def body(session: aiohttp.ClientSession, base: str) -> tuple[dict[str, Any], float]:
        started = time.monotonic()
        out = await scrape(session, {f"p{i}": f"{base}/metrics" for i in range(6)}, 1.0, concurrency=2)
        return out, time.monotonic() - started

    results, took = asyncio.run(_with_server(slow.handler, body))
    assert all(isinstance(v, PodSample) for v in results.values())
    assert slow.peak == 2 and took >= 0.85  # 3 rounds of 2

    slow = SlowServer(delay=2.0)

    async def timed(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
        return await scrape(session, {"slow": f"{base}/metrics"}, 1.0, timeout_s=0.2)

    assert asyncio.run(_with_server(slow.handler, timed))["slow"].startswith("timeout: no answer from")


# ---- admin client ------------------------------------------------------------------------


def test_put_cap_returns_the_engines_caps(engines: list[FakeEngine]) -> None:
    engine = engines[0]
    got = run(lambda s: put_cap(s, engine.admin_url, "secret", 4, 8))
    assert got == EffectiveCap(4, 8) and engine.puts == [(4, 8)]
    assert run(lambda s: put_cap(s, engine.admin_url, "secret", None, None)) == EffectiveCap(None, None)


@pytest.mark.parametrize(
    ("token", "soft", "hard", "status", "text"),
    [
        ("wrong", 4, 8, 401, "the admin token was rejected"),
        ("secret", 8, 4, 422, "hard_cap: must be >= soft_cap"),
        ("secret", -1, None, 422, "soft_cap: must be an integer >= 0"),
    ],
)
def test_put_cap_errors_say_what_is_wrong(
    engines: list[FakeEngine], token: str, soft: int, hard: int | None, status: int, text: str
) -> None:
    engine = engines[0]
    with pytest.raises(AdminError, match=text) as caught:
        run(lambda s: put_cap(s, engine.admin_url, token, soft, hard))
    assert caught.value.status == status and engine.puts == []


def test_put_cap_admin_api_off_timeout_and_refused() -> None:
    async def off(request: web.Request) -> web.Response:
        return web.json_response({"detail": "the arctic-serve admin API is off"}, status=404)

    async def call(session: aiohttp.ClientSession, base: str) -> Any:
        return await put_cap(session, base, "t", 1, 2)

    with pytest.raises(AdminError, match=r"404 from .*serves no admin API"):
        asyncio.run(_with_server(off, call))

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    async def hurried(session: aiohttp.ClientSession, base: str) -> Any:
        return await put_cap(session, base, "t", 1, 2, timeout_s=0.2)

    with pytest.raises(AdminError, match=r"^timeout"):
        asyncio.run(_with_server(slow, hurried))
    with pytest.raises(AdminError, match=r"^cannot connect to"):
        run(lambda s: put_cap(s, f"http://127.0.0.1:{free_port()}", "t", 1, 2))


# ---- pure helpers ------------------------------------------------------------------------


def _pod(name: str, ready: bool = True, ip: str | None = "10.0.0.5", **extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip:
        status["podIP"] = ip
    pod: dict[str, Any] = {
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {"name": "sidecar", "ports": [{"name": "http", "containerPort": 9999}]},
                {"name": "engine", "ports": [{"name": "http", "containerPort": 8123}]},
            ]
        },
        "status": status,
    }
    pod.update(extra)
    return pod


def test_pod_targets_use_the_engines_http_port_and_count_loading_pods() -> None:
    assert pod_target(_pod("a"), 8000) == PodTarget(
        "a", True, "http://10.0.0.5:8123/metrics", "http://10.0.0.5:8123"
    )
    # the admin API on the engine's port named "admin"; pods without one (an older operator's)
    # are called on the serving port, where their runtime served it
    with_admin = _pod("a")
    with_admin["spec"]["containers"][1]["ports"].append({"name": "admin", "containerPort": 8124})
    assert pod_target(with_admin, 8000) == PodTarget(
        "a", True, "http://10.0.0.5:8123/metrics", "http://10.0.0.5:8124"
    )
    no_port = _pod("b", ip="fd00::1")
    no_port["spec"]["containers"] = [{"name": "engine"}]
    assert pod_target(no_port, 8000).metrics_url == "http://[fd00::1]:8000/metrics"
    terminating = _pod("d", metadata={"name": "d", "deletionTimestamp": "2026-01-01T00:00:00Z"})
    failed = _pod("e")
    failed["status"]["phase"] = "Failed"
    targets, loading = pod_targets([_pod("c", ready=False, ip=None), _pod("a"), terminating, failed], 8000)
    assert [t.name for t in targets] == ["a", "c"] and loading == 1
    assert targets[1] == PodTarget("c", False, None, None)


def test_status_patch_removes_what_is_gone_and_replaces_lists() -> None:
    old = {"autoscaling": {"reason": "ScaleUp", "kvCacheUsage": 0.5}, "pods": [{"name": "a"}], "x": 1}
    new = {"autoscaling": {"reason": "ScaleUp"}, "pods": [{"name": "b"}]}
    assert status_patch(old, new) == {
        "autoscaling": {"kvCacheUsage": None},
        "pods": [{"name": "b"}],
        "x": None,
    }
    assert status_patch(new, new) == {}
    assert same_but_numbers(
        {"pods": [{"name": "a", "running": 1.0, "capMessage": "1 running"}]},
        {"pods": [{"name": "a", "running": 2.0, "capMessage": "2 running"}]},
    )
    assert not same_but_numbers({"autoscaling": {"reason": "A"}}, {"autoscaling": {"reason": "B"}})


def test_policies_follow_the_spec_and_the_tuning() -> None:
    spec = ArcticInferenceService.model_validate(
        yaml.safe_load(SPEC.format(extra="softCap: 4\n    hardCap: 32"))
    ).spec
    replica, cap = policies(spec, ControlTuning(replica_overrides={"scale_up_cooldown_s": 0.0}))
    assert replica is not None and (replica.min_replicas, replica.max_replicas) == (1, 3)
    assert replica.scale_up_cooldown_s == 0.0 and replica.scale_down_window_s == 2
    assert cap is not None and (cap.min_cap, cap.max_cap, cap.hard_cap_limit) == (1, 16, 32)
    assert wants_control({"autoscaling": {"maxReplicas": 2}})
    assert wants_control({"speculation": {"capController": {"enabled": True}}})
    assert not wants_control({"replicas": 2, "speculation": {"capController": {"enabled": False}}})


def test_scrape_seconds_setting() -> None:
    assert from_env({}).scrape_seconds == 5.0
    assert from_env({"ARCTIC_OPERATOR_SCRAPE_SECONDS": "2.5"}).scrape_seconds == 2.5
    for bad in ("0.5", "soon", "7200"):
        with pytest.raises(SettingsError, match=r"^ARCTIC_OPERATOR_SCRAPE_SECONDS: must be 1..3600 seconds"):
            from_env({"ARCTIC_OPERATOR_SCRAPE_SECONDS": bad})


def test_rfc3339() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"


# ---- ServiceController.tick ----------------------------------------------------------------

SPEC = """
apiVersion: serving.arctic-serve.dev/v1alpha1
kind: ArcticInferenceService
metadata: {{name: svc}}
spec:
  model: {{source: {{hub: HuggingFaceTB/SmolLM2-135M-Instruct}}}}
  gpusPerPod: 0
  autoscaling:
    minReplicas: 1
    maxReplicas: 3
    targets: {{waitingRequestsPerReplica: 2}}
    scaleUp: {{stabilizationWindowSeconds: 0}}
    scaleDown: {{stabilizationWindowSeconds: 2}}
  speculation:
    method: suffix
    capController: {{enabled: true, min: 1, max: 16}}
    {extra}
"""

REPLICAS = ReplicaPolicy(
    min_replicas=1,
    max_replicas=3,
    waiting_per_replica=2.0,
    scale_up_window_s=0.0,
    scale_down_window_s=2.0,
    scale_up_cooldown_s=0.0,
    scale_down_cooldown_s=0.0,
)
CAPS = CapPolicy(min_cap=1, max_cap=16, dwell_s=0.0)
CONFIG = ControllerConfig(window_s=1.0, max_age_s=2.0, scrape_timeout_s=1.0, reapply_grace_s=0.5)


def targets_for(engines: list[FakeEngine]) -> list[PodTarget]:
    return [PodTarget(f"pod-{i}", True, e.url + "/metrics", e.admin_url) for i, e in enumerate(engines)]


def tick(controller: ServiceController, pods: list[PodTarget], current: int, now: float) -> TickResult:
    result = asyncio.run(controller.tick(pods, current, 0, now))
    assert_typed_status(result.status)  # every tick's status fields: the typed model and the CRD
    return result


def crd_status_errors(status: dict[str, Any]) -> list[Any]:
    """Problems of ``status`` against the generated CRD's schema (as the API server checks)."""
    schema = openapi_schema()
    obj = yaml.safe_load(SPEC.format(extra=""))
    obj["status"] = status
    return list(schema_errors(schema, obj))


def test_tick_scales_up_on_a_queue_and_pushes_caps(engines: list[FakeEngine]) -> None:
    for e in engines:
        e.load = Load(running=4, waiting=6, accepted_per_draft=0.5)
    controller = ServiceController(REPLICAS, CAPS, admin_token="secret", config=CONFIG)
    result = tick(controller, targets_for(engines[:1]), 1, 1000.0)
    assert result.replicas is not None and result.replicas.reason == "ScaleUp"
    assert (result.replicas.current, result.replicas.desired) == (1, 3)
    assert any(e[1] == "ScaledUp" and "replicas 1 -> 3" in e[2] for e in result.events)
    # the first cap: the highest allowed until acceptance is measured, pushed and in effect
    assert result.pushed == {"pod-0": "ok"} and engines[0].puts == [(16, 17)]
    auto = result.status["autoscaling"]
    assert auto["desiredReplicas"] == 3 and auto["reason"] == "ScaleUp" and auto["metricsComplete"]
    assert auto["waitingRequests"] == 6 and auto["lastDecisions"][-1]["desired"] == 3
    pod = result.status["pods"][0]
    assert pod["metrics"] == "Ok" and pod["configuredSoftCap"] == 16 and pod["effectiveSoftCap"] == 16
    assert result.status["capController"]["lastChanges"][0]["result"] == "Ok"
    assert crd_status_errors(result.status) == []

    # acceptance measured (0.5 per 3-token draft): drafting pays up to 10 running by the built-in
    # k=3 curve (1.5 / 1.1 = 1.364 between 1.328 at 4 and 1.381 at 16), so the cap comes down to
    # 10 and the hard cap to 11; configured == effective
    result = tick(controller, targets_for(engines[:1]), 3, 1001.0)
    assert result.caps["pod-0"].reason == "Lowered"
    assert result.caps["pod-0"].inputs["breakEvenBatch"] == 10
    assert engines[0].puts[-1] == (10, 11)
    pod = result.status["pods"][0]
    assert (pod["configuredSoftCap"], pod["effectiveSoftCap"], pod["effectiveHardCap"]) == (10, 10, 11)
    assert pod["acceptanceRate"] == 0.167 and crd_status_errors(result.status) == []  # 0.5 of 3


def test_a_dead_pod_holds_scale_down_and_its_cap(engines: list[FakeEngine]) -> None:
    controller = ServiceController(REPLICAS, CAPS, admin_token="secret", config=CONFIG)
    pods = targets_for(engines)
    for i in range(3):
        tick(controller, pods, 3, 1000.0 + i)
    puts = [list(e.puts) for e in engines]
    engines[2].kill()
    for i in range(3, 8):
        result = tick(controller, pods, 3, 1000.0 + i)
        assert result.replicas is not None and not result.replicas.changed
    assert result.replicas is not None and result.replicas.reason == "MetricsIncomplete"
    assert result.status["autoscaling"]["metricsComplete"] is False
    assert result.status["autoscaling"]["observedPods"] == 2
    dead = result.status["pods"][2]
    assert dead["metrics"] == "Error" and dead["metricsError"].startswith("cannot connect to")
    assert dead["capReason"] == "MetricsIncomplete" and engines[2].puts == puts[2]
    assert [e[1] for e in result.events] == []  # the warning went out once, when it started failing
    assert crd_status_errors(result.status) == []

    # the pod comes back (restarted: the engine's startup caps) -> the configured cap is set again
    engines[2].start()
    result = tick(controller, pods, 3, 1010.0)
    assert result.pushed.get("pod-2") == "ok" and engines[2].puts[-1] == puts[2][-1]
    assert any(e[1] == "CapReapplied" and "pod-2" in e[2] for e in result.events)
    later = [tick(controller, pods, 3 - (i > 0), 1011.0 + i) for i in range(3)]
    assert any(r.replicas is not None and r.replicas.reason == "ScaleDown" for r in later)


def test_incomplete_metrics_and_a_wrong_token(engines: list[FakeEngine]) -> None:
    async def partial(request: web.Request) -> web.Response:
        return web.Response(text="vllm:num_requests_running 2\n")  # no waiting series

    controller = ServiceController(REPLICAS, CAPS, admin_token="wrong", config=CONFIG)

    async def body(session: aiohttp.ClientSession, base: str) -> TickResult:
        pods = [PodTarget("p", True, base + "/metrics", base), *targets_for(engines[:1])]
        return await controller.tick(pods, 2, 0, 1000.0)

    result = asyncio.run(_with_server(partial, body))
    assert result.scrape_errors["p"] == "metrics incomplete: no waiting"
    assert result.status["pods"][0]["metrics"] == "Incomplete"
    assert result.pushed["pod-0"].startswith("401 Unauthorized")
    assert result.status["pods"][1]["capError"].startswith("401 Unauthorized")
    assert engines[0].rejected == [401]
    reasons = [e[1] for e in result.events]
    assert reasons.count("MetricsUnavailable") == 1 and reasons.count("CapUpdateFailed") == 1
    assert result.status["capController"]["lastChanges"][0]["result"].startswith("401")
    assert crd_status_errors(result.status) == [] and assert_typed_status(result.status)


def test_autoscaling_only_and_unready_pods(engines: list[FakeEngine]) -> None:
    controller = ServiceController(REPLICAS, None, config=CONFIG)
    pods = [*targets_for(engines[:1]), PodTarget("loading", False, None, None)]
    result = asyncio.run(controller.tick(pods, 2, 1, 1000.0))
    assert "capController" not in result.status and engines[0].puts == []
    assert [p["metrics"] for p in result.status["pods"]] == ["Ok", "NotReady"]
    assert "configuredSoftCap" not in result.status["pods"][0]
    assert result.status["autoscaling"]["loadingPods"] == 1
    assert_typed_status(result.status)
