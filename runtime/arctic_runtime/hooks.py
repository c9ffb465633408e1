"""Thin adapters installed into vLLM by ``patches.PATCH_POINTS``.

Each hook reads vLLM state, calls pure code (``contract``, ``speculation``) and writes the result
back. No vLLM import happens here: hooks receive vLLM objects as arguments. Per-process state lives
on the vLLM object it belongs to (the scheduler, the model runner), never in module globals, because
the EngineCore and the workers are separate processes on most setups.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from arctic_runtime import __version__, patching
from arctic_runtime.contract import (
    ADDITIONAL_CONFIG_KEY,
    FieldError,
    InvalidSetting,
    SpeculationCap,
    parse_cap,
    parse_engine_settings,
)
from arctic_runtime.parallel import hooks as parallel_hooks
from arctic_runtime.speculation import (
    DecodeStepTimer,
    QueueView,
    SpeculationCounters,
    apply_cap,
    carries_prefill,
    decode_step,
    empty_drafts,
    scheduled_phase,
    split_arctic_keys,
)

logger = logging.getLogger("arctic_runtime")

#: RPC names answered by the engine core (through ``collective_rpc``).
RPC_GET_STATE = "arctic_get_state"
RPC_SET_CAP = "arctic_set_speculation_cap"
#: RPC names answered by each worker.
RPC_WORKER_STATE = "arctic_worker_state"
RPC_WORKER_SET_CAP = "arctic_worker_set_speculation_cap"

#: Draft methods whose proposer keeps no state between steps, so a step can skip it entirely.
STATELESS_PROPOSERS = frozenset({"ngram"})


def process_info(role: str) -> dict[str, Any]:
    return {
        "role": role,
        "pid": os.getpid(),
        "arctic_serve": __version__,
        "patches": patching.applied_targets(),
    }


# --------------------------------------------------------------------------------------------
# Front end: engine arguments
# --------------------------------------------------------------------------------------------


def fold_arctic_args(
    speculative_config: Mapping[str, Any] | None, additional_config: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Move Arctic-compatible cap keys out of ``speculative_config`` into ``additional_config``.

    Returns the new (speculative_config, additional_config); validates the result, raising
    InvalidSetting that names the field as the user wrote it.
    """
    additional = dict(additional_config or {})
    section = dict(additional.get(ADDITIONAL_CONFIG_KEY) or {})
    spec_section = dict(section.get("speculation") or {})
    new_spec: dict[str, Any] | None = None
    if speculative_config is not None:
        for_vllm, ours = split_arctic_keys(speculative_config)
        errors = [
            FieldError(
                f"speculative_config.{key}",
                f"conflicts with additional_config.{ADDITIONAL_CONFIG_KEY}.speculation.{key}="
                f"{spec_section[key]!r}; set it in one place",
            )
            for key, value in ours.items()
            if key in spec_section and spec_section[key] != value
        ]
        if errors:
            raise InvalidSetting(errors)
        spec_section.update(ours)
        new_spec = for_vllm or None
    if spec_section:
        section["speculation"] = spec_section
        additional[ADDITIONAL_CONFIG_KEY] = section
    parse_engine_settings(additional)  # validate now, in the front end, before any process starts
    return new_spec, additional


def fold_head_args(
    speculative_config: Mapping[str, Any] | None, additional_config: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any], Any]:
    """``method: arctic | mlp_speculator``: vLLM gets ``method: suffix`` (our proposer), and our
    ``heads`` section goes into ``additional_config`` (``arctic_runtime.heads.engine``). Returns
    (speculative_config, additional_config, the head's config or None)."""
    from arctic_runtime.heads.engine import split_head_spec

    additional = dict(additional_config or {})
    new_spec, section, head_config = split_head_spec(speculative_config)
    if section is not None:
        ours = dict(additional.get(ADDITIONAL_CONFIG_KEY) or {})
        ours["heads"] = section
        additional[ADDITIONAL_CONFIG_KEY] = ours
        parse_engine_settings(additional)
    return new_spec, additional, head_config


def wrap_create_engine_config(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_engine_config(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            self.speculative_config, self.additional_config = fold_arctic_args(
                self.speculative_config, self.additional_config
            )
            self.speculative_config, self.additional_config, head_config = fold_head_args(
                self.speculative_config, self.additional_config
            )
            parallel = parallel_hooks.prepare_engine_args(self)
        except InvalidSetting as exc:
            raise parallel_hooks.with_flag_names(exc) from None
        config = original(self, *args, **kwargs)
        if head_config is not None:
            from arctic_runtime.heads.engine import check_head

            heads = parse_engine_settings(config.additional_config).heads
            assert heads is not None
            check_head(head_config, config.model_config.hf_config, heads.num_speculative_tokens)
        parallel_hooks.finish_engine_config(config, parallel)
        check_swiftkv(config)
        return config

    return create_engine_config


def wrap_vllm_config_post_init(original: Callable[..., Any]) -> Callable[..., Any]:
    """VllmConfig.__post_init__: a draft head alone (no suffix decoding beside it) keeps vLLM's
    asynchronous scheduling. vLLM 0.26 schedules asynchronously only for its EAGLE-like methods
    (``EagleModelTypes``, read by ``__post_init__``), and the head travels as method ``suffix``;
    while a head-alone config is built, ``suffix`` counts as EAGLE-like, so vLLM makes the same
    choice (on unless the user turned it off, the platform or executor cannot, ...) and checks
    what it checks for EAGLE. The hybrid keeps synchronous scheduling: its suffix cache reads
    every sampled token on the host."""
    import typing

    import vllm.config.vllm as module

    if typing.get_origin(getattr(module, "EagleModelTypes", None)) is not typing.Literal:
        raise patching.PatchError("vllm.config.vllm.EagleModelTypes: not a Literal of method names")

    def __post_init__(self: Any) -> None:
        heads = parse_engine_settings(self.additional_config).heads
        spec = self.speculative_config
        if heads is None or heads.hybrid or spec is None or spec.method != "suffix":
            original(self)
            return
        eagle_like = module.EagleModelTypes
        module.EagleModelTypes = typing.Literal[(*typing.get_args(eagle_like), "suffix")]
        try:
            original(self)
        finally:
            module.EagleModelTypes = eagle_like

    return __post_init__


def check_swiftkv(config: Any) -> None:
    """SwiftKV asked for a model that is not a SwiftKV checkpoint, or a bad L_kv: one line."""
    from arctic_runtime import swiftkv

    enabled = parse_engine_settings(config.additional_config).swiftkv
    try:
        swiftkv.check_model(config.model_config.hf_config, enabled)
    except swiftkv.SwiftKVConfigError as exc:
        raise SystemExit(f"arctic-serve: {exc}") from None


# --------------------------------------------------------------------------------------------
# Engine core: the scheduler applies the cap
# --------------------------------------------------------------------------------------------


@dataclass
class EngineSpeculationState:
    """The engine core's speculation state: the source of truth for the cap."""

    method: str | None
    num_speculative_tokens: int
    cap: SpeculationCap
    drafts_in_prefill_steps: bool = True
    counters: SpeculationCounters = field(default_factory=SpeculationCounters)
    decode_timer: DecodeStepTimer = field(default_factory=DecodeStepTimer)
    running_after_output: bool = False
    """The scheduler still had running requests after the last step's output was processed."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "num_speculative_tokens": self.num_speculative_tokens,
            **self.cap.as_dict(),
            "drafts_in_prefill_steps": self.drafts_in_prefill_steps,
            "counters": self.counters.as_dict(),
        }


def engine_state(scheduler: Any) -> EngineSpeculationState:
    """The state kept on vLLM's Scheduler, created on first use from its config."""
    state: EngineSpeculationState | None = getattr(scheduler, "_arctic_state", None)
    if state is None:
        config = scheduler.vllm_config
        spec = config.speculative_config
        settings = parse_engine_settings(config.additional_config)
        method = None if spec is None else str(spec.method)
        if settings.heads is not None and method == "suffix":  # a draft head behind vLLM's suffix slot
            method = settings.heads.method + ("+suffix" if settings.heads.hybrid else "")
        state = EngineSpeculationState(
            method=method,
            num_speculative_tokens=0 if spec is None else int(spec.num_speculative_tokens or 0),
            cap=settings.speculation,
            drafts_in_prefill_steps=settings.drafts_in_prefill_steps,
        )
        scheduler._arctic_state = state
    return state


def queue_view(scheduler: Any, running_prefilling: bool) -> QueueView:
    """The scheduler's queues before a step, for ``carries_prefill``. Waiting requests are vLLM's
    ``waiting`` queue (the skipped-waiting queue holds requests blocked on a grammar, a remote KV
    transfer or a streaming input). The running requests' tokens, the first waiting request and the
    KV pool are read only when the answer depends on them."""
    slots = len(scheduler.running) + int(getattr(scheduler, "num_waiting_for_streaming_input", 0))
    view = QueueView(
        running_prefilling=running_prefilling,
        running_tokens=0,
        slots_taken=slots,
        max_num_seqs=int(scheduler.max_num_running_reqs),
        token_budget=int(scheduler.max_num_scheduled_tokens),
        waiting=len(scheduler.waiting),
    )
    if running_prefilling or not view.waiting or slots >= view.max_num_seqs:
        return view
    threshold = int(scheduler.scheduler_config.long_prefill_token_threshold or 0)
    running_tokens = 0
    for request in scheduler.running:
        # vLLM's count without the drafts: num_tokens_with_spec + placeholders - computed
        tokens = request.num_tokens + request.num_output_placeholders - request.num_computed_tokens
        running_tokens += min(tokens, threshold) if threshold > 0 else tokens
    head = scheduler.waiting.peek_request()
    kv = scheduler.kv_cache_manager
    return replace(
        view,
        running_tokens=running_tokens,
        head_tokens_left=head.num_tokens - head.num_computed_tokens,
        long_prefill_threshold=threshold,
        block_size=int(scheduler.block_size),
        free_kv_blocks=int(kv.block_pool.get_num_free_blocks()),
        watermark_blocks=int(getattr(kv, "watermark_blocks", 0)),
    )


def wrap_schedule(original: Callable[..., Any]) -> Callable[..., Any]:
    def schedule(self: Any, *args: Any, **kwargs: Any) -> Any:
        state = engine_state(self)
        counted = state.method is not None and bool(self.running)
        prefilling: list[str] = []
        if counted:
            prefilling = [r.request_id for r in self.running if r.is_prefill_chunk]
            prefill = not state.drafts_in_prefill_steps and carries_prefill(
                queue_view(self, bool(prefilling))
            )
            state.counters.record(apply_cap(self.running, state.cap, prefill=prefill))
        output = original(self, *args, **kwargs)
        if counted:
            admitted = {r.req_id for r in output.scheduled_new_reqs}
            admitted |= set(output.scheduled_cached_reqs.resumed_req_ids)
            scheduled = output.num_scheduled_tokens
            state.counters.record_scheduled(
                *scheduled_phase(
                    any(rid in scheduled for rid in prefilling),
                    admitted,
                    output.scheduled_spec_decode_tokens,
                )
            )
        parallel = parallel_hooks.parallel_state(self)
        if parallel.settings.enabled:
            parallel.record(output.total_num_scheduled_tokens, bool(output.scheduled_spec_decode_tokens))
        return output

    return schedule


def wrap_update_from_output(original: Callable[..., Any]) -> Callable[..., Any]:
    """Scheduler.update_from_output: time decode-only steps (``speculation.DecodeStepTimer``).

    vLLM's EngineCore calls update_from_output once per scheduled step, in the order the steps
    were scheduled, in both of its loops: ``step`` (synchronous scheduling) schedules, executes and
    processes one step per call; ``step_with_batch_queue`` (asynchronous scheduling, pipeline
    parallelism) schedules step k+1 and launches it before it blocks on step k's result and
    processes it (the batch queue is first in, first out). So the interval between two consecutive
    calls is one step's time, whenever the engine went straight on between them (it had running
    requests after the first, so it did not block waiting for input; ``running_after_output``):

    * synchronous: the next step's scheduling, its forward pass and sampling (with an n-gram or
      suffix draft in the worker), the previous step's post_step (draft tokens taken) and this
      step's output bookkeeping, i.e. everything one step costs;
    * asynchronous: the next step was launched before the previous output was processed, so the
      device runs it back to back and the interval is the device-bound step, the host's work
      (scheduling, bookkeeping) overlapped; a host slower than the device shows as its own cycle,
      which is then the real step time.

    The clock is read once the step's output is processed, so a step's interval includes its own
    bookkeeping, which grows with its batch. The step's attributes come from its own
    SchedulerOutput (a few ``len`` calls, see ``speculation.decode_step``). Counted for every
    engine, with or without a draft method.
    """

    def update_from_output(self: Any, scheduler_output: Any, model_runner_output: Any) -> Any:
        outputs = original(self, scheduler_output, model_runner_output)
        now = time.perf_counter()
        state = engine_state(self)
        out = scheduler_output
        step = decode_step(
            len(out.num_scheduled_tokens),
            out.total_num_scheduled_tokens,
            map(len, out.scheduled_spec_decode_tokens.values()),
            admitted=bool(out.scheduled_new_reqs) or bool(out.scheduled_cached_reqs.resumed_req_ids),
        )
        seconds = state.decode_timer.observe(now, step, state.running_after_output)
        if step is not None and seconds is not None:
            state.counters.record_decode_step(step, seconds)
        state.running_after_output = bool(self.running)
        return outputs

    return update_from_output


def wrap_engine_core_collective_rpc(original: Callable[..., Any]) -> Callable[..., Any]:
    def collective_rpc(
        self: Any,
        method: Any,
        timeout: float | None = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if method == RPC_GET_STATE:
            return [engine_core_state(self, original, include_workers=bool((kwargs or {}).get("workers")))]
        if method == RPC_SET_CAP:
            state = engine_state(self.scheduler)
            # Validated again here: the engine core is the source of truth and may be reached by
            # clients other than our admin API (e.g. LLM.collective_rpc).
            new_cap = parse_cap(dict(kwargs or {}))
            if new_cap != state.cap:
                state.counters.cap_changes += 1
            state.cap = new_cap
            original(self, RPC_WORKER_SET_CAP, timeout, (), new_cap.as_dict())
            logger.info("arctic-serve: speculation cap set to %s", new_cap.as_dict())
            return [engine_core_state(self, original, include_workers=True)]
        return original(self, method, timeout, args, kwargs)

    return collective_rpc


def engine_core_state(
    engine_core: Any, original_rpc: Callable[..., Any], *, include_workers: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "engine_core": process_info("engine_core"),
        "speculation": engine_state(engine_core.scheduler).as_dict(),
        "parallel": parallel_hooks.parallel_state(engine_core.scheduler).as_dict(),
    }
    if include_workers:
        result["workers"] = original_rpc(engine_core, RPC_WORKER_STATE, None, (), None)
    return result


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------


def _runner_cap(runner: Any) -> SpeculationCap:
    cap: SpeculationCap | None = getattr(runner, "_arctic_cap", None)
    if cap is None:
        cap = parse_engine_settings(runner.vllm_config.additional_config).speculation
        runner._arctic_cap = cap
    return cap


def worker_set_speculation_cap(self: Any, soft_cap: int | None, hard_cap: int | None) -> dict[str, Any]:
    """Added to vLLM's WorkerBase: store the cap where this worker's model runner reads it."""
    cap = parse_cap({"soft_cap": soft_cap, "hard_cap": hard_cap})
    runner = getattr(self, "model_runner", None)
    if runner is not None:
        runner._arctic_cap = cap
    return worker_state(self)


def worker_state(self: Any) -> dict[str, Any]:
    """Added to vLLM's WorkerBase: this worker's pid, patches and cap (and its suffix cache)."""
    info = process_info("worker")
    runner = getattr(self, "model_runner", None)
    info["speculation"] = None if runner is None else _runner_cap(runner).as_dict()
    info["rank"] = getattr(self, "rank", None)
    drafter = getattr(getattr(runner, "drafter", None), "_arctic_drafter", None)
    if drafter is not None:
        info["suffix"] = drafter.state()
    heads = getattr(getattr(runner, "drafter", None), "_arctic_heads", None)
    if heads is not None:
        info["heads"] = heads.state()
    parallel = None if runner is None else parallel_hooks.worker_parallel_state(runner)
    if parallel is not None:
        info["parallel"] = parallel
    inner: Any = getattr(getattr(runner, "model", None), "model", None)
    if inner is not None and hasattr(inner, "saving_steps"):  # SwiftKV: steps that skipped rows
        info["swiftkv"] = {
            "saving_steps": inner.saving_steps,
            "rows_skipped": inner.rows_skipped,
            "saving_paths": dict(inner.saving_paths),
        }
    return info


#: Positions of the arguments the draft-head path reads in GPUModelRunner.propose_draft_token_ids
#: (after self; the registry's params in patches.py).
_PROPOSE_ARGS = {"sampled_token_ids": 1, "sample_hidden_states": 4, "spec_decode_metadata": 6}


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> Any:
    index = _PROPOSE_ARGS[name]
    return args[index] if len(args) > index else kwargs.get(name)


def async_heads(runner: Any) -> Any:
    """The runner's draft head when it drafts on the asynchronous path (head alone under vLLM's
    asynchronous scheduling, see ``wrap_vllm_config_post_init``), else None."""
    heads = getattr(getattr(runner, "drafter", None), "_arctic_heads", None)
    if heads is None or heads.suffix is not None or not getattr(runner, "use_async_scheduling", False):
        return None
    return heads


def wrap_bookkeeping_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    """Asynchronous head path, part 1: before the step's bookkeeping, find each request's last
    valid sampled token and count on the device and hand them to vLLM's asynchronous
    speculative-decoding state (``_copy_valid_sampled_token_count``: the next step's inputs and
    its correction of the optimistic token counts read them), as vLLM does for its EAGLE-like
    drafters; the draft itself follows in ``propose_draft_token_ids``."""

    def _bookkeeping_sync(
        self: Any, scheduler_output: Any, sampler_output: Any, *args: Any, **kwargs: Any
    ) -> Any:
        heads = async_heads(self)
        if heads is not None:
            heads.accepted = _accepted_on_device(self, sampler_output.sampled_token_ids)
        return original(self, scheduler_output, sampler_output, *args, **kwargs)

    return _bookkeeping_sync


def _accepted_on_device(runner: Any, sampled: Any) -> tuple[Any, Any]:
    import numpy as np
    import torch

    from arctic_runtime.heads.engine import accepted_tokens

    batch = runner.input_batch
    n = int(sampled.shape[0])
    discarded = runner.discard_request_mask
    chunks = np.flatnonzero(discarded.np[:n]).tolist()
    backup = sampled[:, 0]  # read only for discarded rows: with none, no copy to the device
    if chunks:  # prefill chunks: their last known token
        on_host = torch.zeros(n, dtype=torch.int32)
        for i in chunks:
            on_host[i] = runner.requests[batch.req_ids[i]].get_token_id(int(batch.num_tokens_no_spec[i]) - 1)
        backup = on_host.to(sampled.device, non_blocking=True)
    next_ids, counts = accepted_tokens(sampled, discarded.gpu[:n], backup, int(batch.vocab_size))
    runner._copy_valid_sampled_token_count(next_ids, counts)
    return next_ids, counts


def wrap_propose_draft_token_ids(original: Callable[..., Any]) -> Callable[..., Any]:
    def propose_draft_token_ids(self: Any, *args: Any, **kwargs: Any) -> Any:
        spec = self.speculative_config
        if spec is not None:
            req_ids = self.input_batch.req_ids
            drafting = _runner_cap(self).drafting_slots(len(req_ids)) > 0
            heads = async_heads(self)
            if heads is not None:
                return _draft_on_device(
                    self,
                    heads,
                    _argument(args, kwargs, "sample_hidden_states"),
                    _argument(args, kwargs, "spec_decode_metadata"),
                    drafting,
                )
            if spec.method in STATELESS_PROPOSERS and not drafting:
                return empty_drafts(req_ids)
            if spec.method == "suffix":
                # Suffix decoding must see every token, so it always runs; it only skips drafting.
                self.drafter._arctic_drafting = drafting
                heads = getattr(self.drafter, "_arctic_heads", None)
                if heads is not None:
                    self.drafter._arctic_hidden = _last_accepted_hidden(
                        self,
                        heads,
                        _argument(args, kwargs, "sampled_token_ids"),
                        _argument(args, kwargs, "sample_hidden_states"),
                        _argument(args, kwargs, "spec_decode_metadata"),
                        drafting,
                    )
        return original(self, *args, **kwargs)

    return propose_draft_token_ids


def _draft_on_device(
    runner: Any, heads: Any, sample_hidden_states: Any, spec_meta: Any, drafting: bool
) -> Any:
    """Asynchronous head path, part 2 (vLLM calls the proposer after bookkeeping, with no host
    lists under asynchronous scheduling): the head's drafts from the accepted tokens found in
    part 1, as a device tensor vLLM scatters into the next step's inputs."""
    from arctic_runtime.heads.engine import last_accepted_rows

    _load_head(runner, heads, sample_hidden_states)
    next_ids, counts = heads.accepted
    heads.accepted = None
    rows = None
    if sample_hidden_states.shape[0] != next_ids.shape[0]:  # drafts verified: (drafts + 1) rows each
        rows = last_accepted_rows(counts, spec_meta.cu_num_sampled_tokens)
    return heads.propose_on_device(sample_hidden_states, rows, next_ids, runner.num_spec_tokens, drafting)


def _load_head(runner: Any, heads: Any, sample_hidden_states: Any) -> None:
    if heads.head is None:
        model = runner.get_model()
        embedding = model.model.embed_tokens.weight
        lm_head = getattr(getattr(model, "lm_head", None), "weight", None)
        heads.load(embedding, lm_head, sample_hidden_states.dtype, sample_hidden_states.device)
        logger.info("arctic-serve: draft head %s loaded", heads.settings.model)


def _last_accepted_hidden(
    runner: Any,
    heads: Any,
    sampled: list[list[int]],
    sample_hidden_states: Any,
    spec_meta: Any,
    drafting: bool,
) -> Any:
    """The base model's final hidden state at each request's last accepted position: one row of
    ``sample_hidden_states`` per request, or (with drafts verified this step) the row of its last
    accepted draft position (vLLM computes logits for every draft position plus one)."""
    _load_head(runner, heads, sample_hidden_states)
    if not drafting:
        return None
    if sample_hidden_states.shape[0] == len(sampled):
        return sample_hidden_states
    import numpy as np
    import torch

    # request i's rows start after the earlier requests' (drafts + 1) rows; its last accepted one
    # is at len(sampled[i]) - 1 (a request that sampled nothing: its first row, never read)
    num_draft = np.asarray(spec_meta.num_draft_tokens, dtype=np.int64)
    n = min(len(num_draft), len(sampled))
    spans = num_draft[:n] + 1
    accepted = np.fromiter((len(tokens) for tokens in sampled[:n]), dtype=np.int64, count=n)
    index = np.cumsum(spans) - spans + np.maximum(accepted, 1) - 1
    rows = torch.from_numpy(index).to(sample_hidden_states.device, non_blocking=True)
    return sample_hidden_states.index_select(0, rows)


# --------------------------------------------------------------------------------------------
# Suffix decoding: our implementation behind vLLM's "suffix" method
# --------------------------------------------------------------------------------------------


def replace_validate_suffix_decoding(original: Callable[..., Any]) -> Callable[..., Any]:
    """SpeculativeConfig._validate_suffix_decoding without the arctic_inference requirement: our
    settings check (errors name ``speculative_config.<key>``) and our draft-cap default."""

    def _validate_suffix_decoding(self: Any) -> None:
        from arctic_runtime.suffix.engine import suffix_config_of

        config = suffix_config_of(self)
        if self.num_speculative_tokens is None:
            self.num_speculative_tokens = config.max_spec_tokens
            logger.info(
                "arctic-serve: suffix decoding drafts at most %d tokens (num_speculative_tokens)",
                config.max_spec_tokens,
            )

    return _validate_suffix_decoding


def replace_suffix_proposer_init(original: Callable[..., Any]) -> Callable[..., Any]:
    """SuffixDecodingProposer.__init__ building our SuffixDrafter instead of Arctic Inference's cache."""

    def __init__(self: Any, vllm_config: Any) -> None:
        from arctic_runtime.suffix.engine import SuffixDrafter, suffix_config_of

        spec = vllm_config.speculative_config
        self.num_speculative_tokens = spec.num_speculative_tokens
        self.max_model_len = vllm_config.model_config.max_model_len
        self._arctic_drafting = True
        heads = parse_engine_settings(vllm_config.additional_config).heads
        if heads is not None:
            from arctic_runtime.heads.engine import HeadDrafter

            suffix = SuffixDrafter(suffix_config_of(spec), self.max_model_len) if heads.hybrid else None
            self._arctic_heads = HeadDrafter(
                heads,
                self.max_model_len,
                suffix=suffix,
                cuda_graphs=not vllm_config.model_config.enforce_eager,
                max_batch=int(vllm_config.scheduler_config.max_num_seqs),
            )
            self._arctic_hidden = None
            self._arctic_drafter = None
            logger.info("arctic-serve: draft head %s (hybrid with suffix: %s)", heads.model, heads.hybrid)
            return
        self._arctic_heads = None
        self._arctic_drafter = SuffixDrafter(suffix_config_of(spec), self.max_model_len)
        logger.info("arctic-serve: suffix decoding (%s backend)", self._arctic_drafter.cache.backend)

    return __init__


def replace_suffix_proposer_propose(original: Callable[..., Any]) -> Callable[..., Any]:
    """SuffixDecodingProposer.propose: read the batch, let the drafter update and draft."""

    def propose(
        self: Any,
        num_speculative_tokens: int,
        input_batch: Any,
        sampled_token_ids: list[list[int]],
        slot_mappings: Any = None,
    ) -> list[list[int]]:
        batch = input_batch
        heads = getattr(self, "_arctic_heads", None)
        if heads is not None:
            hidden, self._arctic_hidden = self._arctic_hidden, None
            return heads.propose(  # type: ignore[no-any-return]
                batch.req_ids,
                batch.token_ids_cpu,
                batch.num_tokens_no_spec,
                batch.num_prompt_tokens,
                sampled_token_ids,
                num_speculative_tokens,
                self._arctic_drafting and hidden is not None,
                hidden,
            )
        return self._arctic_drafter.propose(  # type: ignore[no-any-return]
            batch.req_ids,
            batch.token_ids_cpu,
            batch.num_tokens_no_spec,
            batch.num_prompt_tokens,
            sampled_token_ids,
            num_speculative_tokens,
            self._arctic_drafting,
        )

    return propose
