"""Setting a pod's speculation cap through the runtime's admin API.

``put_cap(session, base_url, token, soft_cap, hard_cap)`` sends ``PUT /arctic/v1/speculation`` with
``Authorization: Bearer <token>`` and the body ``{"soft_cap": int|null, "hard_cap": int|null}`` (a
full replace: null means no cap) and returns the caps the engine now has, from its answer. Every
failure is an ``AdminError`` whose message says what to do: 401 (the token in the admin Secret is
not the pod's), 404 (the pod runs without the admin API), 422 (the field errors, one per field),
503 (the engine is not ready), a timeout or a refused connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from arctic_runtime.contract import SPECULATION_PATH


@dataclass(frozen=True)
class EffectiveCap:
    """The caps in effect on the engine after a change (None: no cap)."""

    soft_cap: int | None
    hard_cap: int | None


class AdminError(Exception):
    """A cap could not be set. ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _detail(body: Any) -> str:
    """FastAPI's ``detail``: a string, or a list of {loc, msg} (one per bad field)."""
    if not isinstance(body, dict):
        return str(body)[:300]
    detail = body.get("detail", body)
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = [str(p) for p in item.get("loc") or [] if p != "body"]
                where = ".".join(loc) or "body"
                parts.append(f"{where}: {item.get('msg', item)}")
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)[:300]


def _cap(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdminError(f"unexpected answer: {key} is {value!r}, not an integer or null")
    return value


def _error_for(status: int, body: Any, url: str) -> AdminError:
    detail = _detail(body)
    if status == 401:
        return AdminError(
            f"401 Unauthorized from {url}: the admin token was rejected ({detail}); the pod reads it "
            "from the <name>-admin Secret at startup, so a pod started before the Secret changed "
            "keeps the old one",
            status,
        )
    if status == 404:
        return AdminError(
            f"404 from {url}: the pod serves no admin API ({detail}); it needs the arctic-serve "
            "runtime with ARCTIC_SERVE_ADMIN_TOKEN_FILE set (the operator's pod template sets it)",
            status,
        )
    if status == 422:
        return AdminError(f"422 from {url}: the engine rejected the cap: {detail}", status)
    if status == 503:
        return AdminError(f"503 from {url}: the engine is not ready: {detail}", status)
    return AdminError(f"HTTP {status} from {url}: {detail}", status)


async def put_cap(
    session: aiohttp.ClientSession,
    base_url: str,
    token: str,
    soft_cap: int | None,
    hard_cap: int | None,
    *,
    timeout_s: float = 5.0,
) -> EffectiveCap:
    """Replace the pod's caps; the engine's caps afterwards, or AdminError."""
    url = base_url.rstrip("/") + SPECULATION_PATH
    try:
        async with session.put(
            url,
            json={"soft_cap": soft_cap, "hard_cap": hard_cap},
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as response:
            try:
                body: Any = await response.json(content_type=None)
            except ValueError:
                body = (await response.text())[:300]
            if response.status != 200:
                raise _error_for(response.status, body, url)
    except AdminError:
        raise
    except TimeoutError:
        raise AdminError(f"timeout: no answer from {url} within {timeout_s:g}s") from None
    except aiohttp.ClientConnectorError as exc:
        cause = exc.os_error.strerror or str(exc.os_error)
        raise AdminError(f"cannot connect to {url}: {cause}") from None
    except aiohttp.ClientError as exc:
        raise AdminError(f"request to {url} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(body, dict):
        raise AdminError(f"unexpected answer from {url}: {str(body)[:200]!r} is not a JSON object", 200)
    return EffectiveCap(soft_cap=_cap(body, "soft_cap"), hard_cap=_cap(body, "hard_cap"))
