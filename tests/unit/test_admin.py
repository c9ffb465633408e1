"""Admin API decisions (auth, bodies) and the HTTP routes' behaviour when no engine is involved."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from arctic_runtime.contract import SpeculationCap
from arctic_runtime.server import admin
from arctic_runtime.server.endpoint import build_router
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
