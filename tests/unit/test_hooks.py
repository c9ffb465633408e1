"""The adapters' own logic, on plain objects shaped like the vLLM ones they receive."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from arctic_runtime import hooks
from arctic_runtime.contract import InvalidSetting, SpeculationCap
from arctic_runtime.parallel.hooks import parallel_state


def test_fold_moves_arctic_keys_into_additional_config() -> None:
    spec, additional = hooks.fold_arctic_args(
        {
            "method": "ngram",
            "num_speculative_tokens": 3,
            "disable_by_batch_size": 4,
            "hard_disable_by_batch_size": 8,
        },
        {"other": 1},
    )
    assert spec == {"method": "ngram", "num_speculative_tokens": 3}
    assert additional == {"other": 1, "arctic": {"speculation": {"soft_cap": 4, "hard_cap": 8}}}


def test_fold_leaves_plain_configs_alone() -> None:
    assert hooks.fold_arctic_args(None, {}) == (None, {})
    assert hooks.fold_arctic_args({"method": "ngram"}, None) == ({"method": "ngram"}, {})


def test_fold_only_cap_keys_means_no_speculation() -> None:
    spec, additional = hooks.fold_arctic_args({"disable_by_batch_size": 4}, {})
    assert spec is None
    assert additional["arctic"]["speculation"] == {"soft_cap": 4}


def test_fold_rejects_bad_and_conflicting_values() -> None:
    with pytest.raises(InvalidSetting, match="hard_cap"):
        hooks.fold_arctic_args(
            {"method": "ngram", "disable_by_batch_size": 8, "hard_disable_by_batch_size": 2}, {}
        )
    with pytest.raises(InvalidSetting, match=r"speculative_config\.soft_cap: conflicts"):
        hooks.fold_arctic_args({"disable_by_batch_size": 8}, {"arctic": {"speculation": {"soft_cap": 4}}})


@dataclass
class Req:
    """vLLM's Request as the scheduler hook reads it: decoding (one token to compute) by default."""

    spec_token_ids: list[int] = field(default_factory=list)
    request_id: str = "r"
    is_prefill_chunk: bool = False
    num_tokens: int = 10
    num_computed_tokens: int = 9
    num_output_placeholders: int = 0


class Queue(list[Req]):
    """vLLM's request queue as the hook reads it."""

    def peek_request(self) -> Req:
        return self[0]


def fake_scheduler(method: str | None, additional: dict[str, Any]) -> Any:
    spec = None if method is None else SimpleNamespace(method=method, num_speculative_tokens=3)
    return SimpleNamespace(
        vllm_config=SimpleNamespace(
            speculative_config=spec,
            additional_config=additional,
            parallel_config=SimpleNamespace(tensor_parallel_size=2),
        ),
        running=[],
        waiting=Queue(),
        num_waiting_for_streaming_input=0,
        max_num_running_reqs=4,
        max_num_scheduled_tokens=512,
        scheduler_config=SimpleNamespace(long_prefill_token_threshold=0),
        block_size=16,
        kv_cache_manager=SimpleNamespace(
            block_pool=SimpleNamespace(get_num_free_blocks=lambda: 100), watermark_blocks=0
        ),
    )


def scheduler_output(
    scheduled: dict[str, int],
    drafts: dict[str, list[int]] | None = None,
    new: tuple[str, ...] = (),
    resumed: tuple[str, ...] = (),
) -> Any:
    """vLLM's SchedulerOutput as the hook reads it."""
    return SimpleNamespace(
        scheduled_new_reqs=[SimpleNamespace(req_id=rid) for rid in new],
        scheduled_cached_reqs=SimpleNamespace(resumed_req_ids=set(resumed)),
        num_scheduled_tokens=scheduled,
        scheduled_spec_decode_tokens=drafts or {},
        total_num_scheduled_tokens=sum(scheduled.values()),
    )


def test_schedule_applies_the_cap_before_vllm_schedules() -> None:
    seen: list[list[list[int]]] = []

    def original(self: Any) -> Any:
        seen.append([list(r.spec_token_ids) for r in self.running])
        return scheduler_output({"a": 2, "b": 1}, {"a": [1]})

    schedule = hooks.wrap_schedule(original)
    sched = fake_scheduler("ngram", {"arctic": {"speculation": {"soft_cap": 1}}})
    sched.running = [Req([1], "a"), Req([2], "b")]
    schedule(sched)
    assert seen == [[[1], []]]
    state = hooks.engine_state(sched)
    assert state.counters.steps["soft_capped"] == 1 and state.counters.request_steps_dropped == 1
    assert state.counters.phase_steps == {"prefill": {"on": 0, "off": 0}, "decode": {"on": 1, "off": 0}}


def test_schedule_without_speculation_counts_nothing() -> None:
    schedule = hooks.wrap_schedule(lambda self: scheduler_output({"a": 1}))
    sched = fake_scheduler(None, {})
    sched.running = [Req([])]
    schedule(sched)
    counters = hooks.engine_state(sched).counters
    assert counters.steps == {"open": 0, "soft_capped": 0, "hard_capped": 0, "prefill": 0}
    assert counters.phase_steps == {"prefill": {"on": 0, "off": 0}, "decode": {"on": 0, "off": 0}}


NO_DRAFTS_IN_PREFILL = {"arctic": {"speculation": {"drafts_in_prefill_steps": False}}}


def test_schedule_drops_drafts_in_a_step_with_a_running_prompt_chunk() -> None:
    seen: list[list[list[int]]] = []

    def original(self: Any) -> Any:
        seen.append([list(r.spec_token_ids) for r in self.running])
        return scheduler_output({"a": 1, "p": 100})

    sched = fake_scheduler("ngram", NO_DRAFTS_IN_PREFILL)
    sched.running = [
        Req([1, 2], "a"),
        Req([], "p", is_prefill_chunk=True, num_tokens=600, num_computed_tokens=500),
    ]
    hooks.wrap_schedule(original)(sched)
    assert seen == [[[], []]]
    state = hooks.engine_state(sched)
    assert state.drafts_in_prefill_steps is False and state.as_dict()["drafts_in_prefill_steps"] is False
    assert state.counters.steps["prefill"] == 1 and state.counters.request_steps_dropped == 1
    assert state.counters.phase_steps["prefill"] == {"on": 0, "off": 1}


def test_schedule_drops_drafts_when_a_waiting_request_can_be_admitted_only() -> None:
    def original(self: Any) -> Any:  # vLLM: admits the waiting request when a slot and 4 blocks are free
        drafts = {r.request_id: r.spec_token_ids for r in self.running if r.spec_token_ids}
        fits = self.kv_cache_manager.block_pool.get_num_free_blocks() >= 4
        new = tuple(
            r.request_id for r in self.waiting if len(self.running) < self.max_num_running_reqs and fits
        )
        return scheduler_output({"a": 1 + len(drafts.get("a", [])), **dict.fromkeys(new, 50)}, drafts, new)

    sched = fake_scheduler("ngram", NO_DRAFTS_IN_PREFILL)
    sched.waiting = Queue([Req([], "w", num_tokens=50, num_computed_tokens=0)])
    sched.running = [Req([7], "a")]
    hooks.wrap_schedule(original)(sched)  # a slot, budget and KV: admitted, so no drafts
    sched.running = [Req([7], "a"), Req([8], "b"), Req([9], "c"), Req([5], "d")]
    hooks.wrap_schedule(original)(sched)  # max_num_seqs running: nobody is admitted, all draft
    sched.running = [Req([7], "a")]
    sched.kv_cache_manager.block_pool.get_num_free_blocks = lambda: 3  # 50 tokens need 4 blocks
    hooks.wrap_schedule(original)(sched)
    counters = hooks.engine_state(sched).counters
    assert counters.steps == {"open": 2, "soft_capped": 0, "hard_capped": 0, "prefill": 1}
    assert counters.phase_steps == {"prefill": {"on": 0, "off": 1}, "decode": {"on": 2, "off": 0}}
    assert (counters.request_steps_drafted, counters.request_steps_dropped) == (5, 1)


def test_schedule_keeps_drafts_in_prefill_steps_by_default_and_counts_them() -> None:
    def original(self: Any) -> Any:
        return scheduler_output({"a": 2, "w": 50}, {"a": [7], "w": [-1, -1]}, ("w",))

    sched = fake_scheduler("ngram", {})
    sched.waiting = Queue([Req([], "w", num_tokens=50, num_computed_tokens=0)])
    sched.running = [Req([7], "a")]
    hooks.wrap_schedule(original)(sched)
    counters = hooks.engine_state(sched).counters
    assert sched.running[0].spec_token_ids == [7]
    assert counters.steps["open"] == 1 and counters.phase_steps["prefill"] == {"on": 1, "off": 0}


@pytest.mark.parametrize("method", ["ngram", None])
def test_update_from_output_times_decode_steps_of_a_busy_engine(
    method: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([1.0, 1.5, 2.0, 9.0, 9.25, 9.5, 9.625])
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))  # the clock the hook reads
    update = hooks.wrap_update_from_output(lambda self, output, runner_output: {"outputs": runner_output})
    sched = fake_scheduler(method, {})
    steps = [
        # at 1.0: a and b admitted, with vLLM's placeholder drafts: the clock starts
        scheduler_output({"a": 5, "b": 5}, {"a": [-1, -1, -1], "b": [-1, -1, -1]}, new=("a", "b")),
        # at 1.5: a verifies 3 drafts, b none: 0.5 s in bucket 2, on
        scheduler_output({"a": 4, "b": 1}, {"a": [1, 2, 3]}),
        # at 2.0: no drafts: 0.5 s in bucket 2, off; then both finish (the engine goes idle)
        scheduler_output({"a": 1, "b": 1}),
        # at 9.0: after the idle gap: not counted
        scheduler_output({"c": 1}),
        # at 9.25: c resumed after a preemption: not decode-only
        scheduler_output({"c": 1}, resumed=("c",)),
        # at 9.5: 0.25 s in bucket 1, off
        scheduler_output({"c": 1}),
        # at 9.625: c's prompt chunk: not decode-only
        scheduler_output({"c": 40}),
    ]
    # the running requests once each output is processed (vLLM's update_from_output removes the
    # finished ones)
    running = [["a", "b"], ["a", "b"], [], ["c"], ["c"], ["c"], ["c"]]
    for i, (output, after) in enumerate(zip(steps, running, strict=True)):
        sched.running = [Req([], rid) for rid in after]
        assert update(sched, output, i) == {"outputs": i}
    decode = hooks.engine_state(sched).as_dict()["counters"]["decode_steps"]
    zero = {"steps": 0, "seconds": 0.0, "requests": 0, "drafting": 0, "draft_tokens": 0}
    assert decode["2"] == {
        "on": {"steps": 1, "seconds": 0.5, "requests": 2, "drafting": 1, "draft_tokens": 3},
        "off": {"steps": 1, "seconds": 0.5, "requests": 2, "drafting": 0, "draft_tokens": 0},
    }
    assert decode["1"] == {
        "on": zero,
        "off": {"steps": 1, "seconds": 0.25, "requests": 1, "drafting": 0, "draft_tokens": 0},
    }
    assert sum(states[s]["steps"] for states in decode.values() for s in ("on", "off")) == 3


def test_engine_rpc_sets_the_cap_and_forwards_to_workers() -> None:
    calls: list[tuple[str, Any]] = []

    def original(self: Any, method: str, timeout: Any, args: Any, kwargs: Any) -> list[Any]:
        calls.append((method, kwargs))
        return [{"worker": 0}]

    rpc = hooks.wrap_engine_core_collective_rpc(original)
    core = SimpleNamespace(scheduler=fake_scheduler("ngram", {}))
    state = rpc(core, hooks.RPC_SET_CAP, kwargs={"soft_cap": 2, "hard_cap": 5})[0]
    assert state["speculation"]["soft_cap"] == 2 and state["speculation"]["counters"]["cap_changes"] == 1
    assert calls[0] == (hooks.RPC_WORKER_SET_CAP, {"soft_cap": 2, "hard_cap": 5})
    assert hooks.engine_state(core.scheduler).cap == SpeculationCap(2, 5)
    # an invalid cap is refused in the engine too, and the old one stays
    with pytest.raises(InvalidSetting):
        rpc(core, hooks.RPC_SET_CAP, kwargs={"soft_cap": 9, "hard_cap": 5})
    assert hooks.engine_state(core.scheduler).cap == SpeculationCap(2, 5)
    # other RPCs pass through untouched
    assert rpc(core, "some_vllm_method", None, (1,), None) == [{"worker": 0}]


def test_ngram_proposer_is_skipped_only_when_nobody_may_draft() -> None:
    propose = hooks.wrap_propose_draft_token_ids(lambda self, *a: "proposed")
    runner = SimpleNamespace(
        speculative_config=SimpleNamespace(method="ngram"),
        input_batch=SimpleNamespace(req_ids=["a", "b"]),
        vllm_config=SimpleNamespace(additional_config={}),
    )
    assert propose(runner) == "proposed"
    runner._arctic_cap = SpeculationCap(hard_cap=2)
    assert propose(runner) == [[], []]
    runner.speculative_config = SimpleNamespace(method="suffix")  # stateful: must always see the batch
    runner.drafter = SimpleNamespace(_arctic_drafting=True)
    assert propose(runner) == "proposed" and runner.drafter._arctic_drafting is False  # told not to draft
    runner._arctic_cap = SpeculationCap(hard_cap=3)
    assert propose(runner) == "proposed" and runner.drafter._arctic_drafting is True


def test_schedule_counts_steps_and_tokens_per_parallel_mode() -> None:
    outputs = [
        SimpleNamespace(total_num_scheduled_tokens=n, scheduled_spec_decode_tokens=drafts)
        for n, drafts in [(600, {}), (12, {"a": [1, 2]}), (13, {}), (0, {}), (4, {})]
    ]
    schedule = hooks.wrap_schedule(lambda self: outputs.pop(0))
    parallel = {"ulysses": 2, "shift": True, "shift_threshold": 12, "tensor": 1}
    sched = fake_scheduler(None, {"arctic": {"parallel": parallel}})
    for _ in range(5):
        schedule(sched)
    state = parallel_state(sched).as_dict()
    assert state == {
        "tensor": 1,
        "ulysses": 2,
        "shift": True,
        "shift_threshold": 12,
        "last_mode": "tp",
        "steps": {"tp": 2, "sp": 2},  # the empty step is not a step of either mode
        "tokens": {"tp": 16, "sp": 613},
        "draft_steps": {"tp": 1, "sp": 0},
    }
    # without Ulysses nothing is counted, and the layout is vLLM's own tensor parallelism
    plain = fake_scheduler(None, {})
    hooks.wrap_schedule(lambda self: None)(plain)
    assert parallel_state(plain).as_dict()["steps"] == {"tp": 0, "sp": 0}
    assert parallel_state(plain).tensor == 2


def test_head_reads_the_hidden_state_of_each_requests_last_accepted_position() -> None:
    """vLLM computes logits at every draft position plus one: request i's rows follow the earlier
    requests' (drafts + 1) rows, and its last accepted one is at (tokens sampled - 1); a request
    that sampled nothing (a prefill chunk) gets its first row (never read)."""
    import torch

    heads = SimpleNamespace(head=object())  # loaded: no model needed
    rows = torch.arange(9, dtype=torch.float32).unsqueeze(1) * torch.ones(1, 2)
    meta = SimpleNamespace(num_draft_tokens=[3, 0, 2, 1])  # rows 0-3, 4, 5-7, 8
    sampled = [[7, 8], [9], [1, 2, 3], []]
    out = hooks._last_accepted_hidden(None, heads, sampled, rows, meta, True)
    assert out[:, 0].tolist() == [1.0, 4.0, 7.0, 8.0]
    # one row per request (no drafts verified): the rows as they are; not drafting: nothing
    same = rows[:4]
    assert hooks._last_accepted_hidden(None, heads, sampled, same, meta, True) is same
    assert hooks._last_accepted_hidden(None, heads, sampled, rows, meta, False) is None
