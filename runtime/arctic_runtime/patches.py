"""Every vLLM symbol the plugin touches, in one table.

A vLLM upgrade is reviewed here: each ``PatchPoint`` names its target, what we do to it, the
parameters we rely on, the process it matters in and why we need it. ``tests/engine/
test_patch_registry.py`` resolves every target in the installed vLLM and checks its signature, so a
renamed method or a changed signature fails in one obvious test instead of deep inside a server.
How a point is checked and applied is generic and lives in ``patching``; the implementations live in
the modules the table names (``hooks`` for speculation and suffix decoding, ``parallel.hooks`` for
Ulysses and Shift Parallelism) and never import this table.

The rest of the runtime never reaches into vLLM internals (hooks receive vLLM objects from here),
with one exception that patches nothing: SwiftKV's saving path (``swiftkv.model.DirectKernels``)
switches each ``CustomOp``'s ``_forward_method`` to its platform kernel for one step and uses the IR
ops' scoped ``set_priority`` and ``enable_torch_wrap``; ``tests/engine/test_swiftkv.py::
test_saving_path_calls_the_fused_kernels_and_restores_the_compiled_choice`` fails if an upgrade
changes them.
"""

from __future__ import annotations

from arctic_runtime import hooks, patching
from arctic_runtime.parallel import hooks as parallel
from arctic_runtime.patching import PatchError, PatchPoint, check

__all__ = ["PATCH_POINTS", "SUPPORTED_VLLM", "PatchError", "PatchPoint", "apply_all", "check"]

#: The vLLM minor release these patch points were written and tested against.
SUPPORTED_VLLM = "0.26"

PATCH_POINTS: tuple[PatchPoint, ...] = (
    PatchPoint(
        target="vllm.engine.arg_utils:EngineArgs.create_engine_config",
        action="wrap",
        params=("self", "usage_context", "headless"),
        process="front end",
        reason=(
            "Accept Arctic Inference's disable_by_batch_size / hard_disable_by_batch_size inside "
            "speculative_config (vLLM's SpeculativeConfig rejects unknown keys), validate them, and "
            "carry them to every process in additional_config['arctic']. method arctic / "
            "mlp_speculator (draft heads): read and check the speculator against the base model, "
            "hand vLLM method suffix (our proposer) and carry the head in additional_config. "
            "With Ulysses: check the "
            "layout against the model, widen tensor parallelism to tensor x ulysses ranks, and "
            "split compiled graphs at the Ulysses attention op (piecewise CUDA graphs)."
        ),
        implementation=hooks.wrap_create_engine_config,
    ),
    PatchPoint(
        target="vllm.config.vllm:VllmConfig.__post_init__",
        action="wrap",
        params=("self",),
        process="front end",
        reason=(
            "A draft head alone keeps asynchronous scheduling: while its config is built, method "
            "suffix counts among vLLM's EAGLE-like methods (vllm.config.vllm.EagleModelTypes, the "
            "list __post_init__ reads), so vLLM decides and checks as it does for EAGLE."
        ),
        implementation=hooks.wrap_vllm_config_post_init,
    ),
    PatchPoint(
        target="vllm.v1.worker.gpu_model_runner:GPUModelRunner._bookkeeping_sync",
        action="wrap",
        params=(
            "self",
            "scheduler_output",
            "sampler_output",
            "logits",
            "hidden_states",
            "num_scheduled_tokens",
        ),
        process="worker",
        reason=(
            "Asynchronous draft-head path: before bookkeeping, each request's last valid sampled "
            "token and count on the device, handed to vLLM's asynchronous spec-decode state "
            "(_copy_valid_sampled_token_count) as vLLM does for EAGLE; the head then drafts on the "
            "device in propose_draft_token_ids."
        ),
        implementation=hooks.wrap_bookkeeping_sync,
    ),
    PatchPoint(
        target="vllm.v1.core.sched.scheduler:Scheduler.schedule",
        action="wrap",
        params=("self", "throttle_prefills"),
        process="engine core",
        reason=(
            "The speculation cap: before each step, drop the draft tokens of the running requests "
            "the soft/hard cap excludes (all of them in a step that will carry prefill work when "
            "drafts_in_prefill_steps is off, predicted from the queues), and count steps and "
            "requests for the arctic_* metrics, reading back what the step scheduled. Runs before "
            "token budgeting and KV allocation, for every draft method and runner."
        ),
        implementation=hooks.wrap_schedule,
    ),
    PatchPoint(
        target="vllm.v1.core.sched.scheduler:Scheduler.update_from_output",
        action="wrap",
        params=("self", "scheduler_output", "model_runner_output"),
        process="engine core",
        reason=(
            "Decode-step timings for the operator's cost file (arctic_decode_step* series): the "
            "EngineCore processes each step's output here once, in step order, under synchronous "
            "and asynchronous scheduling alike, so the interval between two calls while requests "
            "keep running is one step's time. Decode-only steps (read from the step's "
            "SchedulerOutput) are counted by batch bucket and drafting."
        ),
        implementation=hooks.wrap_update_from_output,
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
            "skipped; suffix decoding is told to update its tries without drafting. Draft heads: "
            "hand the proposer the base model's final hidden state at each request's last "
            "accepted position (loading the head on first use, tied to the base embedding); "
            "under asynchronous scheduling (head alone) draft on the device and return the "
            "drafts as a tensor vLLM feeds to the next step."
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
        reason=(
            "Build our suffix drafter (arctic_runtime.suffix) from vLLM's suffix keys, or the draft "
            "head drafter (arctic_runtime.heads, with suffix decoding beside it in hybrid mode)."
        ),
        implementation=hooks.replace_suffix_proposer_init,
    ),
    PatchPoint(
        target="vllm.v1.spec_decode.suffix_decoding:SuffixDecodingProposer.propose",
        action="replace",
        params=("self", "num_speculative_tokens", "input_batch", "sampled_token_ids", "slot_mappings"),
        process="worker",
        reason=(
            "Draft with our suffix cache: keep every request's trie equal to prompt + output "
            "(resumed requests included), honour the live cap, never draft past max_model_len. "
            "Draft heads: the head's draft, or in hybrid mode the suffix draft when it scores at "
            "least the threshold."
        ),
        implementation=hooks.replace_suffix_proposer_propose,
    ),
    PatchPoint(
        target="vllm.engine.arg_utils:EngineArgs.add_cli_args",
        action="wrap",
        params=("parser",),
        process="front end",
        reason=(
            "Arctic Inference's --ulysses-sequence-parallel-size, --enable-shift-parallel and "
            "--shift-parallel-threshold on every vLLM launch (vLLM has no hook for plugin flags; "
            "AsyncEngineArgs.add_cli_args loads plugins before calling this)."
        ),
        implementation=parallel.wrap_add_cli_args,
    ),
    PatchPoint(
        target="vllm.engine.arg_utils:EngineArgs.from_cli_args",
        action="wrap",
        params=("cls", "args"),
        process="front end",
        reason=(
            "Fold those flags into additional_config['arctic']['parallel'] (vLLM copies only its "
            "dataclass fields from the parsed arguments)."
        ),
        implementation=parallel.wrap_from_cli_args,
    ),
    PatchPoint(
        target="vllm.model_executor.layers.attention.attention:Attention.__init__",
        action="wrap",
        params=(
            "self",
            "num_heads",
            "head_size",
            "scale",
            "num_kv_heads",
            "alibi_slopes",
            "use_alibi_sqrt",
            "cache_config",
            "quant_config",
            "logits_soft_cap",
            "per_layer_sliding_window",
            "prefix",
            "attn_type",
            "kv_sharing_target_layer_name",
            "mm_prefix_clamp_sliding_window",
            "attn_backend",
            "head_size_v",
            "extra_impl_args",
        ),
        process="worker",
        reason=(
            "While the Ulysses model is built, its attention layers get one full-TP rank's heads "
            "(the tensor shard's heads / ulysses): after the all-to-all each rank attends over "
            "exactly the heads it holds in full tensor parallelism, so both modes share one KV "
            "cache. A no-op otherwise."
        ),
        implementation=parallel.wrap_attention_init,
    ),
    PatchPoint(
        target="vllm.model_executor.model_loader.base_loader:BaseModelLoader.load_model",
        action="wrap",
        params=("self", "vllm_config", "model_config", "prefix"),
        process="worker",
        reason=(
            "With Ulysses: build the Ulysses model (weights sharded over the Ulysses tensor group) "
            "and, with shift, vLLM's full-TP model sharing its attention layers, and return both "
            "behind one ArcticParallelModel. Covers the GPU and CPU runners (both load through "
            "here). Draft models and engines without Ulysses pass through unchanged."
        ),
        implementation=parallel.wrap_load_model,
    ),
    PatchPoint(
        target="vllm.v1.worker.gpu_model_runner:GPUModelRunner.execute_model",
        action="wrap",
        params=("self", "scheduler_output", "intermediate_tensors"),
        process="worker",
        reason=(
            "Tell the ArcticParallelModel how many tokens the step schedules, so every rank picks "
            "the same mode by the shift threshold (dummy runs, which carry no schedule, run both)."
        ),
        implementation=parallel.wrap_execute_model,
    ),
)


def apply_all() -> list[str]:
    """Apply every patch point of the table (all checked first); the targets applied now."""
    return patching.apply_all(PATCH_POINTS)
