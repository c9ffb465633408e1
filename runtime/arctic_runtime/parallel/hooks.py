"""vLLM adapters for Ulysses and Shift Parallelism (installed by ``patches.PATCH_POINTS``).

Front end:
* Arctic Inference's flags (``--ulysses-sequence-parallel-size``, ``--enable-shift-parallel``,
  ``--shift-parallel-threshold``) are added to vLLM's parser and folded into our section of
  ``additional_config`` (``add_cli_args``, ``from_cli_args``);
* before vLLM builds its config, the layout is checked against the model and the engine settings
  (``prepare_engine_args``: one ``InvalidSetting`` naming each flag and rule) and vLLM's tensor
  parallelism is widened to tensor x ulysses ranks; afterwards the compiled graph is split at the
  Ulysses attention op and CUDA graphs are kept piecewise (``finish_engine_config``).

Engine core: every step's mode is counted from the scheduler's output with the same rule the
workers use (``contract.shift_mode``), so metrics and the admin API need no worker round trip.

Workers: the model loader builds the Ulysses model (and the shift model) and hands vLLM an
``ArcticParallelModel`` (``wrap_load_model``); attention layers built for the Ulysses model get one
full-TP rank's heads (``wrap_attention_init``); before each step the runner tells the model how many
tokens are scheduled (``wrap_execute_model``).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from arctic_runtime.contract import (
    ADDITIONAL_CONFIG_KEY,
    ARCTIC_PARALLEL_FLAGS,
    PARALLEL_MODES,
    FieldError,
    InvalidSetting,
    ParallelMode,
    ParallelSettings,
    parse_engine_settings,
    parse_parallel,
    shift_mode,
)
from arctic_runtime.parallel import layout

logger = logging.getLogger("arctic_runtime")

#: Model architectures whose decoder layers run unchanged under Ulysses: every op except vLLM's
#: ``Attention`` works token by token, and attention heads are sharded by vLLM's tensor
#: parallelism. Tested on CPU with Llama (SmolLM2); the others share Llama's layer structure.
SUPPORTED_ARCHITECTURES = frozenset(
    {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}
)
#: Draft methods that need no draft model (a draft model would be built in the wrong layout).
SUPPORTED_SPECULATION = frozenset({"ngram", "suffix"})
#: The custom op that runs Ulysses attention (a graph-splitting op when vLLM compiles the model).
ULYSSES_OP = "arctic::ulysses_attention"
#: vLLM's switch between its V1 and V2 GPU model runners.
V2_RUNNER_ENV = "VLLM_USE_V2_MODEL_RUNNER"
#: vLLM's switch for its ahead-of-time compile cache (see prepare_engine_args).
AOT_COMPILE_ENV = "VLLM_USE_AOT_COMPILE"

#: Our key -> Arctic Inference's flag, and the flag's argparse destination.
_FLAG_OF = {key: flag for flag, key in ARCTIC_PARALLEL_FLAGS.items()}
_DESTS = {key: flag.lstrip("-").replace("-", "_") for key, flag in _FLAG_OF.items()}


def _name(key: str) -> str:
    """A parallel setting as the user may have written it: the flag and our key."""
    ours = f"additional_config.{ADDITIONAL_CONFIG_KEY}.parallel.{key}"
    return f"{_FLAG_OF[key]} ({ours})" if key in _FLAG_OF else ours


def with_flag_names(error: InvalidSetting) -> InvalidSetting:
    """The same errors, each parallel field named by its Arctic flag too (the user may have used
    either spelling)."""
    prefix = f"additional_config.{ADDITIONAL_CONFIG_KEY}.parallel."
    return InvalidSetting(
        [
            FieldError(_name(e.field.removeprefix(prefix)), e.message) if e.field.startswith(prefix) else e
            for e in error.errors
        ]
    )


# --------------------------------------------------------------------------------------------
# Front end: flags
# --------------------------------------------------------------------------------------------


def add_parallel_arguments(parser: Any) -> None:
    group = parser.add_argument_group(
        "arctic-serve: Ulysses / Shift Parallelism",
        "Arctic Inference's flags; the engine runs tensor x ulysses ranks.",
    )
    group.add_argument(
        "--ulysses-sequence-parallel-size",
        type=int,
        default=None,
        help="Ulysses sequence-parallel size (default 1: off).",
    )
    group.add_argument(
        "--enable-shift-parallel",
        action="store_true",
        default=None,
        help="Full tensor parallelism for steps of at most --shift-parallel-threshold tokens, "
        "Ulysses x tensor for larger ones (needs --ulysses-sequence-parallel-size > 1).",
    )
    group.add_argument(
        "--shift-parallel-threshold",
        type=int,
        default=None,
        help="Scheduled tokens per step at or below which a step runs in full tensor parallelism "
        "(default 512).",
    )


def wrap_add_cli_args(original: Callable[..., Any]) -> Callable[..., Any]:
    def add_cli_args(parser: Any) -> Any:
        parser = original(parser)
        add_parallel_arguments(parser)
        return parser

    return add_cli_args


def fold_parallel_flags(
    args: argparse.Namespace, additional_config: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``additional_config`` with the parallel flags given on the command line folded in; a flag
    that contradicts the same setting in ``--additional-config`` is an error naming both."""
    additional = dict(additional_config or {})
    section = dict(additional.get(ADDITIONAL_CONFIG_KEY) or {})
    parallel = dict(section.get("parallel") or {})
    errors = []
    for key, dest in _DESTS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if key in parallel and parallel[key] != value:
            errors.append(
                FieldError(
                    _name(key),
                    f"the flag says {value!r}, --additional-config says {parallel[key]!r}; "
                    "set it in one place",
                )
            )
        parallel[key] = value
    if errors:
        raise InvalidSetting(errors)
    if parallel:
        section["parallel"] = parallel
        additional[ADDITIONAL_CONFIG_KEY] = section
    return additional


def wrap_from_cli_args(original: Callable[..., Any]) -> Callable[..., Any]:
    def from_cli_args(cls: Any, args: argparse.Namespace) -> Any:
        engine_args = original(cls, args)
        engine_args.additional_config = fold_parallel_flags(args, engine_args.additional_config)
        return engine_args

    return from_cli_args


# --------------------------------------------------------------------------------------------
# Front end: engine config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineFacts:
    """What the layout checks need to know about the engine and the model."""

    tensor: int
    pipeline: int = 1
    data: int = 1
    expert_parallel: bool = False
    lora: bool = False
    vllm_sequence_parallel: bool = False
    speculation_method: str | None = None
    architectures: tuple[str, ...] = ()
    num_heads: int = 0
    num_kv_heads: int = 0


def layout_errors(settings: ParallelSettings, facts: EngineFacts) -> list[FieldError]:
    """Every reason this engine cannot run ``settings`` (empty: it can). Pure."""
    if not settings.enabled:
        return []
    errors = []
    ulysses = _name("ulysses")
    for value, flag in ((facts.pipeline, "--pipeline-parallel-size"), (facts.data, "--data-parallel-size")):
        if value > 1:
            errors.append(FieldError(ulysses, f"cannot be combined with {flag} {value} (one engine per pod)"))
    if facts.expert_parallel:
        errors.append(FieldError(ulysses, "cannot be combined with --enable-expert-parallel"))
    if facts.lora:
        errors.append(FieldError(ulysses, "cannot be combined with --enable-lora"))
    if facts.vllm_sequence_parallel:
        errors.append(
            FieldError(
                ulysses, "cannot be combined with vLLM's own sequence parallelism (pass_config.enable_sp)"
            )
        )
    if facts.speculation_method is not None and facts.speculation_method not in SUPPORTED_SPECULATION:
        errors.append(
            FieldError(
                ulysses,
                f"speculative method {facts.speculation_method!r} needs a draft model; with Ulysses use "
                f"{' or '.join(sorted(SUPPORTED_SPECULATION))}",
            )
        )
    unsupported = [a for a in facts.architectures if a not in SUPPORTED_ARCHITECTURES]
    if unsupported or not facts.architectures:
        errors.append(
            FieldError(
                ulysses,
                f"model architecture {', '.join(unsupported) or 'unknown'} is not supported with Ulysses; "
                f"supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}",
            )
        )
    for message in layout.head_layout_errors(
        facts.num_heads, facts.num_kv_heads, facts.tensor, settings.ulysses
    ):
        errors.append(FieldError(ulysses, f"{message} (tensor {facts.tensor} x ulysses {settings.ulysses})"))
    return errors


def _facts(engine_args: Any, tensor: int) -> EngineFacts:
    model_config = engine_args.create_model_config()
    hf = model_config.hf_text_config
    spec = engine_args.speculative_config
    method = spec.get("method") if isinstance(spec, Mapping) else getattr(spec, "method", None)
    return EngineFacts(
        tensor=tensor,
        pipeline=int(engine_args.pipeline_parallel_size),
        data=int(engine_args.data_parallel_size),
        expert_parallel=bool(engine_args.enable_expert_parallel),
        lora=bool(engine_args.enable_lora),
        vllm_sequence_parallel=_vllm_sp(engine_args.compilation_config),
        speculation_method=None if method is None else str(method),
        architectures=tuple(model_config.architectures or ()),
        num_heads=int(hf.num_attention_heads),
        num_kv_heads=int(model_config.get_total_num_kv_heads()),
    )


def _vllm_sp(compilation_config: Any) -> bool:
    """Whether vLLM's own sequence-parallelism compile pass is on (a dict or a CompilationConfig)."""
    passes = (
        compilation_config.get("pass_config")
        if isinstance(compilation_config, Mapping)
        else getattr(compilation_config, "pass_config", None)
    )
    value = passes.get("enable_sp") if isinstance(passes, Mapping) else getattr(passes, "enable_sp", False)
    return bool(value)


def prepare_engine_args(engine_args: Any) -> ParallelSettings:
    """Check the layout and widen vLLM's tensor parallelism to tensor x ulysses (idempotent: the
    tensor size as given is recorded in our section and reused on a second call)."""
    settings = parse_engine_settings(engine_args.additional_config).parallel
    if not settings.enabled:
        return settings
    tensor = settings.tensor if settings.tensor is not None else int(engine_args.tensor_parallel_size)
    errors = layout_errors(settings, _facts(engine_args, tensor))
    if errors:
        raise InvalidSetting(errors)
    additional = dict(engine_args.additional_config)
    section = dict(additional[ADDITIONAL_CONFIG_KEY])
    section["parallel"] = {**section["parallel"], "tensor": tensor}
    additional[ADDITIONAL_CONFIG_KEY] = section
    engine_args.additional_config = additional
    engine_args.tensor_parallel_size = settings.world_size(tensor)
    if os.environ.get(V2_RUNNER_ENV, "0") not in ("0", "false", "False"):
        raise InvalidSetting(
            [FieldError(V2_RUNNER_ENV, "Ulysses runs on vLLM's V1 model runner; unset it or set it to 0")]
        )
    # vLLM 0.26 picks its V2 model runner on GPU when nothing needs V1; our runner hook is V1's.
    # The engine core and workers inherit the variable (they start after this, from this process).
    os.environ[V2_RUNNER_ENV] = "0"
    # vLLM's AOT compile cache is keyed by the config and the model class, not by the model's
    # prefix, so the Ulysses model and the shift model (same class, same config) would share one
    # artifact and a restart could load one model's graph for the other. The non-AOT compile cache
    # is kept per prefix.
    if os.environ.get(AOT_COMPILE_ENV) == "1":
        logger.warning(
            "arctic-serve: %s=1 is ignored with Ulysses (one artifact for two models)", AOT_COMPILE_ENV
        )
    os.environ[AOT_COMPILE_ENV] = "0"
    logger.info(
        "arctic-serve: tensor %d x ulysses %d = %d ranks%s",
        tensor,
        settings.ulysses,
        settings.world_size(tensor),
        f", shift to full tensor parallelism at <= {settings.shift_threshold} tokens"
        if settings.shift
        else "",
    )
    return parse_parallel(section["parallel"])


def finish_engine_config(vllm_config: Any, settings: ParallelSettings) -> None:
    """With Ulysses and vLLM's compiler on: split compiled graphs at the Ulysses attention op (its
    all-to-all runs between graph pieces) and keep CUDA graphs piecewise (a full graph would freeze
    one mode and the all-to-all into the replay)."""
    if not settings.enabled:
        return
    from vllm.config.compilation import CompilationMode, CUDAGraphMode

    compilation = vllm_config.compilation_config
    if compilation.mode != CompilationMode.VLLM_COMPILE:
        return
    if compilation.splitting_ops is not None and ULYSSES_OP not in compilation.splitting_ops:
        compilation.splitting_ops.append(ULYSSES_OP)
    mode = compilation.cudagraph_mode
    if mode is not None and mode.has_full_cudagraphs():
        logger.info("arctic-serve: CUDA graphs are piecewise with Ulysses (was %s)", mode.name)
        compilation.cudagraph_mode = CUDAGraphMode.PIECEWISE


# --------------------------------------------------------------------------------------------
# Engine core: the mode mix
# --------------------------------------------------------------------------------------------


@dataclass
class ParallelState:
    """The engine core's view of the parallel layout and the modes its steps ran in."""

    settings: ParallelSettings
    tensor: int
    steps: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARALLEL_MODES, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARALLEL_MODES, 0))
    draft_steps: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARALLEL_MODES, 0))
    last_mode: ParallelMode | None = None

    def record(self, scheduled_tokens: int, verifies_drafts: bool) -> None:
        """Count one scheduler step (``verifies_drafts``: some request carries draft tokens)."""
        if not self.settings.enabled or scheduled_tokens <= 0:
            return
        mode = shift_mode(scheduled_tokens, self.settings)
        self.steps[mode] += 1
        self.tokens[mode] += scheduled_tokens
        self.draft_steps[mode] += int(verifies_drafts)
        self.last_mode = mode

    def as_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "tensor": self.tensor,
            "ulysses": s.ulysses,
            "shift": s.shift,
            "shift_threshold": s.shift_threshold if s.shift else None,
            "last_mode": self.last_mode,
            "steps": dict(self.steps),
            "tokens": dict(self.tokens),
            "draft_steps": dict(self.draft_steps),
        }


def parallel_state(scheduler: Any) -> ParallelState:
    state: ParallelState | None = getattr(scheduler, "_arctic_parallel", None)
    if state is None:
        config = scheduler.vllm_config
        settings = parse_engine_settings(config.additional_config).parallel
        tensor = settings.tensor or int(config.parallel_config.tensor_parallel_size)
        state = ParallelState(settings=settings, tensor=tensor)
        scheduler._arctic_parallel = state
    return state


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------


def wrap_attention_init(original: Callable[..., Any]) -> Callable[..., Any]:
    """Attention layers built for the Ulysses model hold one full-TP rank's heads."""

    def __init__(
        self: Any,
        num_heads: int,
        head_size: int,
        scale: float,
        num_kv_heads: int | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        from arctic_runtime.parallel.ulysses import attention_heads

        num_heads, num_kv_heads = attention_heads(num_heads, num_kv_heads)
        original(self, num_heads, head_size, scale, num_kv_heads, *args, **kwargs)

    return __init__


def wrap_load_model(original: Callable[..., Any]) -> Callable[..., Any]:
    """BaseModelLoader.load_model: with Ulysses, the target model becomes an ArcticParallelModel."""

    def load_model(self: Any, vllm_config: Any, model_config: Any, prefix: str = "") -> Any:
        settings = parse_engine_settings(vllm_config.additional_config).parallel
        if not settings.enabled or model_config is not vllm_config.model_config or prefix:
            return original(self, vllm_config, model_config, prefix)
        from arctic_runtime.parallel import ulysses

        if vllm_config.use_v2_model_runner:  # the front end sets V1; someone overrode it
            raise RuntimeError(f"Ulysses needs vLLM's V1 model runner: set {V2_RUNNER_ENV}=0")
        groups = ulysses.init_groups(settings)
        with ulysses.construction(groups):
            base = original(self, vllm_config, model_config, prefix)
        device = next(base.parameters()).device
        layers = ulysses.wrap_attention(base, groups, model_config.get_total_num_kv_heads(), device)
        shift = None
        if settings.shift:
            shift = original(self, vllm_config, model_config, ulysses.SHIFT_PREFIX)
            ulysses.share_attention(shift, layers, vllm_config.compilation_config.static_forward_context)
        model = ulysses.ArcticParallelModel(vllm_config, base, shift, groups, settings)
        model.weight_bytes = (
            ulysses.parameter_bytes(base),
            0 if shift is None else ulysses.parameter_bytes(shift),
        )
        if groups.full.rank_in_group == 0:
            gib = [b / 2**30 for b in model.weight_bytes]
            logger.info(
                "arctic-serve: weights per GPU %.2f GiB: Ulysses model %.2f GiB (W/%d) + shift model "
                "%.2f GiB (W/%d)",
                sum(gib),
                gib[0],
                groups.tp,
                gib[1],
                groups.tp * groups.sp,
            )
        return model

    return load_model


def arctic_model(runner: Any) -> Any:
    """The runner's ArcticParallelModel, under any wrapper vLLM put around it (None without)."""
    from arctic_runtime.parallel.ulysses import ArcticParallelModel

    model = getattr(runner, "model", None)
    for _ in range(4):
        if isinstance(model, ArcticParallelModel):
            return model
        model = getattr(model, "runnable", None) or getattr(model, "model", None)
    return None


def wrap_execute_model(original: Callable[..., Any]) -> Callable[..., Any]:
    def execute_model(self: Any, scheduler_output: Any, intermediate_tensors: Any = None) -> Any:
        model = arctic_model(self)
        if model is None:
            return original(self, scheduler_output, intermediate_tensors)
        model.step_tokens = int(scheduler_output.total_num_scheduled_tokens)
        try:
            return original(self, scheduler_output, intermediate_tensors)
        finally:
            model.step_tokens = None

    return execute_model


def worker_parallel_state(runner: Any) -> dict[str, Any] | None:
    """This worker's part of the layout (rank coordinates, weights) or None without Ulysses."""
    model = arctic_model(runner)
    if model is None:
        return None
    groups = model.groups
    ulysses_bytes, shift_bytes = model.weight_bytes
    return {
        "rank": int(groups.full.rank_in_group),
        "tensor_rank": groups.tp_rank,
        "sequence_rank": groups.sp_rank,
        "weights_bytes": {"ulysses": ulysses_bytes, "shift": shift_bytes},
        "last_mode": model.last_mode,
    }
