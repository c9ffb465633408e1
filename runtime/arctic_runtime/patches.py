"""Every vLLM symbol the plugin touches, in one place.

A vLLM upgrade is reviewed here: each ``PatchPoint`` names its target, what we do to it, the
parameters we rely on, the process it matters in and why we need it. ``tests/engine/
test_patch_registry.py`` resolves every target in the installed vLLM and checks its signature, so a
renamed method or a changed signature fails in one obvious test instead of deep inside a server.

The rest of the runtime never reaches into vLLM internals: hooks receive vLLM objects from here.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from arctic_runtime import hooks

#: The vLLM minor release these patch points were written and tested against.
SUPPORTED_VLLM = "0.26"

Action = Literal["wrap", "replace", "add"]


@dataclass(frozen=True)
class PatchPoint:
    """One vLLM symbol we wrap (keep the original, run ours around it), replace (ours instead of
    the original, which is kept for inspection but not called) or add (a new method)."""

    target: str  # "module.path:Class.attribute"
    action: Action
    #: wrap/replace: the original's parameter names, in order, that our code relies on.
    #: add: the parameter names of the method we add.
    params: tuple[str, ...]
    process: str  # where it runs: "front end", "engine core" or "worker"
    reason: str
    #: wrap/replace: takes the original, returns the replacement. add: the method itself.
    implementation: Callable[..., Any]

    @property
    def module(self) -> str:
        return self.target.split(":", 1)[0]

    @property
    def owner_path(self) -> str:
        return self.target.split(":", 1)[1].rsplit(".", 1)[0]

    @property
    def attribute(self) -> str:
        return self.target.rsplit(".", 1)[1]


PATCH_POINTS: tuple[PatchPoint, ...] = (
    PatchPoint(
        target="vllm.engine.arg_utils:EngineArgs.create_engine_config",
        action="wrap",
        params=("self", "usage_context", "headless"),
        process="front end",
        reason=(
            "Accept Arctic Inference's disable_by_batch_size / hard_disable_by_batch_size inside "
            "speculative_config (vLLM's SpeculativeConfig rejects unknown keys), validate them, and "
            "carry them to every process in additional_config['arctic']."
        ),
        implementation=hooks.wrap_create_engine_config,
    ),
    PatchPoint(
        target="vllm.v1.core.sched.scheduler:Scheduler.schedule",
        action="wrap",
        params=("self", "throttle_prefills"),
        process="engine core",
        reason=(
            "The speculation cap: before each step, drop the draft tokens of the running requests "
            "the soft/hard cap excludes, and count steps and requests for the arctic_* metrics. "
            "Runs before token budgeting and KV allocation, for every draft method and runner."
        ),
        implementation=hooks.wrap_schedule,
    ),
    PatchPoint(
        target="vllm.v1.engine.core:EngineCore.collective_rpc",
        action="wrap",
        params=("self", "method", "timeout", "args", "kwargs"),
        process="engine core",
        reason=(
            "Answer our own RPC names (arctic_get_state, arctic_set_speculation_cap) in the engine "
            "core, between steps, then forward the cap to the workers. collective_rpc is the public "
            "way an API-server plugin reaches the engine, for every engine client type."
        ),
        implementation=hooks.wrap_engine_core_collective_rpc,
    ),
    PatchPoint(
        target="vllm.v1.worker.worker_base:WorkerBase.arctic_worker_set_speculation_cap",
        action="add",
        params=("self", "soft_cap", "hard_cap"),
        process="worker",
        reason="Receive a new speculation cap in each worker (reached through collective_rpc).",
        implementation=hooks.worker_set_speculation_cap,
    ),
    PatchPoint(
        target="vllm.v1.worker.worker_base:WorkerBase.arctic_worker_state",
        action="add",
        params=("self",),
        process="worker",
        reason="Report the worker's pid, plugin state and cap (proves the plugin runs there).",
        implementation=hooks.worker_state,
    ),
    PatchPoint(
        target="vllm.v1.worker.gpu_model_runner:GPUModelRunner.propose_draft_token_ids",
        action="wrap",
        params=(
            "self",
            "scheduler_output",
            "sampled_token_ids",
            "sampling_metadata",
            "hidden_states",
            "sample_hidden_states",
            "aux_hidden_states",
            "spec_decode_metadata",
            "common_attn_metadata",
            "slot_mappings",
        ),
        process="worker",
        reason=(
            "Skip the n-gram proposer's CPU work in steps where the hard cap holds for the whole "
            "batch: the scheduler would drop every draft anyway. Only stateless proposers are "
            "skipped; suffix decoding is told to update its tries without drafting."
        ),
        implementation=hooks.wrap_propose_draft_token_ids,
    ),
    PatchPoint(
        target="vllm.config.speculative:SpeculativeConfig._validate_suffix_decoding",
        action="replace",
        params=("self",),
        process="front end",
        reason=(
            "method 'suffix' is served by our implementation: drop vLLM's arctic_inference "
            "requirement, check the suffix keys with errors that name them, and default "
            "num_speculative_tokens so the tree keeps room for the match."
        ),
        implementation=hooks.replace_validate_suffix_decoding,
    ),
    PatchPoint(
        target="vllm.v1.spec_decode.suffix_decoding:SuffixDecodingProposer.__init__",
        action="replace",
        params=("self", "vllm_config"),
        process="worker",
        reason="Build our suffix drafter (arctic_runtime.suffix) from vLLM's suffix keys.",
        implementation=hooks.replace_suffix_proposer_init,
    ),
    PatchPoint(
        target="vllm.v1.spec_decode.suffix_decoding:SuffixDecodingProposer.propose",
        action="replace",
        params=("self", "num_speculative_tokens", "input_batch", "sampled_token_ids", "slot_mappings"),
        process="worker",
        reason=(
            "Draft with our suffix cache: keep every request's trie equal to prompt + output "
            "(resumed requests included), honour the live cap, never draft past max_model_len."
        ),
        implementation=hooks.replace_suffix_proposer_propose,
    ),
)


class PatchError(RuntimeError):
    """A registered target is missing or differs from what the registry expects."""


def _resolve_owner(point: PatchPoint) -> Any:
    try:
        owner: Any = importlib.import_module(point.module)
    except ImportError as exc:
        raise PatchError(f"{point.target}: module {point.module} not importable ({exc})") from exc
    for part in point.owner_path.split("."):
        if not hasattr(owner, part):
            raise PatchError(f"{point.target}: {part!r} not found in {point.module}")
        owner = getattr(owner, part)
    return owner


def _param_names(func: Callable[..., Any]) -> tuple[str, ...]:
    return tuple(inspect.signature(func).parameters)


def _original(func: Any) -> Any:
    """The vLLM function under our wrapper (or the function itself if unwrapped)."""
    return getattr(func, "__arctic_original__", func)


def check(point: PatchPoint) -> None:
    """Raise PatchError unless ``point`` can be applied to the installed vLLM as registered."""
    owner = _resolve_owner(point)
    current = owner.__dict__.get(point.attribute)
    if point.action in ("wrap", "replace"):
        if current is None:
            raise PatchError(f"{point.target}: not defined on {point.owner_path} (inherited or removed)")
        found = _param_names(_original(current))
        if found != point.params:
            raise PatchError(f"{point.target}: expected parameters {point.params}, vLLM has {found}")
    else:
        if current is not None and getattr(current, "__arctic_patch__", None) != point.target:
            raise PatchError(f"{point.target}: vLLM now defines this name itself; ours would shadow it")
        found = _param_names(point.implementation)
        if found != point.params:
            raise PatchError(
                f"{point.target}: our method has parameters {found}, registry says {point.params}"
            )


def is_applied(point: PatchPoint) -> bool:
    """Whether ``point`` is in place in this process (imports nothing: unimported = unpatched)."""
    owner: Any = sys.modules.get(point.module)
    for part in point.owner_path.split("."):
        owner = getattr(owner, part, None)
    attr = None if owner is None else owner.__dict__.get(point.attribute)
    return getattr(attr, "__arctic_patch__", None) == point.target


def apply(point: PatchPoint) -> bool:
    """Apply one patch point; a second call in the same process is a no-op. Returns True if applied now."""
    check(point)
    if is_applied(point):
        return False
    owner = _resolve_owner(point)
    replacement: Callable[..., Any]
    if point.action in ("wrap", "replace"):
        original = owner.__dict__[point.attribute]
        replacement = functools.wraps(original)(point.implementation(original))
        replacement.__arctic_original__ = original  # type: ignore[attr-defined]
    else:
        replacement = point.implementation
    replacement.__arctic_patch__ = point.target  # type: ignore[attr-defined]
    setattr(owner, point.attribute, replacement)
    return True


def apply_all() -> list[str]:
    """Apply every patch point (check all first, so a mismatch leaves vLLM untouched)."""
    for point in PATCH_POINTS:
        check(point)
    return [point.target for point in PATCH_POINTS if apply(point)]


def applied_targets() -> list[str]:
    return [point.target for point in PATCH_POINTS if is_applied(point)]
