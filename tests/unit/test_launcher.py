"""What ``arctic-serve serve`` runs, and its one-line errors."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from arctic_runtime import launcher
from arctic_runtime.launcher import ServeOptions, UserError, plan_server


def opts(**kw: object) -> ServeOptions:
    base: dict[str, object] = {"model": "/m", "served_model_name": "m"}
    base.update(kw)
    return ServeOptions(**base)  # type: ignore[arg-type]


def arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_cpu_plan() -> None:
    plan = plan_server(
        opts(soft_cap=4, hard_cap=16, admin_token_file="/t"), {}, "/py", "/venv/lib/libiomp5.so"
    )
    assert plan.argv[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"]
    assert arg(plan.argv, "--dtype") == "float32" and "--enforce-eager" in plan.argv
    assert (arg(plan.argv, "--host"), arg(plan.argv, "--port")) == ("127.0.0.1", "8000")
    spec = json.loads(arg(plan.argv, "--speculative-config"))
    assert spec == {
        "method": "ngram",
        "num_speculative_tokens": 3,
        "prompt_lookup_max": 4,
        "prompt_lookup_min": 2,
    }
    # the caps travel in the plugin's own section, not in Arctic's spelling inside vLLM's config
    assert json.loads(arg(plan.argv, "--additional-config")) == {
        "arctic": {"speculation": {"soft_cap": 4, "hard_cap": 16}}
    }
    assert plan.env["ARCTIC_SERVE_ENABLED"] == "1"
    assert plan.env["VLLM_PLUGINS"] == "arctic_serve,arctic_serve_admin"
    assert plan.env["ARCTIC_SERVE_ADMIN_TOKEN_FILE"] == "/t"
    assert plan.env["ARCTIC_SERVE_ADMIN_PORT"] == "8001"  # the admin API's own port, not --port
    assert plan.env["LD_PRELOAD"] == "/venv/lib/libiomp5.so" and plan.env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_gpu_plan_uses_vllm_defaults_and_passes_extra_args() -> None:
    plan = plan_server(
        opts(device="gpu", speculation="none", extra_args=("--max-num-seqs", "64")), {}, "py", None
    )
    assert "--dtype" not in plan.argv and "--speculative-config" not in plan.argv
    assert "--additional-config" not in plan.argv  # nothing of ours to say: vLLM's defaults
    assert "HF_HUB_OFFLINE" not in plan.env  # a user's model may come from the hub
    assert plan.argv[-2:] == ["--max-num-seqs", "64"]
    assert "LD_PRELOAD" not in plan.env and "VLLM_CPU_KVCACHE_SPACE" not in plan.env


def test_plan_keeps_the_users_plugins_and_token() -> None:
    env = {"VLLM_PLUGINS": "lora_resolver", "ARCTIC_SERVE_ADMIN_TOKEN": "x", "LD_PRELOAD": "/lib/tc.so"}
    plan = plan_server(opts(admin_token_file="/t"), env, "py", "/iomp.so")
    assert plan.env["VLLM_PLUGINS"] == "lora_resolver,arctic_serve,arctic_serve_admin"
    assert "ARCTIC_SERVE_ADMIN_TOKEN_FILE" not in plan.env  # the user's token wins
    assert plan.env["LD_PRELOAD"] == "/iomp.so:/lib/tc.so"


def test_generated_admin_token_is_private_and_stable(tmp_path: Path) -> None:
    path, hint = launcher.ensure_admin_token(tmp_path, {})
    assert path is not None and hint == f"$(cat {path})"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(Path(path).read_text().strip()) >= 32
    assert launcher.ensure_admin_token(tmp_path, {})[0] == path
    assert launcher.ensure_admin_token(tmp_path, {"ARCTIC_SERVE_ADMIN_TOKEN": "x"}) == (
        None,
        "$ARCTIC_SERVE_ADMIN_TOKEN",
    )


def test_admin_port_comes_from_the_flag_then_the_environment() -> None:
    assert launcher.admin_port_of(None, 8000, {}) == 8001
    assert launcher.admin_port_of(None, 8000, {"ARCTIC_SERVE_ADMIN_PORT": "9001"}) == 9001
    assert launcher.admin_port_of(7001, 8000, {"ARCTIC_SERVE_ADMIN_PORT": "9001"}) == 7001
    with pytest.raises(UserError, match="--admin-port 8000: the admin API needs a port of its own"):
        launcher.admin_port_of(8000, 8000, {})
    with pytest.raises(UserError, match=re.escape("--admin-port 0: must be a port number 1..65535")):
        launcher.admin_port_of(0, 8000, {})
    with pytest.raises(
        UserError, match=re.escape("ARCTIC_SERVE_ADMIN_PORT: must be a port number 1..65535, got 'x'")
    ):
        launcher.admin_port_of(None, 8000, {"ARCTIC_SERVE_ADMIN_PORT": "x"})


def test_the_banner_points_the_admin_calls_at_the_admin_port() -> None:
    text = launcher.banner(opts(port=8100, admin_port=8101), "$T")
    assert "http://127.0.0.1:8101/arctic/v1/speculation" in text
    assert "8100/arctic" not in text and "http://127.0.0.1:8100/v1/chat/completions" in text


def test_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}.*--port"):
            launcher.check_port_free("127.0.0.1", port)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arctic_runtime.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_errors_are_one_line_without_traceback() -> None:
    proc = run_cli("serve", "--soft-cap", "5", "--hard-cap", "2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "arctic-serve: error: --hard-cap: must be >= soft_cap (got hard_cap=2, soft_cap=5); "
        "the hard cap turns drafting off for everyone, so it cannot be below the soft cap"
    ]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = run_cli("serve", "--port", str(busy.getsockname()[1]))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("arctic-serve: error: cannot listen on 127.0.0.1:")
    proc = run_cli("serve", "--model", "/no/such/folder", "--port", "0")
    assert proc.returncode == 2 and "--model /no/such/folder: not a folder here" in proc.stderr
    proc = run_cli("serve", "--enable-shift-parallel", "--port", "0")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "arctic-serve: error: --enable-shift-parallel: Shift Parallelism needs ulysses > 1 "
        "(--ulysses-sequence-parallel-size): it switches between Ulysses x tensor and full tensor "
        "parallelism over the same GPUs"
    ]
    proc = run_cli("serve", "--ulysses-sequence-parallel-size", "2", "--shift-parallel-threshold", "0")
    assert (
        proc.returncode == 2 and "--shift-parallel-threshold: must be a whole number of tokens" in proc.stderr
    )


def test_suffix_plan_sets_the_tree_depth_and_the_cli_defaults_the_draft_cap() -> None:
    plan = plan_server(opts(speculation="suffix"), {}, "py", None)
    spec = json.loads(arg(plan.argv, "--speculative-config"))
    assert spec == {"method": "suffix", "num_speculative_tokens": 16, "suffix_decoding_max_tree_depth": 64}
    from arctic_runtime.cli import build_parser

    args = build_parser().parse_args(["serve", "--speculation", "suffix"])
    assert args.num_speculative_tokens is None  # filled per method: 16 for suffix, 3 for ngram


def test_parallel_flags_become_the_plugins_section_and_cpu_ranks_get_their_own_cores() -> None:
    from arctic_runtime.contract import ParallelSettings

    layout = ParallelSettings(ulysses=2, shift=True, shift_threshold=64)
    plan = plan_server(
        opts(speculation="none", tensor_parallel_size=2, parallel=layout), {}, "py", None, cpus=range(8)
    )
    assert arg(plan.argv, "--tensor-parallel-size") == "2"
    assert json.loads(arg(plan.argv, "--additional-config")) == {
        "arctic": {"parallel": {"ulysses": 2, "shift": True, "shift_threshold": 64}}
    }
    # 4 ranks (tensor 2 x ulysses 2) on 8 CPUs: two cores each
    assert plan.env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1|2-3|4-5|6-7"
    # the user's binding wins
    kept = plan_server(opts(parallel=layout), {"VLLM_CPU_OMP_THREADS_BIND": "0|1"}, "py", None, cpus=range(8))
    assert "VLLM_CPU_OMP_THREADS_BIND" not in kept.env


@pytest.mark.parametrize(
    ("world", "cpus", "binding"),
    [(2, [0, 1], "0|1"), (2, [0, 1, 2], "0|1"), (3, [4, 5], "4|5|4"), (1, [0, 1, 2, 3], "0-3")],
)
def test_cpu_thread_binding(world: int, cpus: list[int], binding: str) -> None:
    assert launcher.cpu_thread_binding(world, cpus) == binding


def test_model_is_a_folder_or_a_hub_id(tmp_path: Path) -> None:
    assert launcher.user_model(str(tmp_path)) == str(tmp_path.resolve())
    assert launcher.user_model("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"
    assert launcher.served_name_of("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"
    assert launcher.served_name_of(str(tmp_path)) == tmp_path.name
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(UserError, match="a file, not a model folder"):
        launcher.user_model(str(tmp_path / "weights.bin"))
    for bad in ("./missing", "a/b/c", "org/ name"):
        with pytest.raises(UserError, match="not a folder here, and not a Hugging Face hub id"):
            launcher.user_model(bad)


def test_only_the_embedded_model_forces_offline_mode() -> None:
    assert plan_server(opts(offline=True), {}, "py", None).env["HF_HUB_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in plan_server(opts(model="org/name"), {}, "py", None).env
