"""``arctic-serve serve``: start vLLM's OpenAI server with the plugin enabled, on CPU or GPU.

Planning (what command, which environment) is a pure function, ``plan_server``; ``run_server`` is
the I/O around it: checks that fail with one line, the child process, the readiness wait and the
banner that tells the user how to call the server and change the speculation cap.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arctic_runtime.settings import ENV_ADMIN_TOKEN, ENV_ADMIN_TOKEN_FILE, ENV_ENABLED

GENERAL_PLUGIN = "arctic_serve"
ADMIN_PLUGIN = "arctic_serve_admin"
DEFAULT_SERVED_NAME = "smollm2-135m-instruct"


class UserError(RuntimeError):
    """A problem the user can fix; printed as one line, no traceback."""


@dataclass(frozen=True)
class ServeOptions:
    model: str
    served_model_name: str
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "cpu"  # "cpu" or "gpu"
    speculation: str = "ngram"  # "ngram", "suffix" or "none"
    num_speculative_tokens: int = 3
    soft_cap: int | None = None
    hard_cap: int | None = None
    admin_token_file: str | None = None
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerPlan:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


#: Engine settings for a 2-core CPU machine, each measured (../docs/cpu.md): float32 because bf16
#: compute on CPU degrades this model's output; eager because torch.compile costs 50+ s at start;
#: 512 batched tokens because warm-up then takes 10-30 s instead of 60+.
CPU_ENGINE_ARGS = (
    "--dtype",
    "float32",
    "--enforce-eager",
    "--max-model-len",
    "1024",
    "--max-num-batched-tokens",
    "512",
)
#: GiB of KV cache on CPU (the default, 4 GiB, is more than this model needs).
CPU_KV_CACHE_GIB = "1"


def _plugins_allowlist(current: str | None) -> str:
    names = [n for n in (current or "").split(",") if n]
    for name in (GENERAL_PLUGIN, ADMIN_PLUGIN):
        if name not in names:
            names.append(name)
    return ",".join(names)


#: ``--num-speculative-tokens`` when not given, per ``--speculation``.
DEFAULT_SPEC_TOKENS = {"ngram": 3, "suffix": 16}
#: Suffix decoding's tree depth for ``arctic-serve serve``: a 48-token match plus a 16-token draft.
SUFFIX_TREE_DEPTH = 64


def speculative_config(opts: ServeOptions) -> dict[str, Any] | None:
    if opts.speculation == "none":
        return None
    config: dict[str, Any] = {
        "method": opts.speculation,
        "num_speculative_tokens": opts.num_speculative_tokens,
    }
    if opts.speculation == "ngram":
        config.update(prompt_lookup_max=4, prompt_lookup_min=2)
    elif opts.speculation == "suffix":
        config["suffix_decoding_max_tree_depth"] = SUFFIX_TREE_DEPTH
    if opts.soft_cap is not None:
        config["disable_by_batch_size"] = opts.soft_cap
    if opts.hard_cap is not None:
        config["hard_disable_by_batch_size"] = opts.hard_cap
    return config


def plan_server(
    opts: ServeOptions, environ: Mapping[str, str], python: str, iomp_library: str | None
) -> ServerPlan:
    """The vLLM server command and the environment additions for ``opts`` (pure)."""
    argv = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        opts.model,
        "--served-model-name",
        opts.served_model_name,
        "--host",
        opts.host,
        "--port",
        str(opts.port),
    ]
    if opts.device == "cpu":
        argv += CPU_ENGINE_ARGS
    spec = speculative_config(opts)
    if spec is not None:
        argv += ["--speculative-config", json.dumps(spec, separators=(",", ":"))]
    argv += list(opts.extra_args)
    env = {
        ENV_ENABLED: "1",
        "VLLM_PLUGINS": _plugins_allowlist(environ.get("VLLM_PLUGINS")),
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
    }
    if opts.admin_token_file and not environ.get(ENV_ADMIN_TOKEN):
        env[ENV_ADMIN_TOKEN_FILE] = opts.admin_token_file
    if opts.device == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", environ.get("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB))
        preload = environ.get("LD_PRELOAD", "")
        if iomp_library and "libiomp" not in preload:
            # vLLM's CPU worker warns that speculative decoding without Intel OpenMP is slow; measured
            # here it halves the engine's warm-up too (60 s -> 30 s).
            env["LD_PRELOAD"] = ":".join(p for p in (iomp_library, preload) if p)
    return ServerPlan(argv=argv, env=env)


def find_iomp(prefix: str = sys.prefix) -> str | None:
    """The Intel OpenMP runtime that the vllm-cpu requirements install into the environment."""
    path = Path(prefix) / "lib" / "libiomp5.so"
    return str(path) if path.exists() else None


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port}: {exc.strerror} (another server there? use --port)"
            ) from exc


def check_vllm() -> tuple[str, str]:
    """(vLLM version, "cpu" or "gpu"), or a one-line UserError."""
    from arctic_runtime.patches import SUPPORTED_VLLM
    from arctic_runtime.plugin import UnsupportedVLLM, check_vllm_version

    try:
        import vllm
    except ImportError as exc:
        raise UserError(f"vLLM is not installed ({exc}); run `make setup`") from exc
    version = str(vllm.__version__)
    try:
        check_vllm_version(version, SUPPORTED_VLLM)
    except UnsupportedVLLM as exc:
        raise UserError(str(exc.code)) from exc
    from vllm.platforms import current_platform

    return version, "cpu" if current_platform.is_cpu() else "gpu"


def ensure_admin_token(cache_dir: Path, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """(token file for the server or None if the user set one, how to read the token)."""
    if environ.get(ENV_ADMIN_TOKEN):
        return None, f"${ENV_ADMIN_TOKEN}"
    if environ.get(ENV_ADMIN_TOKEN_FILE):
        return environ[ENV_ADMIN_TOKEN_FILE], f"$(cat {environ[ENV_ADMIN_TOKEN_FILE]})"
    path = cache_dir / "admin-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    return str(path), f"$(cat {path})"


def banner(opts: ServeOptions, token_hint: str) -> str:
    base = f"http://{opts.host}:{opts.port}"
    chat = json.dumps(
        {
            "model": opts.served_model_name,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 32,
        }
    )
    lines = [
        "",
        f"arctic-serve: ready on {base} (model {opts.served_model_name}, speculation {opts.speculation})",
        "  chat:     curl -s " + base + "/v1/chat/completions -H 'Content-Type: application/json' \\",
        f"              -d '{chat}'",
        f'  cap:      curl -s -H "Authorization: Bearer {token_hint}" {base}/arctic/v1/speculation',
        f'  set cap:  curl -s -X PUT -H "Authorization: Bearer {token_hint}" '
        f"-H 'Content-Type: application/json' \\\n              -d '{{\"soft_cap\": 4, \"hard_cap\": 16}}' "
        f"{base}/arctic/v1/speculation",
        f"  metrics:  curl -s {base}/metrics | grep -E '^(arctic_|vllm:spec_decode)'",
        "  stop:     Ctrl-C",
        "",
    ]
    return "\n".join(lines)


def wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise UserError(f"the vLLM server exited with code {code} while starting (its log is above)")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    raise UserError(f"the vLLM server did not become healthy within {timeout_s:.0f} s")


def run_server(opts: ServeOptions, cache_dir: Path, startup_timeout_s: float = 900.0) -> int:
    token_file, token_hint = ensure_admin_token(cache_dir, os.environ)
    opts = ServeOptions(**{**opts.__dict__, "admin_token_file": token_file})
    plan = plan_server(opts, os.environ, sys.executable, find_iomp() if opts.device == "cpu" else None)
    print(
        f"arctic-serve: starting vLLM on {opts.device.upper()} (first start ~1 min on 2 CPU cores)",
        file=sys.stderr,
        flush=True,
    )
    proc = subprocess.Popen(plan.argv, env={**os.environ, **plan.env})

    def forward(signum: int, _frame: Any) -> None:
        proc.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    try:
        wait_healthy(proc, f"http://{opts.host}:{opts.port}/health", startup_timeout_s)
    except UserError:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        raise
    print(banner(opts, token_hint), file=sys.stderr, flush=True)
    return proc.wait()


def parse_extra(args: Sequence[str]) -> tuple[str, ...]:
    return tuple(a for a in args if a != "--")
