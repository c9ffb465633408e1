"""The operator's own periodic work over ArcticInferenceServices (issue 15): the resync of every
resource and the control loop of each resource that asks for one, as asyncio tasks that
``handlers.register`` starts at kopf's startup and stops at its cleanup.

They were a kopf timer and a kopf daemon per resource. kopf keeps the latest whole body of every
object of a kind that has a timer or a daemon (whatever their filters say): ~41 KB of Python objects
per resource, 24 KB of it managedFields, ~40 MB at 1,000 resources. Instead, kopf indexes each
resource (``index_service``) into a ``ServiceEntry``: its uid, whether it is being deleted, whether it
wants the control loop, when its last watch event came, and (only for a resource with the control
loop on) its body without managedFields, which the control pass reads.

* ``resync_loop``: every ``TICK_SECONDS`` it runs a pass over each resource ``due`` (``resync_seconds``
  after its previous resync, the first ``resync_seconds`` after the resource appeared; and, as kopf's
  timer with ``idle``, not within ``IDLE_SECONDS`` of a watch event of it). A pass reads the resource
  live (one GET: the index keeps no spec), as the workload-event pass does.
* ``ControlTasks.sync``: one task per uid for each resource that wants control and is not being
  deleted; a task whose resource is gone or being deleted is stopped, and one whose spec turned the
  loop off is stopped and then the loop's status fields are cleared, as the daemon did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from arctic_operator.control.kube import wants_control

#: How often the loops look at the index (the resync's and the control task's start/stop latency).
TICK_SECONDS = 1.0
#: A resync waits until the resource has had no watch event for this long (kopf's timer ``idle``).
IDLE_SECONDS = 5.0
#: On stop, a control task's pass in flight may finish for this long before it is cancelled.
STOP_GRACE_SECONDS = 20.0

log = logging.getLogger("arctic_operator.loops")


@dataclass(frozen=True)
class ServiceEntry:
    """What kopf's index keeps of one ArcticInferenceService (see the module docstring)."""

    namespace: str
    name: str
    uid: str
    deleting: bool
    control: bool
    seen: float  # time.monotonic() of its latest watch event
    body: Mapping[str, Any] | None = None  # without managedFields; only when ``control``


def slim_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``body`` without ``metadata.managedFields`` (nothing the operator reads)."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {**body, "metadata": meta}


def index_service(body: Mapping[str, Any], now: float | None = None) -> dict[tuple[str, str], ServiceEntry]:
    """kopf's index function for ArcticInferenceServices: {(namespace, name): entry}."""
    meta = body.get("metadata") or {}
    control = wants_control(body.get("spec") or {})
    entry = ServiceEntry(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name")),
        uid=str(meta.get("uid")),
        deleting=bool(meta.get("deletionTimestamp")),
        control=control,
        seen=time.monotonic() if now is None else now,
        body=slim_body(body) if control else None,
    )
    return {(entry.namespace, entry.name): entry}


def entries_of(index: Mapping[Any, Iterable[ServiceEntry]]) -> dict[str, ServiceEntry]:
    """The entries of kopf's index by uid (read in kopf's event loop: no copy races)."""
    return {e.uid: e for store in index.values() for e in store}


def due(
    entries: Mapping[str, ServiceEntry],
    schedule: dict[str, float],
    now: float,
    interval: float,
    idle: float = IDLE_SECONDS,
) -> list[ServiceEntry]:
    """The resources whose resync is due at ``now``; ``schedule`` (uid: next resync) gains the new
    resources (due ``interval`` from now) and loses those gone. A due resource's next time is the
    caller's to set (``interval`` after its pass ends)."""
    for uid in [u for u in schedule if u not in entries]:
        del schedule[uid]
    ready = []
    for uid, entry in entries.items():
        if entry.deleting:
            continue
        when = schedule.setdefault(uid, now + interval)
        if when <= now and now - entry.seen >= idle:
            ready.append(entry)
    return ready


async def resync_loop(
    index: Mapping[Any, Iterable[ServiceEntry]],
    interval: float,
    resync: Callable[[ServiceEntry], Awaitable[None]],
    concurrency: int,
    tick: float = TICK_SECONDS,
) -> None:
    """Resync each resource every ``interval`` (``due``) with ``resync``, at most ``concurrency`` at
    once; runs until cancelled. A failed pass is logged; the resource's next resync is ``interval``
    later, as for any pass."""
    schedule: dict[str, float] = {}
    running: set[str] = set()
    slots = asyncio.Semaphore(concurrency)

    async def one(entry: ServiceEntry) -> None:
        try:
            async with slots:
                await resync(entry)
        except Exception:
            log.exception("resync of %s/%s failed", entry.namespace, entry.name)
        finally:
            running.discard(entry.uid)
            if entry.uid in schedule:
                schedule[entry.uid] = time.monotonic() + interval

    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            for entry in due(entries_of(index), schedule, time.monotonic(), interval):
                if entry.uid in running:
                    continue
                running.add(entry.uid)
                schedule[entry.uid] = float("inf")  # until its pass ends
                task = asyncio.create_task(one(entry))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(tick)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


ControlLoop = Callable[[str, Callable[[], ServiceEntry | None], asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class ControlTasks:
    """The control loops, one task per uid (``sync`` starts and stops them from the index).

    ``loop(uid, latest, stopped)`` runs one resource's loop until ``stopped`` is set; ``latest()``
    gives its newest entry (None once it is gone). ``turned_off(entry)`` runs after a loop stopped
    because the spec turned it off (not on delete)."""

    loop: ControlLoop
    turned_off: Callable[[ServiceEntry], Awaitable[None]]
    tasks: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = field(default_factory=dict)
    entries: dict[str, ServiceEntry] = field(default_factory=dict)
    stopping: set[asyncio.Task[None]] = field(default_factory=set)

    def sync(self, entries: Mapping[str, ServiceEntry]) -> None:
        self.entries = dict(entries)
        for uid, entry in entries.items():
            if entry.control and not entry.deleting and uid not in self.tasks:
                stopped = asyncio.Event()
                task = asyncio.create_task(self.loop(uid, self._latest(uid), stopped))
                self.tasks[uid] = (task, stopped)
        for uid in list(self.tasks):
            now = entries.get(uid)
            if now is None or now.deleting:
                self._stop(uid, None)
            elif not now.control:
                self._stop(uid, now)

    def _latest(self, uid: str) -> Callable[[], ServiceEntry | None]:
        return lambda: self.entries.get(uid)

    def _stop(self, uid: str, off: ServiceEntry | None) -> None:
        task, stopped = self.tasks.pop(uid)
        stopped.set()

        async def finish() -> None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_SECONDS)
            task.cancel()
            if off is not None:
                await self.turned_off(off)

        stopping = asyncio.create_task(finish())
        self.stopping.add(stopping)
        stopping.add_done_callback(self.stopping.discard)

    async def run(self, index: Mapping[Any, Iterable[ServiceEntry]], tick: float = TICK_SECONDS) -> None:
        """Keep the tasks in step with the index until cancelled; then stop them all."""
        try:
            while True:
                self.sync(entries_of(index))
                await asyncio.sleep(tick)
        finally:
            tasks = [task for task, _ in self.tasks.values()] + list(self.stopping)
            for task, stopped in self.tasks.values():
                stopped.set()
                task.cancel()
            self.tasks.clear()
            await asyncio.gather(*tasks, return_exceptions=True)
