"""Start the real main job (``arctic-serve serve``) on a free loopback port, for engine tests."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arctic_runtime.contract import ADMIN_PREFIX, ENV_ADMIN_PORT
from tests.conftest import engine_env

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    base: str
    """The serving port (OpenAI API, /health, /metrics)."""
    token: str | None
    log: Path
    proc: subprocess.Popen[bytes]
    admin_base: str = ""
    """The admin API's own port (/arctic/v1/...)."""

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "default",
        raw: bytes | None = None,
        timeout: float = 120,
        base: str | None = None,
    ) -> tuple[int, Any]:
        """One request; admin paths (/arctic/...) go to the admin port unless ``base`` is given."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if base is None:
            base = self.admin_base if path.startswith(ADMIN_PREFIX) else self.base
        req = urllib.request.Request(base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        use = self.token if token == "default" else token
        if use is not None:
            req.add_header("Authorization", f"Bearer {use}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read().decode()
                status: int = resp.status
        except urllib.error.HTTPError as err:
            text, status = err.read().decode(), err.code
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def complete(self, prompt: str, max_tokens: int) -> str:
        status, body = self.request(
            "POST",
            "/v1/completions",
            {
                "model": "smollm2-135m-instruct",
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0.0,
            },
            token=None,
        )
        assert status == 200, body
        text: str = body["choices"][0]["text"]
        return text

    def metrics(self) -> dict[str, float]:
        """Every sample on /metrics, keyed by name plus labels as printed."""
        status, text = self.request("GET", "/metrics", token=None)
        assert status == 200
        samples: dict[str, float] = {}
        for line in str(text).splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        metric, _, rest = key.partition("{")
        if metric != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if all(found.get(k) == v for k, v in labels.items()):
            total += value
    return total


@contextmanager
def serve(
    tmp: Path,
    *args: str,
    token: str | None = "test-admin-token",
    ready_timeout: float = 600,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    port, admin_port = free_port(), free_port()
    log = tmp / f"server-{port}.log"
    extra = {"ARCTIC_SERVE_ADMIN_TOKEN": token} if token else {}
    extra[ENV_ADMIN_PORT] = str(admin_port)
    extra.update(env or {})
    env = engine_env(False, **extra)  # the launcher itself enables the plugin for the server
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "arctic_runtime.cli", "serve", "--port", str(port), *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", token, log, proc, f"http://127.0.0.1:{admin_port}")
    try:
        deadline = time.monotonic() + ready_timeout
        while b"arctic-serve: ready on" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start (rc={proc.poll()}):\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
