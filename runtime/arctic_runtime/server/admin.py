"""The admin API's request handling, as plain functions (no FastAPI, no vLLM): auth and bodies.

The FastAPI routes in ``endpoint`` are a thin shell around these, so every status code and message
is decided here and unit-tested.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from arctic_runtime.contract import (
    ENV_ADMIN_TOKEN,
    ENV_ADMIN_TOKEN_FILE,
    InvalidSetting,
    ParallelView,
    SpeculationCap,
    SpeculationView,
    parse_cap,
)
from arctic_runtime.settings import AdminTokenError


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] | None = None


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, {"detail": message}, headers)


ADMIN_OFF = _error(
    404,
    f"the arctic-serve admin API is off: start the server with {ENV_ADMIN_TOKEN} or "
    f"{ENV_ADMIN_TOKEN_FILE} set to enable it",
)


def authorize(authorization: str | None, token: str | AdminTokenError | None) -> Reply | None:
    """None if the request may proceed, else the reply to send (404 off, 401 missing/wrong token)."""
    if token is None:
        return ADMIN_OFF
    if isinstance(token, AdminTokenError):
        return _error(503, f"the admin token cannot be read: {token}")
    challenge = {"WWW-Authenticate": 'Bearer realm="arctic-serve admin"'}
    if not authorization:
        return _error(401, "missing 'Authorization: Bearer <token>' header", challenge)
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _error(401, "the Authorization header must be 'Bearer <token>'", challenge)
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _error(401, "wrong admin token", challenge)
    return None


def validation_reply(error: InvalidSetting) -> Reply:
    """422 in FastAPI's shape, one entry per bad field, so clients can show each to the user."""
    return Reply(
        422,
        {
            "detail": [
                {"loc": ["body", *e.field.split(".")], "msg": e.message, "type": "value_error"}
                for e in error.errors
            ]
        },
    )


def parse_cap_body(raw: bytes, *, current: SpeculationCap, partial: bool) -> SpeculationCap | Reply:
    """Parse a PUT (full replace: absent fields = no cap) or PATCH (absent fields kept) body."""
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        return Reply(
            422, {"detail": [{"loc": ["body"], "msg": f"invalid JSON: {exc}", "type": "json_invalid"}]}
        )
    if not isinstance(data, dict):
        return Reply(
            422,
            {
                "detail": [
                    {
                        "loc": ["body"],
                        "msg": 'must be a JSON object such as {"soft_cap": 8, "hard_cap": 32}',
                        "type": "value_error",
                    }
                ]
            },
        )
    try:
        return parse_cap(data, base=current if partial else None)
    except InvalidSetting as exc:
        return validation_reply(exc)


def speculation_view(engine_state: Mapping[str, Any]) -> SpeculationView:
    """The GET/PUT response body, from the engine core's ``arctic_get_state`` answer."""
    spec = dict(engine_state["speculation"])
    return {
        "soft_cap": spec.pop("soft_cap"),
        "hard_cap": spec.pop("hard_cap"),
        "method": spec.pop("method"),
        "num_speculative_tokens": spec.pop("num_speculative_tokens"),
        "drafts_in_prefill_steps": spec.pop("drafts_in_prefill_steps"),
        "counters": spec.pop("counters"),
        "engine_core": engine_state.get("engine_core"),
        "workers": engine_state.get("workers", []),
    }


def parallel_view(engine_state: Mapping[str, Any]) -> ParallelView:
    """The ``GET /arctic/v1/parallel`` body: the engine core's layout and mode mix, and each worker's
    part (rank coordinates, weight bytes, the mode of its last step)."""
    par = engine_state["parallel"]
    return {
        "tensor": par["tensor"],
        "ulysses": par["ulysses"],
        "shift": par["shift"],
        "shift_threshold": par["shift_threshold"],
        "last_mode": par["last_mode"],
        "steps": par["steps"],
        "tokens": par["tokens"],
        "draft_steps": par["draft_steps"],
        "workers": [
            {"pid": w.get("pid"), "rank": w.get("rank"), **(w.get("parallel") or {})}
            for w in engine_state.get("workers", [])
        ],
    }
