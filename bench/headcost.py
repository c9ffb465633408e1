"""Draft heads' cost in the engine loop (suite ``heads-8b``; ``heads-cpu`` is its CPU dry run).

The suite writes a speculator of the base model's shape with random weights (``write_dummy_head``:
Arctic's LSTM, n_predict 3, in the layout Arctic Inference 0.3.0 loads, which ours reads too) and
starts vanilla vLLM, ours (``method: arctic`` with the plugin) and Arctic Inference's own proposer
on the same folder. Per batch size each engine reports (``bench.worker``'s ``draft-cost`` case):

* ``step_ms``: wall time per engine step, (E2E - TTFT) / (steps of the full run - steps of the
  1-token run), steps counted as ``execute_model`` calls in the worker (``bench.drafttimer``);
* ``draft_ms``: the drafter's own time per engine step: ``propose_draft_token_ids`` of the model
  runner (hidden-state gather, the head's k steps, the drafts to the host) timed between two CUDA
  synchronisations in one more run of the same batch (so the timed runs above keep their overlap).

With dummy weights the acceptance is meaningless, so the speedup a head would give is implied from
the held-out acceptance measured on real answers and the costs (``implied``):

* direct: ``speedup(b) = tau * step_vanilla(b) / step_head(b)``, both steps from this run;
* composed: ``speedup(b) = tau / (verify_k3(b) / vanilla(b) + draft_ms(b) / step_vanilla(b))``, the
  verification cost at k = 3 from the ``control-h200`` calibration run (acceptance forced to 0) and
  the draft cost from this run;

where ``tau`` is the head-alone tokens per step on the held-out requests
(``bench.speculator_accept``, LSTM head, ``mixed`` and per trace). ``tau`` comes from the SmolLM2
head on SmolLM2's answers: it stands in for an 8B head's acceptance, which no run has measured.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Stands for the speculator folder the suite writes, in an engine's ``speculative_config.model``.
HEAD_PLACEHOLDER = "{head}"
#: The acceptance and verification-cost runs the implied speedup reads (bench/results).
ACCEPT_FILE = "speculator-accept-20261203T150545Z.json"
VERIFY_FILE = "control-h200-20261203T110223Z.json"


def head_config_for(base: Mapping[str, Any], kind: str = "lstm", n_predict: int = 3) -> Any:
    """The speculator shape for a base model's config.json: Arctic's published layout with every
    width equal to the base model's hidden size, its own embedding and output head (not tied to the
    base model's), the steps' output heads tied together."""
    from arctic_runtime.train.speculator import head_config

    return head_config(
        kind, int(base["hidden_size"]), int(base["vocab_size"]), n_predict, tie_base_embeddings=False
    )


def write_dummy_head(base_folder: str | Path, out: str | Path, kind: str = "lstm", seed: int = 0) -> Path:
    """Random bf16 weights (Arctic's initialisation) for a head of ``base_folder``'s shape, written
    in Arctic Inference's layout (``save_arctic_layout``). For the 8B shape: 2.4 GB, ~1.2 G
    parameters (embedding and output head of 128256 x 4096 each); built without an fp32 copy."""
    import torch

    from arctic_runtime.heads.model import DraftHead, save_arctic_layout

    base = json.loads((Path(base_folder) / "config.json").read_text())
    config = head_config_for(base, kind)
    with torch.device("meta"):
        head = DraftHead(config)
    head.to(dtype=torch.bfloat16).to_empty(device="cpu")  # in place
    head.init_weights(torch.Generator().manual_seed(seed))
    return save_arctic_layout(head, out)


# --------------------------------------------------------------------------------------------
# The implied per-request speedup (pure: plain data in, plain data out)
# --------------------------------------------------------------------------------------------


def head_tokens_per_step(accept: Mapping[str, Any], head: str = "lstm") -> dict[str, float]:
    """Head-alone tokens per step on the held-out part, per trace (``mixed`` included)."""
    return {
        r["trace"]: float(r["tokens_per_step"])
        for r in accept["rows"]
        if r.get("part") == "heldout" and r["method"] == "head" and r["head"] == head
    }


def verify_ratios(control: Mapping[str, Any], k: int = 3) -> dict[int, float]:
    """Batch size -> TPOT with k drafts per request (acceptance forced to 0) over vanilla's TPOT, from
    a ``control-h200`` (or ``verify-8b``) run: the cost of a verification step relative to a plain one."""
    out: dict[int, float] = {}
    for key, value in control.get("ratios", {}).get(f"verify-k{k}/vanilla", {}).items():
        case, _, figure = key.partition(".")
        if figure == "tpot_ms" and case.startswith("batch-"):
            out[int(case.split("-")[1])] = float(value)
    return out


def implied(
    engines: Mapping[str, Any],
    cases: Sequence[Mapping[str, Any]],
    tau: Mapping[str, float],
    verify: Mapping[int, float],
    *,
    baseline: str = "vanilla",
) -> dict[str, Any]:
    """Per drafting engine and batch size: its step and draft cost relative to ``baseline``'s step,
    and the implied speedup per trace, direct and composed (module docstring). Engines or cases
    that did not run are left out; ``verify`` may lack a batch size (then no composed figure)."""
    base = engines.get(baseline, {}).get("cases")
    out: dict[str, Any] = {}
    if not base:
        return out
    for name, result in engines.items():
        if name == baseline or "cases" not in result:
            continue
        rows: dict[str, Any] = {}
        for case in cases:
            mine, ref = result["cases"].get(case["name"]), base.get(case["name"])
            if not mine or not ref or not mine.get("draft_ms"):
                continue
            b = int(case["num_prompts"])
            step0, step = ref["step_ms"]["median"], mine["step_ms"]["median"]
            draft = mine["draft_ms"]["per_step"]
            row: dict[str, Any] = {
                "batch": b,
                "step_ms": step,
                "vanilla_step_ms": step0,
                "step_ratio": step / step0,
                "draft_ms": draft,
                "draft_ratio": draft / step0,
                "direct": {t: v * step0 / step for t, v in tau.items()},
            }
            if b in verify:
                row["verify_k3_ratio"] = verify[b]
                row["composed"] = {t: v / (verify[b] + draft / step0) for t, v in tau.items()}
            rows[case["name"]] = row
        if rows:
            out[name] = rows
    return out


def implied_section(
    engines: Mapping[str, Any], cases: Sequence[Mapping[str, Any]], results: Path
) -> dict[str, Any]:
    """``implied`` with its inputs read from ``results`` (the files named above), and the formulas."""
    section: dict[str, Any] = {
        "formula": {
            "direct": "tau * step_ms(vanilla, b) / step_ms(engine, b)",
            "composed": "tau / (verify_k3_ratio(b) + draft_ms(engine, b) / step_ms(vanilla, b))",
            "tau": "head-alone tokens per step, held-out part, LSTM head (SmolLM2 on its own answers)",
        },
        "sources": {"tau": ACCEPT_FILE, "verify_k3_ratio": VERIFY_FILE},
    }
    try:
        tau = head_tokens_per_step(json.loads((results / ACCEPT_FILE).read_text()))
        verify = verify_ratios(json.loads((results / VERIFY_FILE).read_text()))
    except (OSError, ValueError, KeyError) as exc:
        section["error"] = f"inputs not readable: {exc}"
        return section
    section["tau"] = tau
    section["verify_k3_ratio"] = {str(b): r for b, r in sorted(verify.items())}
    section["engines"] = implied(engines, cases, tau, verify)
    return section
