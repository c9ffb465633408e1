"""Admin API decisions (auth, bodies) and the HTTP routes' behaviour when no engine is involved."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from argparse import Namespace

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from arctic_runtime.contract import SpeculationCap
from arctic_runtime.server import admin
from arctic_runtime.server.endpoint import (
    AdminBackend,
    ArcticEndpointPlugin,
    admin_host,
    admin_socket,
    build_router,
)
from arctic_runtime.settings import AdminTokenError


def test_authorize() -> None:
    assert admin.authorize("Bearer t0k", "t0k") is None
    assert admin.authorize("bearer   t0k ", "t0k") is None
    off = admin.authorize("Bearer t0k", None)
    assert off is not None and off.status == 404 and "ARCTIC_SERVE_ADMIN_TOKEN" in off.body["detail"]
    for header in (None, "", "Basic t0k", "Bearer", "Bearer other"):
        reply = admin.authorize(header, "t0k")
        assert reply is not None and reply.status == 401, header
        assert reply.headers and reply.headers["WWW-Authenticate"].startswith("Bearer")
    broken = admin.authorize("Bearer t0k", AdminTokenError("file gone"))
    assert broken is not None and broken.status == 503


def test_put_replaces_and_patch_merges() -> None:
    current = SpeculationCap(2, 8)
    assert admin.parse_cap_body(b'{"hard_cap": 16}', current=current, partial=False) == SpeculationCap(
        None, 16
    )
    assert admin.parse_cap_body(b'{"hard_cap": 16}', current=current, partial=True) == SpeculationCap(2, 16)


@pytest.mark.parametrize(
    ("raw", "loc", "words"),
    [
        (b"nope", ["body"], "invalid JSON"),
        (b"", ["body"], "JSON object"),
        (b'"x"', ["body"], "JSON object"),
        (b'{"soft_cap": -3}', ["body", "soft_cap"], ">= 0"),
    ],
)
def test_bad_bodies_get_field_level_422(raw: bytes, loc: list[str], words: str) -> None:
    reply = admin.parse_cap_body(raw, current=SpeculationCap(), partial=False)
    assert isinstance(reply, admin.Reply) and reply.status == 422
    assert reply.body["detail"][0]["loc"] == loc and words in reply.body["detail"][0]["msg"]


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    app.include_router(build_router())
    return TestClient(app)


def test_routes_are_off_without_a_token(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARCTIC_SERVE_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("ARCTIC_SERVE_ADMIN_TOKEN_FILE", raising=False)
    for method in ("GET", "PUT", "PATCH"):
        resp = client.request(
            method,
            "/arctic/v1/speculation",
            json={"soft_cap": 1},
            headers={"Authorization": "Bearer anything"},
        )
        assert resp.status_code == 404 and "admin API is off" in resp.json()["detail"]


def test_routes_check_the_token_before_anything_else(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCTIC_SERVE_ADMIN_TOKEN", "right")
    assert client.get("/arctic/v1/speculation").status_code == 401
    assert (
        client.put(
            "/arctic/v1/speculation", content=b"garbage", headers={"Authorization": "Bearer wrong"}
        ).status_code
        == 401
    )
    # authorized, but this app has no engine behind it
    assert client.get("/arctic/v1/speculation", headers={"Authorization": "Bearer right"}).status_code == 503


# --- the admin listener: its own port, never the serving port ---------------------------------

STATE = {
    "speculation": {
        "soft_cap": 4,
        "hard_cap": None,
        "method": "ngram",
        "num_speculative_tokens": 3,
        "drafts_in_prefill_steps": True,
        "counters": {"cap_changes": 0},
    },
    "engine_core": {"pid": 1},
    "workers": [],
}


class FakeEngineClient:
    """vLLM's EngineClient as the admin routes use it: collective_rpc answers the engine core's state."""

    async def collective_rpc(self, method: str, kwargs: dict[str, object] | None = None) -> list[object]:
        return [STATE]


def _get(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


async def _serve_both(serving_port: int, admin_port: int) -> dict[str, int]:
    """vLLM's side played by a FastAPI app after ``attach_router`` on ``serving_port``; the plugin's
    ``init_state`` opens the admin port. Returns the status of each request, by name."""
    plugin = ArcticEndpointPlugin()
    app = FastAPI()
    plugin.attach_router(app)
    serving = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=serving_port, log_config=None))
    serving_task = asyncio.create_task(serving.serve())
    await plugin.init_state(FakeEngineClient(), app.state, Namespace(host="127.0.0.1", uds=None))
    while not serving.started:
        await asyncio.sleep(0.01)
    serve, admin = f"http://127.0.0.1:{serving_port}", f"http://127.0.0.1:{admin_port}"
    path = "/arctic/v1/speculation"
    urls = {
        "admin": (admin + path, "t0k"),
        "admin_parallel_wrong_token": (admin + "/arctic/v1/parallel", "wrong"),
        "admin_no_token": (admin + path, None),
        "serving": (serve + path, "t0k"),
        "serving_parallel": (serve + "/arctic/v1/parallel", "t0k"),
        "admin_metrics": (admin + "/metrics", None),
        "admin_docs": (admin + "/docs", None),
    }
    got = {k: await asyncio.to_thread(_get, url, tok) for k, (url, tok) in urls.items()}
    assert plugin.admin_server is not None
    plugin.admin_server.should_exit = serving.should_exit = True
    await serving_task
    return got


def test_admin_api_answers_on_its_own_port_and_not_on_the_serving_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.engine.server import free_port

    serving_port, admin_port = free_port(), free_port()
    monkeypatch.setenv("ARCTIC_SERVE_ENABLED", "1")
    monkeypatch.setenv("ARCTIC_SERVE_ADMIN_TOKEN", "t0k")
    monkeypatch.setenv("ARCTIC_SERVE_ADMIN_PORT", str(admin_port))
    assert asyncio.run(_serve_both(serving_port, admin_port)) == {
        "admin": 200,
        "admin_parallel_wrong_token": 401,
        "admin_no_token": 401,
        "serving": 404,
        "serving_parallel": 404,
        "admin_metrics": 404,
        "admin_docs": 404,
    }


def test_no_token_means_no_admin_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCTIC_SERVE_ENABLED", "1")
    monkeypatch.delenv("ARCTIC_SERVE_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("ARCTIC_SERVE_ADMIN_TOKEN_FILE", raising=False)
    plugin = ArcticEndpointPlugin()

    async def start() -> None:
        await plugin.start_admin(AdminBackend(FakeEngineClient()), Namespace(host="127.0.0.1"))

    asyncio.run(start())
    assert plugin.admin_server is None


def test_a_busy_admin_port_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"admin API's port 127.0.0.1:{port}.*ARCTIC_SERVE_ADMIN_PORT"):
            admin_socket("127.0.0.1", port, reuse_port=False)


@pytest.mark.parametrize(
    ("args", "host"),
    [
        (Namespace(host="0.0.0.0"), "0.0.0.0"),
        (Namespace(host=None), ""),  # vLLM's default: every interface
        (Namespace(host="::1"), "::1"),
        (Namespace(host=None, uds="/run/vllm.sock"), "127.0.0.1"),  # no TCP serving port: loopback
    ],
)
def test_the_admin_port_binds_the_servers_host(args: Namespace, host: str) -> None:
    assert admin_host(args) == host
