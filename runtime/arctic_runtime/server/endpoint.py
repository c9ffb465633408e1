"""The ``vllm.endpoint_plugins`` entry point: the admin API on its own port, metrics on vLLM's.

vLLM loads endpoint plugins only when named in ``VLLM_PLUGINS`` (``arctic-serve serve`` sets
``VLLM_PLUGINS=arctic_serve,arctic_serve_admin``). The plugin adds our ``arctic_*`` series to vLLM's
``/metrics`` (on the serving port, where Prometheus already scrapes) and serves the admin API on a
port of its own, ``ARCTIC_SERVE_ADMIN_PORT`` (default ``contract.ARCTIC_ADMIN_PORT``, 8001), bound
to the same host as the serving port. Routes, on the admin port only:

* ``GET   /arctic/v1/speculation``  the cap, the draft method, counters, and each process's state
* ``PUT   /arctic/v1/speculation``  replace the cap: ``{"soft_cap": 8, "hard_cap": 32}`` (absent = no cap)
* ``PATCH /arctic/v1/speculation``  change only the fields given
* ``GET   /arctic/v1/parallel``     the Ulysses / Shift Parallelism layout, the steps and tokens per
  mode, and each worker's rank coordinates and weights

All need ``Authorization: Bearer <token>`` (``ARCTIC_SERVE_ADMIN_TOKEN`` or ``..._FILE``); without a
configured token the admin port is not opened at all. vLLM's ``--api-key`` does not cover these
paths, so the check is ours.

Why a second listener in the API server process rather than a route on vLLM's app: a Kubernetes
Service publishes ports, not paths, so only a port of its own keeps the admin API off the Service
(and lets a NetworkPolicy admit just the operator to it). The listener is a small uvicorn server
started from ``init_state`` in the API server's own event loop: it needs the process's
``EngineClient`` (``collective_rpc``), which exists only there, and it shares nothing with vLLM's
server but that loop. It does not install signal handlers (vLLM's server owns SIGINT/SIGTERM); it
ends with the process. Several API server processes (``--api-server-count``) share the port with
``SO_REUSEPORT``, as they share the serving port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from argparse import Namespace
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY

from arctic_runtime.contract import (
    ADMIN_PLUGIN,
    ADMIN_PREFIX,
    ENV_ADMIN_PORT,
    ENV_ADMIN_TOKEN,
    ENV_ADMIN_TOKEN_FILE,
    InvalidSetting,
    SpeculationCap,
)
from arctic_runtime.hooks import RPC_GET_STATE, RPC_SET_CAP
from arctic_runtime.server import admin
from arctic_runtime.server.metrics import POLL_INTERVAL_S, ArcticCollector
from arctic_runtime.settings import AdminTokenError, admin_port, admin_token, plugin_enabled

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


def build_admin_app(backend: AdminBackend | None) -> FastAPI:
    """The admin listener's app: the admin routes and nothing else (no docs, no OpenAPI schema)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(build_router())
    app.state.arctic_admin = backend
    return app


def admin_host(args: Namespace) -> str:
    """Where the admin listener binds: vLLM's ``--host`` (empty: every interface, as vLLM does);
    loopback when vLLM serves on a Unix socket (``--uds``) and so opens no TCP port of its own."""
    if getattr(args, "uds", None):
        return "127.0.0.1"
    return str(getattr(args, "host", None) or "")


def admin_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (IPv6 when the host is an IPv6 address); an
    OSError names the port and how to change it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno,
            f"arctic-serve: cannot open the admin API's port {host or '*'}:{port} ({exc.strerror}); "
            f"set {ENV_ADMIN_PORT} to a free port",
        ) from exc
    sock.set_inheritable(True)
    return sock


class _AdminServer(uvicorn.Server):
    """uvicorn without its signal handlers: vLLM's server owns SIGINT/SIGTERM in this process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ArcticEndpointPlugin:
    """Implements vLLM's EndpointPlugin protocol."""

    name = PLUGIN_NAME
    required_tasks = None  # any engine; init_state handles the engine-less render server

    def __init__(self) -> None:
        self.collector = ArcticCollector()
        self._poller: asyncio.Task[None] | None = None
        self.admin_server: uvicorn.Server | None = None
        self._admin_task: asyncio.Task[None] | None = None

    def attach_router(self, app: FastAPI) -> None:
        # No routes on vLLM's app: the admin API has its own port (init_state). Only the metrics.
        if not plugin_enabled():
            logger.warning(
                "arctic-serve: %s is allowlisted but ARCTIC_SERVE_ENABLED is not set; nothing added",
                PLUGIN_NAME,
            )
            return
        with contextlib.suppress(ValueError):  # already registered (a second app in one process)
            REGISTRY.register(self.collector)

    async def init_state(self, engine_client: Any, state: Any, args: Namespace) -> None:
        if engine_client is None or not plugin_enabled():
            return
        backend = AdminBackend(engine_client)
        self._poller = asyncio.get_running_loop().create_task(
            poll_metrics(backend, self.collector, POLL_INTERVAL_S)
        )
        await self.start_admin(backend, args)

    async def start_admin(self, backend: AdminBackend, args: Namespace) -> None:
        """Open the admin port and serve the admin app on it in this event loop (returns once the
        port accepts connections). No token configured: the admin API is off, no port is opened."""
        if not (
            os.environ.get(ENV_ADMIN_TOKEN, "").strip() or os.environ.get(ENV_ADMIN_TOKEN_FILE, "").strip()
        ):
            logger.info(
                "arctic-serve: admin API off (set %s or %s to turn it on)",
                ENV_ADMIN_TOKEN,
                ENV_ADMIN_TOKEN_FILE,
            )
            return
        host, port = admin_host(args), admin_port()
        sock = admin_socket(host, port, reuse_port=int(getattr(args, "api_server_count", 1) or 1) > 1)
        config = uvicorn.Config(
            build_admin_app(backend), log_config=None, log_level="warning", access_log=False, lifespan="off"
        )
        server = _AdminServer(config)
        self.admin_server = server
        self._admin_task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started and not self._admin_task.done():
            await asyncio.sleep(0.01)
        if self._admin_task.done():  # startup failed: raise its error here, where vLLM reports it
            self._admin_task.result()
        logger.info("arctic-serve: admin API on %s:%d%s", host or "*", port, ADMIN_PREFIX)


def make_endpoint_plugin() -> ArcticEndpointPlugin:
    return ArcticEndpointPlugin()
