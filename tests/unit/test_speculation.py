"""The speculation cap's semantics and validation (pure code)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arctic_runtime.contract import (
    DECODE_BATCH_BUCKETS,
    InvalidSetting,
    SpeculationCap,
    decode_batch_bucket,
    parse_cap,
)
from arctic_runtime.speculation import (
    DecodeStep,
    DecodeStepTimer,
    QueueView,
    SpeculationCounters,
    admission_blocks,
    apply_cap,
    carries_prefill,
    decode_step,
    scheduled_phase,
    split_arctic_keys,
)


@dataclass
class Req:
    spec_token_ids: list[int] = field(default_factory=list)


@pytest.mark.parametrize(
    ("soft", "hard", "running", "slots"),
    [
        (None, None, 100, 100),  # no cap
        (4, None, 4, 4),  # at the soft cap everybody drafts
        (4, None, 5, 4),  # above it only the first 4
        (None, 8, 7, 7),
        (None, 8, 8, 0),  # at the hard cap nobody drafts
        (4, 8, 6, 4),
        (4, 8, 9, 0),
        (0, None, 3, 0),  # soft cap 0: drafting off
        (None, 0, 0, 0),
    ],
)
def test_drafting_slots(soft: int | None, hard: int | None, running: int, slots: int) -> None:
    assert SpeculationCap(soft, hard).drafting_slots(running) == slots


caps = st.builds(
    SpeculationCap,
    soft_cap=st.one_of(st.none(), st.integers(0, 64)),
    hard_cap=st.one_of(st.none(), st.integers(0, 64)),
)


@given(cap=caps, n=st.integers(0, 200), m=st.integers(0, 200))
def test_slots_are_bounded_and_never_exceed_the_soft_cap(cap: SpeculationCap, n: int, m: int) -> None:
    slots = cap.drafting_slots(n)
    assert 0 <= slots <= n
    if cap.soft_cap is not None:
        assert slots <= cap.soft_cap
    if cap.hard_cap is not None and n >= cap.hard_cap:
        assert slots == 0


def test_apply_cap_keeps_drafts_of_the_first_requests_only() -> None:
    running = [Req([1, 2]), Req([]), Req([3]), Req([4]), Req([5, 6])]
    outcome = apply_cap(running, SpeculationCap(soft_cap=3))
    assert [r.spec_token_ids for r in running] == [[1, 2], [], [3], [], []]
    assert (outcome.mode, outcome.drafted, outcome.dropped) == ("soft_capped", 2, 2)


def test_apply_cap_hard_and_open() -> None:
    running = [Req([1]), Req([2])]
    assert apply_cap(running, SpeculationCap()).mode == "open"
    assert [r.spec_token_ids for r in running] == [[1], [2]]
    outcome = apply_cap(running, SpeculationCap(hard_cap=2))
    assert (outcome.mode, outcome.drafted, outcome.dropped) == ("hard_capped", 0, 2)
    assert all(r.spec_token_ids == [] for r in running)


def test_counters_record_steps() -> None:
    counters = SpeculationCounters()
    counters.record(apply_cap([Req([1]), Req([2])], SpeculationCap(soft_cap=1)))
    counters.record(apply_cap([Req([1])], SpeculationCap(hard_cap=1)))
    assert counters.steps == {"open": 0, "soft_capped": 1, "hard_capped": 1, "prefill": 0}
    assert (counters.steps_drafting, counters.steps_not_drafting) == (1, 1)
    assert (counters.request_steps_drafted, counters.request_steps_dropped) == (1, 2)


def test_parse_cap_accepts_valid_input() -> None:
    assert parse_cap({"soft_cap": 4, "hard_cap": 16}) == SpeculationCap(4, 16)
    assert parse_cap({"soft_cap": 4, "hard_cap": 4}) == SpeculationCap(4, 4)
    assert parse_cap({}) == SpeculationCap()
    assert parse_cap({"hard_cap": 9}, base=SpeculationCap(2, 5)) == SpeculationCap(2, 9)
    assert parse_cap({"hard_cap": None}, base=SpeculationCap(2, 5)) == SpeculationCap(2, None)


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"soft_cap": -1}, "soft_cap", ">= 0"),
        ({"soft_cap": 1.5}, "soft_cap", "whole number"),
        ({"soft_cap": "3"}, "soft_cap", "whole number"),
        ({"hard_cap": False}, "hard_cap", "whole number"),
        ({"hard_cap": 10**9}, "hard_cap", "<="),
        ({"soft_cap": 5, "hard_cap": 2}, "hard_cap", "must be >= soft_cap (got hard_cap=2, soft_cap=5)"),
        ({"sof_cap": 5}, "sof_cap", "unknown field; allowed fields: soft_cap, hard_cap"),
    ],
)
def test_parse_cap_names_the_field(data: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(InvalidSetting) as info:
        parse_cap(data)
    assert [e.field for e in info.value.errors] == [field]
    assert words in info.value.errors[0].message


def test_parse_cap_reports_every_problem_at_once() -> None:
    with pytest.raises(InvalidSetting) as info:
        parse_cap({"soft_cap": -2, "hard_cap": "x", "extra": 1}, prefix="cfg.")
    assert sorted(e.field for e in info.value.errors) == ["cfg.extra", "cfg.hard_cap", "cfg.soft_cap"]


def test_partial_update_checks_against_the_current_cap() -> None:
    with pytest.raises(InvalidSetting, match="hard_cap"):
        parse_cap({"hard_cap": 1}, base=SpeculationCap(soft_cap=4))


def test_split_arctic_keys() -> None:
    for_vllm, ours = split_arctic_keys(
        {
            "method": "ngram",
            "disable_by_batch_size": 8,
            "hard-disable-by-batch-size": 32,
            "num_speculative_tokens": 3,
        }
    )
    assert for_vllm == {"method": "ngram", "num_speculative_tokens": 3}
    assert ours == {"soft_cap": 8, "hard_cap": 32}


# --- drafts_in_prefill_steps: which steps carry prefill work ----------------------------------

#: two requests decoding (1 token each) of at most 4, one waiting with a 100-token prompt, 512
#: tokens per step, 16-token blocks, plenty of free KV blocks
DECODING = QueueView(
    running_prefilling=False,
    running_tokens=2,
    slots_taken=2,
    max_num_seqs=4,
    token_budget=512,
    waiting=1,
    head_tokens_left=100,
    block_size=16,
    free_kv_blocks=1000,
)


@pytest.mark.parametrize(
    ("change", "prefill"),
    [
        ({}, True),  # a waiting request the step can admit
        ({"waiting": 0, "head_tokens_left": 0}, False),  # decode only
        # a running request mid-prompt (its next chunk): prefill, whatever waits or fits
        ({"running_prefilling": True, "waiting": 0}, True),
        ({"running_prefilling": True, "slots_taken": 4, "free_kv_blocks": 0}, True),
        # a full batch (max_num_seqs): nobody can be admitted, the step decodes and drafts
        ({"slots_taken": 4}, False),
        ({"slots_taken": 5}, False),
        ({"slots_taken": 3}, True),
        # the running requests take the whole token budget
        ({"running_tokens": 512}, False),
        ({"running_tokens": 511}, True),  # one token of the prompt fits: a chunk, prefill
        # the KV cache cannot hold the first chunk: not admitted, decode only
        ({"free_kv_blocks": 6}, False),
        ({"free_kv_blocks": 7}, True),  # 100 tokens = 7 blocks of 16
        ({"free_kv_blocks": 7, "watermark_blocks": 1}, False),  # vLLM keeps the watermark free
        # the watermark applies only while something runs (vLLM's has_scheduled_reqs)
        ({"free_kv_blocks": 7, "watermark_blocks": 1, "slots_taken": 0, "running_tokens": 0}, True),
    ],
)
def test_carries_prefill(change: dict[str, object], prefill: bool) -> None:
    assert carries_prefill(replace(DECODING, **change)) is prefill  # type: ignore[arg-type]


def test_admission_blocks_count_the_first_chunk_only() -> None:
    long = replace(DECODING, head_tokens_left=700, running_tokens=2)
    assert admission_blocks(long) == 32  # 510 tokens left in the budget: ceil(510 / 16)
    assert admission_blocks(replace(long, long_prefill_threshold=100)) == 7
    assert admission_blocks(replace(long, watermark_blocks=3)) == 35
    assert admission_blocks(replace(long, head_tokens_left=16)) == 1


def test_apply_cap_in_a_prefill_step_drops_every_draft() -> None:
    running = [Req([1, 2]), Req([]), Req([3])]
    outcome = apply_cap(running, SpeculationCap(), prefill=True)
    assert [r.spec_token_ids for r in running] == [[], [], []]
    assert (outcome.mode, outcome.drafted, outcome.dropped) == ("prefill", 0, 2)
    counters = SpeculationCounters()
    counters.record(outcome)
    counters.record(apply_cap([Req([1])], SpeculationCap(), prefill=False))
    assert counters.steps == {"open": 1, "soft_capped": 0, "hard_capped": 0, "prefill": 1}
    assert (counters.steps_drafting, counters.steps_not_drafting) == (1, 1)


def test_scheduled_phase_reads_what_vllm_scheduled() -> None:
    assert scheduled_phase(False, set(), []) == ("decode", False)
    assert scheduled_phase(False, set(), ["a"]) == ("decode", True)
    assert scheduled_phase(True, set(), ["a"]) == ("prefill", True)  # a running request's chunk
    assert scheduled_phase(False, {"new"}, []) == ("prefill", False)  # an admitted request
    # vLLM pads an admitted request with placeholder drafts: that verifies nothing
    assert scheduled_phase(False, {"new"}, ["new"]) == ("prefill", False)
    assert scheduled_phase(False, {"new"}, ["new", "a"]) == ("prefill", True)
    counters = SpeculationCounters()
    counters.record_scheduled("prefill", False)
    counters.record_scheduled("decode", True)
    counters.record_scheduled("decode", True)
    assert counters.as_dict()["phase_steps"] == {
        "prefill": {"on": 0, "off": 1},
        "decode": {"on": 2, "off": 0},
    }


def test_decode_step_is_one_token_plus_drafts_per_request_and_nobody_admitted() -> None:
    # three requests, one with 3 drafts and one with 1: 3 + 4 tokens
    assert decode_step(3, 7, [3, 1], admitted=False) == DecodeStep(requests=3, drafting=2, draft_tokens=4)
    assert decode_step(2, 2, [], admitted=False) == DecodeStep(requests=2, drafting=0, draft_tokens=0)
    assert decode_step(1, 1, [0], admitted=False) == DecodeStep(requests=1, drafting=0, draft_tokens=0)
    # a running request's prompt chunk (2 requests, 1 + 100 tokens): not decode-only
    assert decode_step(2, 101, [], admitted=False) is None
    # a chunk beside a drafting request: 1 + 2 drafts and a 50-token chunk
    assert decode_step(2, 53, [2], admitted=False) is None
    # an admitted or resumed request, with vLLM's placeholder drafts: not decode-only either
    assert decode_step(2, 4, [1, 1], admitted=True) is None
    assert decode_step(0, 0, [], admitted=False) is None  # an empty step


def test_decode_batch_buckets_at_their_edges() -> None:
    assert [decode_batch_bucket(n) for n in (1, 2, 3, 4, 5, 511, 512, 513, 600)] == [
        1, 2, 4, 4, 8, 512, 512, 512, 512,
    ]  # fmt: skip


def test_timer_counts_decode_steps_of_a_busy_engine_only() -> None:
    timer = DecodeStepTimer()
    one = DecodeStep(requests=1, drafting=0, draft_tokens=0)
    assert timer.observe(10.0, one, busy=True) is None  # the first output only starts the clock
    assert timer.observe(10.5, one, busy=True) == 0.5
    assert timer.observe(10.75, None, busy=True) is None  # a prefill step: not counted ...
    assert timer.observe(11.0, one, busy=True) == 0.25  # ... but the next step starts at its end
    assert timer.observe(30.0, one, busy=False) is None  # idle since the last output: the gap is no step
    assert timer.observe(30.125, one, busy=True) == 0.125
    assert timer.last_output == 30.125


def test_decode_steps_split_by_bucket_and_drafting_and_sum() -> None:
    counters = SpeculationCounters()
    zero = {"steps": 0, "seconds": 0.0, "requests": 0, "drafting": 0, "draft_tokens": 0}
    # every bucket and state from the start, as strings
    assert counters.as_dict()["decode_steps"] == {
        str(bucket): {"on": zero, "off": zero} for bucket in DECODE_BATCH_BUCKETS
    }
    counters.record_decode_step(DecodeStep(requests=1, drafting=0, draft_tokens=0), 0.5)
    counters.record_decode_step(DecodeStep(requests=1, drafting=1, draft_tokens=3), 0.75)
    counters.record_decode_step(DecodeStep(requests=2, drafting=0, draft_tokens=0), 0.25)
    counters.record_decode_step(DecodeStep(requests=3, drafting=2, draft_tokens=5), 1.0)
    counters.record_decode_step(DecodeStep(requests=4, drafting=1, draft_tokens=2), 0.5)
    counters.record_decode_step(DecodeStep(requests=512, drafting=0, draft_tokens=0), 2.0)
    counters.record_decode_step(DecodeStep(requests=600, drafting=0, draft_tokens=0), 3.0)
    steps = counters.as_dict()["decode_steps"]
    assert steps["1"] == {
        "on": {"steps": 1, "seconds": 0.75, "requests": 1, "drafting": 1, "draft_tokens": 3},
        "off": {"steps": 1, "seconds": 0.5, "requests": 1, "drafting": 0, "draft_tokens": 0},
    }
    assert steps["2"] == {
        "on": zero,
        "off": {"steps": 1, "seconds": 0.25, "requests": 2, "drafting": 0, "draft_tokens": 0},
    }
    # 3 and 4 requests share bucket 4
    assert steps["4"]["on"] == {"steps": 2, "seconds": 1.5, "requests": 7, "drafting": 3, "draft_tokens": 7}
    assert steps["4"]["off"] == zero
    # 512 and 600 requests: the last bucket
    assert steps["512"]["off"] == {
        "steps": 2,
        "seconds": 5.0,
        "requests": 1112,
        "drafting": 0,
        "draft_tokens": 0,
    }
    assert all(steps[str(b)] == {"on": zero, "off": zero} for b in (8, 16, 32, 64, 128, 256))
    # the snapshot is a copy
    steps["1"]["on"]["steps"] = 99
    assert counters.decode_steps["1"]["on"]["steps"] == 1
