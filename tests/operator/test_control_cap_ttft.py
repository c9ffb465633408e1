"""control.cap's TTFT budget, by worked example: how many of a batch may draft when drafting's
longer steps delay new requests' first tokens (exact caps, reasons and messages)."""

from __future__ import annotations

import dataclasses

import pytest

from arctic_operator.control.cap import (
    CapObservation,
    CapPolicy,
    CapState,
    decide_cap,
    ttft_soft_cap,
    undrafted_batch,
)
from arctic_operator.control.cost import VerifyCosts

COSTS = VerifyCosts(
    batch_sizes=(1, 16),
    by_draft_len=((3, (1.25, 1.5)),),
    decode_step_s=(0.01, 0.01),
    prefill_s_per_token=1e-5,
)
"""Verify cost 1.25 at batch 1, 1.5 at 16 and above; 10 ms decode steps; 10 us of prefill per token."""
POLICY = CapPolicy(min_cap=1, max_cap=32, costs=COSTS, ttft_budget=0.02)
"""TTFT budget 2 %, vLLM's behaviour (drafts in prefill steps); at 1.0 accepted per draft drafting
pays at every batch size (2 / 1.5 >= 1.1): the break-even size is the maximum, 32."""
PROMPT = 4000.0
"""Prompt tokens per request: 40 ms of prefill, so a first token takes 1.5 + 4 = 5.5 decode steps."""


def observe(time: float, running: float, prompt_tokens: float | None = PROMPT) -> CapObservation:
    return CapObservation(
        time=time,
        running=running,
        waiting=0.0,
        accepted_per_draft=1.0,
        effective_soft_cap=None,
        effective_hard_cap=None,
        complete=True,
        prompt_tokens=prompt_tokens,
    )


def test_the_budget_bounds_how_many_of_the_batch_draft() -> None:
    model = POLICY.model_for(None)
    # 2 % of 5.5 steps over 1.5 delayed steps = 7.33 % longer steps; each of 16 drafting adds 0.5 / 16
    assert ttft_soft_cap(POLICY, model, 16.0, PROMPT, 1.0) == 2  # floor(0.0733 x 16 / 0.5) = floor(2.35)
    assert ttft_soft_cap(POLICY, model, 32.0, PROMPT, 1.0) == 4  # floor(4.69)
    assert ttft_soft_cap(POLICY, model, 1.0, PROMPT, 1.0) == 0  # floor(0.0733 / 0.25)
    # a runtime that drops drafts in prefill steps delays a first token by half a step only: 3x more
    dropping = dataclasses.replace(POLICY, drafts_with_prefill=False)
    assert ttft_soft_cap(dropping, model, 16.0, PROMPT, 1.0) == 7  # floor(0.22 x 16 / 0.5) = floor(7.04)
    looser = dataclasses.replace(POLICY, ttft_budget=0.1)
    assert ttft_soft_cap(looser, model, 16.0, PROMPT, 1.0) == 11  # floor(0.3667 x 32) = floor(11.7)
    assert ttft_soft_cap(dataclasses.replace(POLICY, ttft_budget=None), model, 16.0, PROMPT, 1.0) is None
    assert ttft_soft_cap(POLICY, model, 16.0, None, 1.0) is None  # prompt length not measured yet


def test_within_the_budget_few_draft_and_the_hard_cap_stays_at_break_even() -> None:
    decision, state = decide_cap(POLICY, observe(0.0, 16.0), CapState())
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (2, 33, "Initial")
    assert decision.message == (
        "Soft cap None -> 2: drafting pays up to 32 running at 1.00 accepted per draft; 2 of 16.0 "
        "running may draft within the TTFT budget (2% at 4000 prompt tokens)."
    )
    assert decision.inputs["ttftBudgetCap"] == 2 and decision.inputs["promptTokensUsed"] == 4000.0
    assert (state.soft_cap, state.hard_cap, state.last_prompt_tokens) == (2, 33, PROMPT)
    # the same next tick: held, not taken for a cap out of bounds (hard is not soft + 1)
    decision, state = decide_cap(POLICY, observe(60.0, 16.0), state)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (2, 33, "WithinHysteresis")


def test_without_a_measured_prompt_length_the_soft_cap_is_the_break_even_size() -> None:
    decision, _ = decide_cap(POLICY, observe(0.0, 16.0, prompt_tokens=None), CapState())
    assert (decision.soft_cap, decision.hard_cap, decision.inputs["ttftBudgetCap"]) == (32, 33, None)
    # the last measured prompt length is kept while none finishes
    known = CapState(32, 33, -1000.0, 1.0, last_measured=-1000.0, last_prompt_tokens=PROMPT)
    decision, _ = decide_cap(POLICY, observe(0.0, 16.0, prompt_tokens=None), known)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (2, 33, "Lowered")


def test_beyond_the_budget_the_cap_comes_down_at_once() -> None:
    state = CapState(32, 33, last_change=-1000.0, last_accepted_per_draft=1.0, last_measured=-1000.0)
    decision, state = decide_cap(POLICY, observe(0.0, 16.0), state)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (2, 33, "Lowered")  # not 16
    assert decision.message.startswith("Soft cap 32 -> 2: drafting pays up to 32 running")
    # more running: a raise within the budget, step-limited and after the dwell
    decision, state = decide_cap(POLICY, observe(10.0, 32.0), state)
    assert (decision.soft_cap, decision.reason) == (2, "Dwell")
    decision, state = decide_cap(POLICY, observe(40.0, 32.0), state)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (4, 33, "Raised")


def test_when_not_one_request_fits_the_budget_nobody_drafts() -> None:
    decision, _ = decide_cap(POLICY, observe(0.0, 1.0), CapState())
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (1, 1, "Initial")
    assert decision.message == (
        "Soft cap None -> 1: drafting pays up to 32 running at 1.00 accepted per draft, but not one "
        "of 1.0 running may draft within the TTFT budget (2% at 4000 prompt tokens)."
    )
    drafting = CapState(2, 33, last_change=-1000.0, last_accepted_per_draft=1.0, last_measured=-1000.0)
    decision, _ = decide_cap(POLICY, observe(0.0, 1.0), drafting)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (1, 1, "NotPaying")


def test_an_odd_maximum_keeps_a_budget_limited_hard_cap_in_bounds() -> None:
    odd = dataclasses.replace(POLICY, max_cap=31)
    decision, state = decide_cap(odd, observe(0.0, 16.0), CapState())
    assert (decision.soft_cap, decision.hard_cap) == (2, 32)
    decision, _ = decide_cap(odd, observe(60.0, 16.0), state)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (2, 32, "WithinHysteresis")


def test_without_a_budget_a_lowering_is_step_limited_and_says_so() -> None:
    goodput = dataclasses.replace(POLICY, ttft_budget=None)
    obs = dataclasses.replace(observe(0.0, 16.0), accepted_per_draft=0.6)
    state = CapState(32, 33, last_change=-1000.0, last_accepted_per_draft=0.6, last_measured=-1000.0)
    decision, _ = decide_cap(goodput, obs, state)
    # 1.6 / cost(b) >= 1.1 up to b = 9 (cost 1.25 + 0.25 x log(b) / log(16))
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (16, 17, "Lowered")
    assert decision.message == (
        "Soft cap 32 -> 16 (step limit; target 9): drafting pays up to 9 running at 0.60 accepted per draft."
    )


def test_drafting_that_stopped_paying_stops_before_any_probe() -> None:
    # caps that let requests draft (hard above soft), acceptance measured long ago at zero
    state = CapState(4, 5, last_change=-1000.0, last_accepted_per_draft=0.0, last_measured=-1000.0)
    obs = dataclasses.replace(observe(0.0, 3.0), accepted_per_draft=None)
    decision, _ = decide_cap(POLICY, obs, state)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (1, 1, "NotPaying")


def test_the_inputs_are_rounded_for_status() -> None:
    obs = dataclasses.replace(
        observe(0.0, 16.0, prompt_tokens=812.34), accepted_per_draft=1.61234, draft_len=2.34567
    )
    decision, _ = decide_cap(POLICY, obs, CapState())
    inputs = decision.inputs
    assert (inputs["acceptedPerDraft"], inputs["acceptedPerDraftUsed"]) == (1.612, 1.612)
    assert (inputs["draftLen"], inputs["draftLenUsed"]) == (2.346, 2.346)
    assert inputs["promptTokensUsed"] == 812.3


GROWING = VerifyCosts(
    batch_sizes=(16, 64),
    by_draft_len=((3, (1.5, 1.5)),),
    decode_step_s=(0.01, 0.02),
    prefill_s_per_token=1e-5,
)
"""Verify cost 1.5 at every batch; the decode step grows from 10 ms at 16 running to 20 ms at 64
(15 ms at 32, linear in log(batch)): not drafting, whose requests run longer, pays a longer step."""
GROWING_POLICY = dataclasses.replace(POLICY, costs=GROWING)


def test_the_undrafted_batch_carries_the_same_tokens_per_second() -> None:
    # 8 of 16 draft at 1.0 accepted: 24 tokens a step, in 1 + 8 x 0.5 / 16 = 1.25 steps
    assert undrafted_batch(16.0, 8, 1.0, 0.5) == pytest.approx(19.2)  # 24 / 1.25
    assert undrafted_batch(16.0, 0, 1.0, 0.5) == 16.0
    assert undrafted_batch(32.0, 32, 2.0, 0.25) == pytest.approx(76.8)  # 96 / 1.25


def test_not_drafting_is_priced_at_the_batch_it_would_leave() -> None:
    model = GROWING_POLICY.model_for(None)
    # 5 of 16 drafting: 1.5 x 10 ms x (1 + 5 x 0.5 / 16) + 40 ms = 57.34 ms to a first token;
    # not drafting leaves 21 / 1.15625 = 18.16 running, steps of 10.91 ms: 1.02 x (16.37 + 40) = 57.50
    # 6: 57.81 ms against 1.02 x (1.5 x 11.06 + 40) = 57.72 ms, over the budget
    # (priced at the present batch, as before: floor(0.0733 x 16 / 0.5) = 2)
    assert ttft_soft_cap(GROWING_POLICY, model, 16.0, PROMPT, 1.0) == 5
    assert ttft_soft_cap(GROWING_POLICY, model, 32.0, PROMPT, 1.0) == 6
    assert ttft_soft_cap(GROWING_POLICY, model, 32.0, PROMPT, 2.0) == 20  # more gained, more may draft
    # the whole batch: 62.5 ms against 1.02 x (1.5 x 17.08 + 40) = 66.93 ms (64 / 1.5 = 42.67 running)
    assert ttft_soft_cap(GROWING_POLICY, model, 16.0, PROMPT, 3.0) is None
    assert ttft_soft_cap(GROWING_POLICY, model, 16.0, PROMPT, 2.0) is None
    # from 64 running on the step is flat (the largest measured batch): the budget at a fixed batch,
    # floor(0.02 x (1.5 + 40 / 20) / 1.5 x 64 / 0.5) = floor(5.97)
    assert ttft_soft_cap(GROWING_POLICY, model, 64.0, PROMPT, 3.0) == 5
    dropping = dataclasses.replace(GROWING_POLICY, drafts_with_prefill=False)
    assert ttft_soft_cap(dropping, model, 64.0, PROMPT, 1.0) == 17  # floor(0.07 / 0.5 x 128)
    assert ttft_soft_cap(dropping, model, 16.0, PROMPT, 1.0) is None


def test_a_first_token_at_the_budget_s_edge_is_within_it() -> None:
    model = POLICY.model_for(None)
    # 10 ms steps, 78.75 ms of prefill: 4 of 16 drafting add 1.5 x 10 x 4 x 0.5 / 16 = 1.875 ms,
    # exactly 2 % of 93.75 ms
    assert ttft_soft_cap(POLICY, model, 16.0, 7875.0, 1.0) == 4
    assert ttft_soft_cap(POLICY, model, 16.0, 7874.0, 1.0) == 3


def test_a_batch_that_may_draft_whole_keeps_the_break_even_caps() -> None:
    obs = dataclasses.replace(observe(0.0, 16.0), accepted_per_draft=3.0)
    decision, _ = decide_cap(GROWING_POLICY, obs, CapState())
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (32, 33, "Initial")
    assert decision.inputs["ttftBudgetCap"] is None
    assert decision.message == (
        "Soft cap None -> 32: drafting pays up to 32 running at 3.00 accepted per draft."
    )
    decision, _ = decide_cap(GROWING_POLICY, observe(0.0, 16.0), CapState())
    assert (decision.soft_cap, decision.hard_cap, decision.inputs["ttftBudgetCap"]) == (5, 33, 5)
    assert decision.message == (
        "Soft cap None -> 5: drafting pays up to 32 running at 1.00 accepted per draft; 5 of 16.0 "
        "running may draft within the TTFT budget (2% at 4000 prompt tokens)."
    )


def test_budget_edges_and_what_cannot_be_priced() -> None:
    model = POLICY.model_for(None)
    # 3 of 16 drafting add 1.5 x 10 x 3 x 0.5 / 16 = 1.40625 ms, 2 % of 70.3125 ms (15 ms + 5,531.25
    # prompt tokens): equal in exact arithmetic, 1.4e-17 s over it in floating point, still within
    assert ttft_soft_cap(POLICY, model, 16.0, 5531.25, 1.0) == 3
    # dyadic numbers, equal in floating point too: a 25 % budget, 1/64 s steps, no prompt;
    # 8 of 16 drafting add 1.5 x 8 x 0.5 / 16 = 0.375 steps, 25 % of 1.5
    dyadic = VerifyCosts(
        batch_sizes=(16,), by_draft_len=((3, (1.5,)),), decode_step_s=(1 / 64,), prefill_s_per_token=1e-5
    )
    quarter = dataclasses.replace(POLICY, costs=dyadic, ttft_budget=0.25)
    assert ttft_soft_cap(quarter, quarter.model_for(None), 16.0, 0.0, 0.0) == 8
    # no prefill rate in the cost file: not priced
    unpriced = VerifyCosts(batch_sizes=(1, 16), by_draft_len=((3, (1.25, 1.5)),), decode_step_s=(0.01, 0.01))
    assert ttft_soft_cap(dataclasses.replace(POLICY, costs=unpriced), model, 16.0, PROMPT, 1.0) is None
    # fewer than one running is priced as one: a 5 % longer step for the lone request fits
    # (0.0733 >= 0.05); at two it would be 50 % for one of two, which does not
    cheap = VerifyCosts(
        batch_sizes=(1, 2),
        by_draft_len=((3, (1.05, 1.5)),),
        decode_step_s=(0.01, 0.01),
        prefill_s_per_token=1e-5,
    )
    lone = dataclasses.replace(POLICY, costs=cheap)
    assert ttft_soft_cap(lone, lone.model_for(None), 0.5, PROMPT, 1.0) is None
    assert ttft_soft_cap(lone, lone.model_for(None), 2.0, PROMPT, 1.0) == 0
