"""The ``vllm.endpoint_plugins`` entry point: admin routes and the metrics bridge on the API server.

vLLM loads endpoint plugins only when named in ``VLLM_PLUGINS`` (``arctic-serve serve`` sets
``VLLM_PLUGINS=arctic_serve,arctic_serve_admin``). Routes:

* ``GET   /arctic/v1/speculation``  the cap, the draft method, counters, and each process's state
* ``PUT   /arctic/v1/speculation``  replace the cap: ``{"soft_cap": 8, "hard_cap": 32}`` (absent = no cap)
* ``PATCH /arctic/v1/speculation``  change only the fields given
* ``GET   /arctic/v1/parallel``     the Ulysses / Shift Parallelism layout, the steps and tokens per
  mode, and each worker's rank coordinates and weights

All need ``Authorization: Bearer <token>`` (``ARCTIC_SERVE_ADMIN_TOKEN`` or ``..._FILE``); without a
configured token the routes answer 404 and say how to turn them on. vLLM's ``--api-key`` does not
cover these paths, so the check is ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from argparse import Namespace
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY

from arctic_runtime.contract import ADMIN_PLUGIN, ADMIN_PREFIX, InvalidSetting, SpeculationCap
from arctic_runtime.hooks import RPC_GET_STATE, RPC_SET_CAP
from arctic_runtime.server import admin
from arctic_runtime.server.metrics import POLL_INTERVAL_S, ArcticCollector
from arctic_runtime.settings import AdminTokenError, admin_token, plugin_enabled

logger = logging.getLogger("arctic_runtime")

PLUGIN_NAME = ADMIN_PLUGIN


class AdminBackend:
    """What the routes need from the engine: two RPCs through vLLM's public ``collective_rpc``."""

    def __init__(self, engine_client: Any) -> None:
        self.engine_client = engine_client
        self.write_lock = asyncio.Lock()  # one cap change at a time (PATCH reads, then writes)

    async def get_state(self, *, workers: bool) -> dict[str, Any]:
        results = await self.engine_client.collective_rpc(RPC_GET_STATE, kwargs={"workers": workers})
        state: dict[str, Any] = results[0]
        return state

    async def set_cap(self, cap: SpeculationCap) -> dict[str, Any]:
        results = await self.engine_client.collective_rpc(RPC_SET_CAP, kwargs=cap.as_dict())
        state: dict[str, Any] = results[0]
        return state


def _json(reply: admin.Reply) -> JSONResponse:
    return JSONResponse(reply.body, status_code=reply.status, headers=dict(reply.headers or {}))


def _token() -> str | AdminTokenError | None:
    try:
        return admin_token()
    except AdminTokenError as exc:
        return exc


def build_router() -> APIRouter:
    router = APIRouter(prefix=ADMIN_PREFIX, tags=["arctic-serve admin"])

    def backend_or_reply(request: Request) -> AdminBackend | JSONResponse:
        denied = admin.authorize(request.headers.get("authorization"), _token())
        if denied is not None:
            return _json(denied)
        backend: AdminBackend | None = getattr(request.app.state, "arctic_admin", None)
        if backend is None:
            return _json(admin.Reply(503, {"detail": "the engine is not ready"}))
        return backend

    async def engine_call(call: Any) -> dict[str, Any] | JSONResponse:
        try:
            result: dict[str, Any] = await call
            return result
        except InvalidSetting as exc:  # the engine core validates again; same 422 shape
            return _json(admin.validation_reply(exc))
        except Exception as exc:  # engine dead or RPC failure: report, never crash the server
            logger.exception("arctic-serve admin: engine call failed")
            return _json(admin.Reply(503, {"detail": f"engine call failed: {type(exc).__name__}: {exc}"}))

    @router.get("/speculation")
    async def get_speculation(request: Request) -> Any:
        backend = backend_or_reply(request)
        if isinstance(backend, JSONResponse):
            return backend
        state = await engine_call(backend.get_state(workers=True))
        return state if isinstance(state, JSONResponse) else admin.speculation_view(state)

    async def change(request: Request, *, partial: bool) -> Any:
        backend = backend_or_reply(request)
        if isinstance(backend, JSONResponse):
            return backend
        async with backend.write_lock:
            current = await engine_call(backend.get_state(workers=False))
            if isinstance(current, JSONResponse):
                return current
            spec = current["speculation"]
            parsed = admin.parse_cap_body(
                await request.body(),
                current=SpeculationCap(soft_cap=spec["soft_cap"], hard_cap=spec["hard_cap"]),
                partial=partial,
            )
            if isinstance(parsed, admin.Reply):
                return _json(parsed)
            state = await engine_call(backend.set_cap(parsed))
        return state if isinstance(state, JSONResponse) else admin.speculation_view(state)

    @router.get("/parallel")
    async def get_parallel(request: Request) -> Any:
        backend = backend_or_reply(request)
        if isinstance(backend, JSONResponse):
            return backend
        state = await engine_call(backend.get_state(workers=True))
        return state if isinstance(state, JSONResponse) else admin.parallel_view(state)

    @router.put("/speculation")
    async def put_speculation(request: Request) -> Any:
        return await change(request, partial=False)

    @router.patch("/speculation")
    async def patch_speculation(request: Request) -> Any:
        return await change(request, partial=True)

    return router


async def poll_metrics(backend: AdminBackend, collector: ArcticCollector, interval: float) -> None:
    """Mirror the engine core's counters into the API server's registry, forever."""
    while True:
        try:
            state = await backend.get_state(workers=False)
            collector.update(state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # engine restarting or shutting down: keep the last snapshot
            logger.debug("arctic-serve: metrics poll failed: %s", exc)
        await asyncio.sleep(interval)


class ArcticEndpointPlugin:
    """Implements vLLM's EndpointPlugin protocol."""

    name = PLUGIN_NAME
    required_tasks = None  # any engine; init_state handles the engine-less render server

    def __init__(self) -> None:
        self.collector = ArcticCollector()
        self._poller: asyncio.Task[None] | None = None

    def attach_router(self, app: FastAPI) -> None:
        if not plugin_enabled():
            logger.warning(
                "arctic-serve: %s is allowlisted but ARCTIC_SERVE_ENABLED is not set; no routes added",
                PLUGIN_NAME,
            )
            return
        app.include_router(build_router())
        with contextlib.suppress(ValueError):  # already registered (a second app in one process)
            REGISTRY.register(self.collector)

    async def init_state(self, engine_client: Any, state: Any, args: Namespace) -> None:
        if engine_client is None or not plugin_enabled():
            return
        backend = AdminBackend(engine_client)
        state.arctic_admin = backend
        self._poller = asyncio.get_running_loop().create_task(
            poll_metrics(backend, self.collector, POLL_INTERVAL_S)
        )


def make_endpoint_plugin() -> ArcticEndpointPlugin:
    return ArcticEndpointPlugin()
