"""The operator's own resync loop and control tasks (``arctic_operator.loops``), over a plain dict
standing for kopf's index of the ArcticInferenceServices."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

from arctic_operator.loops import (
    ControlTasks,
    ServiceEntry,
    due,
    index_service,
    resync_loop,
    slim_body,
)


def body(name: str, uid: str, *, autoscaling: bool = False, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "uid": uid,
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-12-04T00:00:00Z"
    spec: dict[str, Any] = {"model": "m"}
    if autoscaling:
        spec["autoscaling"] = {"minReplicas": 1, "maxReplicas": 2}
    return {"apiVersion": "arctic-serve.dev/v1alpha1", "kind": "X", "metadata": meta, "spec": spec}


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (polled; the machine may be busy, so no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def entry(name: str, uid: str, seen: float = 0.0, **kw: Any) -> ServiceEntry:
    return index_service(body(name, uid, **kw), now=seen)[("ns", name)]


def test_the_index_keeps_no_body_unless_the_control_loop_is_on() -> None:
    plain = entry("a", "u1", seen=3.0)
    assert plain == ServiceEntry("ns", "a", "u1", deleting=False, control=False, seen=3.0, body=None)
    controlled = entry("b", "u2", autoscaling=True)
    assert controlled.control and controlled.body is not None
    assert "managedFields" not in controlled.body["metadata"]
    assert controlled.body["spec"] == body("b", "u2", autoscaling=True)["spec"]
    assert entry("c", "u3", deleting=True).deleting
    assert slim_body({"metadata": {"name": "x", "managedFields": []}}) == {"metadata": {"name": "x"}}


def test_due_after_the_interval_and_idle_and_never_while_deleting() -> None:
    schedule: dict[str, float] = {}
    entries = {"u1": entry("a", "u1", seen=0.0), "u2": entry("b", "u2", seen=0.0, deleting=True)}
    assert due(entries, schedule, 100.0, 60.0, idle=5.0) == []  # first seen: due 60 s later
    assert schedule == {"u1": 160.0}
    assert due(entries, schedule, 159.0, 60.0, idle=5.0) == []
    assert due(entries, schedule, 160.0, 60.0, idle=5.0) == [entries["u1"]]
    # a watch event 2 s ago: not idle yet (kopf's timer ``idle``)
    busy = {"u1": entry("a", "u1", seen=158.0)}
    assert due(busy, schedule, 160.0, 60.0, idle=5.0) == []
    assert due(busy, schedule, 163.0, 60.0, idle=5.0) == [busy["u1"]]
    # gone from the index: dropped from the schedule
    assert due({}, schedule, 170.0, 60.0) == [] and schedule == {}


def test_the_loop_resyncs_a_resource_without_any_watch_event() -> None:
    """Nothing changes the index (no watch event); the resource is resynced every interval."""
    index = {("ns", "a"): [entry("a", "u1", seen=-100.0)]}
    passes: list[tuple[str, float]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def resync(e: ServiceEntry) -> None:
            passes.append((e.uid, loop.time() - start))

        task = asyncio.create_task(resync_loop(index, 0.2, resync, concurrency=2, tick=0.01))
        await until(lambda: len(passes) >= 3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert {uid for uid, _ in passes} == {"u1"}
    times = [t for _, t in passes]
    assert times[0] >= 0.2  # an interval after it was first seen, never sooner
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(times))  # then every interval


def test_a_failed_resync_is_retried_an_interval_later() -> None:
    index = {("ns", "a"): [entry("a", "u1", seen=-100.0)]}
    calls: list[str] = []

    async def main() -> None:
        async def resync(e: ServiceEntry) -> None:
            calls.append(e.uid)
            raise RuntimeError("API down")

        task = asyncio.create_task(resync_loop(index, 0.1, resync, concurrency=1, tick=0.01))
        await until(lambda: len(calls) >= 3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert set(calls) == {"u1"}  # the loop outlived the failures and tried again


def run_tasks(script: Callable[[ControlTasks, list[tuple[str, str]]], Any]) -> list[tuple[str, str]]:
    """Run ``script(tasks, log)`` with a ControlTasks whose loops log start/pass/stop and whose
    turned_off logs 'cleared'."""
    log: list[tuple[str, str]] = []

    async def loop(uid: str, latest: Callable[[], ServiceEntry | None], stopped: asyncio.Event) -> None:
        log.append(("start", uid))
        while not stopped.is_set():
            current = latest()
            assert current is not None and current.body is not None
            log.append(("pass", current.body["spec"]["model"]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), 0.05)
        log.append(("stop", uid))

    async def turned_off(e: ServiceEntry) -> None:
        log.append(("cleared", e.uid))

    async def main() -> None:
        await script(ControlTasks(loop=loop, turned_off=turned_off), log)

    asyncio.run(main())
    return log


def test_a_control_task_starts_on_create_and_stops_on_delete_without_clearing() -> None:
    async def script(tasks: ControlTasks, log: list[tuple[str, str]]) -> None:
        index: dict[Any, list[ServiceEntry]] = {("ns", "a"): [entry("a", "u1")]}
        runner = asyncio.create_task(tasks.run(index, tick=0.01))
        await asyncio.sleep(0.05)
        assert log == []  # no autoscaling: no task
        index[("ns", "b")] = [entry("b", "u2", autoscaling=True)]
        await until(lambda: bool(log))
        assert log[0] == ("start", "u2") and set(tasks.tasks) == {"u2"}
        index[("ns", "b")] = [entry("b", "u2", autoscaling=True, deleting=True)]  # deletion marked
        await until(lambda: log[-1] == ("stop", "u2"))
        assert tasks.tasks == {}
        del index[("ns", "b")]
        await asyncio.sleep(0.05)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    log = run_tasks(script)
    assert ("cleared", "u2") not in log
    assert [e for e in log if e[0] != "pass"] == [("start", "u2"), ("stop", "u2")]


def test_a_control_task_follows_the_spec_and_stops_and_clears_when_autoscaling_is_turned_off() -> None:
    async def script(tasks: ControlTasks, log: list[tuple[str, str]]) -> None:
        index: dict[Any, list[ServiceEntry]] = {("ns", "b"): [entry("b", "u2", autoscaling=True)]}
        runner = asyncio.create_task(tasks.run(index, tick=0.01))
        await asyncio.sleep(0.03)
        changed = body("b", "u2", autoscaling=True)
        changed["spec"]["model"] = "m2"
        index[("ns", "b")] = list(index_service(changed).values())
        await until(lambda: ("pass", "m2") in log)  # the task reads the newest body
        index[("ns", "b")] = [entry("b", "u2")]  # autoscaling off
        await until(lambda: log[-2:] == [("stop", "u2"), ("cleared", "u2")])
        index[("ns", "b")] = [entry("b", "u2", autoscaling=True)]  # on again: a fresh task
        await until(lambda: log[-1] == ("start", "u2") or log[-1][0] == "pass")
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    events = [e for e in run_tasks(script) if e[0] != "pass"]
    assert events[:4] == [("start", "u2"), ("stop", "u2"), ("cleared", "u2"), ("start", "u2")]
    # the operator's cleanup (runner.cancel()) cancels the fresh task: it may not reach its own end
    assert events[4:] in ([], [("stop", "u2")])
