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

from arctic_runtime import contract
from arctic_runtime.contract import ENV_ADMIN_PORT, ENV_ADMIN_TOKEN, ENV_ADMIN_TOKEN_FILE, ENV_ENABLED
from arctic_runtime.settings import admin_port

DEFAULT_SERVED_NAME = "smollm2-135m-instruct"


class UserError(RuntimeError):
    """A problem the user can fix; printed as one line, no traceback."""


@dataclass(frozen=True)
class ServeOptions:
    model: str
    served_model_name: str
    host: str = "127.0.0.1"
    port: int = 8000
    admin_port: int = contract.ARCTIC_ADMIN_PORT
    """The admin API's own port (same host); never served on ``port``."""
    device: str = "cpu"  # "cpu" or "gpu"
    speculation: str = "ngram"  # "ngram", "suffix" or "none"
    num_speculative_tokens: int | None = None  # None: the method's default (contract)
    soft_cap: int | None = None
    hard_cap: int | None = None
    tensor_parallel_size: int = 1
    parallel: contract.ParallelSettings = field(default_factory=contract.ParallelSettings)
    offline: bool = False  # the embedded model: never reach for a model hub
    admin_token_file: str | None = None
    extra_args: tuple[str, ...] = ()

    def engine_settings(self) -> contract.EngineSettings:
        return contract.EngineSettings(
            speculation=contract.SpeculationCap(soft_cap=self.soft_cap, hard_cap=self.hard_cap),
            parallel=self.parallel,
        )

    @property
    def world_size(self) -> int:
        """Engine ranks (processes): tensor x ulysses."""
        return self.parallel.world_size(self.tensor_parallel_size)


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


def speculative_config(opts: ServeOptions) -> dict[str, Any] | None:
    return contract.speculative_config(opts.speculation, opts.num_speculative_tokens)


def cpu_thread_binding(world_size: int, cpus: Sequence[int]) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for ``world_size`` CPU ranks: the allowed CPUs split into
    contiguous groups, one per rank (``"0-3|4-7"``). vLLM's automatic NUMA binding refuses more
    ranks than NUMA nodes ("Not enough allowed NUMA nodes"), which is every multi-rank engine on a
    one-socket machine. With fewer CPUs than ranks, ranks share CPUs round-robin."""
    cpus = sorted(cpus)
    if len(cpus) < world_size:
        return "|".join(str(cpus[i % len(cpus)]) for i in range(world_size))
    size = len(cpus) // world_size
    groups = [cpus[i * size : (i + 1) * size] for i in range(world_size)]
    return "|".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups)


def plan_server(
    opts: ServeOptions,
    environ: Mapping[str, str],
    python: str,
    iomp_library: str | None,
    cpus: Sequence[int] = (0,),
) -> ServerPlan:
    """The vLLM server command and the environment additions for ``opts`` (pure). ``cpus``: the
    CPUs this process may run on (CPU engines with several ranks are bound to them)."""
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
    if opts.tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(opts.tensor_parallel_size)]
    spec = speculative_config(opts)
    if spec is not None:
        argv += ["--speculative-config", _json(spec)]
    section = opts.engine_settings().section()
    if section:
        argv += ["--additional-config", _json({contract.ADDITIONAL_CONFIG_KEY: section})]
    argv += list(opts.extra_args)
    env = {
        ENV_ENABLED: "1",
        "VLLM_PLUGINS": contract.vllm_plugins_value(environ.get("VLLM_PLUGINS")),
        "VLLM_NO_USAGE_STATS": "1",
        ENV_ADMIN_PORT: str(opts.admin_port),
    }
    if opts.offline:
        env["HF_HUB_OFFLINE"] = "1"
    if opts.admin_token_file and not environ.get(ENV_ADMIN_TOKEN):
        env[ENV_ADMIN_TOKEN_FILE] = opts.admin_token_file
    if opts.device == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", environ.get("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB))
        preload = environ.get("LD_PRELOAD", "")
        if iomp_library and "libiomp" not in preload:
            # vLLM's CPU worker warns that speculative decoding without Intel OpenMP is slow; measured
            # here it halves the engine's warm-up too (60 s -> 30 s).
            env["LD_PRELOAD"] = ":".join(p for p in (iomp_library, preload) if p)
        if opts.world_size > 1 and not environ.get("VLLM_CPU_OMP_THREADS_BIND"):
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_thread_binding(opts.world_size, cpus)
    return ServerPlan(argv=argv, env=env)


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def find_iomp(prefix: str = sys.prefix) -> str | None:
    """The Intel OpenMP runtime that the vllm-cpu requirements install into the environment."""
    path = Path(prefix) / "lib" / "libiomp5.so"
    return str(path) if path.exists() else None


def user_model(model: str) -> str:
    """``serve --model`` as ``vllm serve`` takes it: an existing folder (made absolute) or a hub id
    (``org/name``). Anything else, such as a path that does not exist, is a one-line error."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        raise UserError(f"--model {model}: a file, not a model folder or a hub id")
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local or not all(part and " " not in part for part in model.split("/")):
        raise UserError(f"--model {model}: not a folder here, and not a Hugging Face hub id (org/name)")
    return model


def served_name_of(model: str) -> str:
    """The served model name vLLM would use for ``model``: a folder's name, or the hub id."""
    path = Path(model)
    return path.name if path.is_absolute() else model


def admin_port_of(flag: int | None, port: int, environ: Mapping[str, str] | None = None) -> int:
    """``serve --admin-port``, else ``$ARCTIC_SERVE_ADMIN_PORT``, else 8001; a UserError when it is
    not a port or is the serving port."""
    if flag is None:
        try:
            flag = admin_port(environ)
        except contract.InvalidSetting as exc:
            raise UserError(str(exc)) from None
    if not 1 <= flag <= 65535:
        raise UserError(f"--admin-port {flag}: must be a port number 1..65535")
    if flag == port:
        raise UserError(f"--admin-port {flag}: the admin API needs a port of its own, not --port's")
    return flag


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port}: {exc.strerror} (another server there? use {flag})"
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
    admin = f"http://{opts.host}:{opts.admin_port}"
    chat = json.dumps(
        {
            "model": opts.served_model_name,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 32,
        }
    )
    lines = [
        "",
        f"arctic-serve: ready on {base} (model {opts.served_model_name}, speculation {opts.speculation}"
        f"{parallel_summary(opts)})",
        "  chat:     curl -s " + base + "/v1/chat/completions -H 'Content-Type: application/json' \\",
        f"              -d '{chat}'",
        f'  cap:      curl -s -H "Authorization: Bearer {token_hint}" {admin}/arctic/v1/speculation',
        f'  set cap:  curl -s -X PUT -H "Authorization: Bearer {token_hint}" '
        f"-H 'Content-Type: application/json' \\\n              -d '{{\"soft_cap\": 4, \"hard_cap\": 16}}' "
        f"{admin}/arctic/v1/speculation",
        f"  metrics:  curl -s {base}/metrics | grep -E '^(arctic_|vllm:spec_decode)'",
        "  stop:     Ctrl-C",
        "",
    ]
    return "\n".join(lines)


def parallel_summary(opts: ServeOptions) -> str:
    """``, tensor 2 x ulysses 2, shift at <= 512 tokens`` (empty without Ulysses)."""
    p = opts.parallel
    if not p.enabled:
        return f", tensor {opts.tensor_parallel_size}" if opts.tensor_parallel_size > 1 else ""
    text = f", tensor {opts.tensor_parallel_size} x ulysses {p.ulysses}"
    return text + (f", shift at <= {p.shift_threshold} tokens" if p.shift else "")


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
    plan = plan_server(
        opts,
        os.environ,
        sys.executable,
        find_iomp() if opts.device == "cpu" else None,
        sorted(os.sched_getaffinity(0)),
    )
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
