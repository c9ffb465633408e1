"""Verify-cost curves: what drafting k tokens per request costs a decode step, by batch size. Pure.

Measured by the verify suites (``bench/results/verify-8b-*.json``: step time with k draft tokens per
request, all rejected, over the vanilla step time, at batch sizes 1-64) per model shape and GPU, and
shipped with the chart as JSON (``charts/arctic-serve/files/cost/<gpu>-<shape>.json``, mounted from a
ConfigMap). The operator reads the file named by ``ARCTIC_OPERATOR_COST_FILE``; without one it uses
the built-in H100 / Llama-3.1-8B curves (``DEFAULT_COSTS``).

The cap policy needs one curve: the cost at the pod's mean draft length (draft tokens per draft,
from vLLM's spec-decode counters). ``VerifyCosts.model_for`` interpolates between the measured k
linearly and is flat outside them (a 2-token mean between the k=1 and k=3 curves).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def interpolate_log(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """``ys`` at ``x``, linear in log(x) between the measured points ``xs`` (increasing, > 0), flat
    outside them. Step times and verify costs grow roughly with log(batch size) on a GPU."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    upper = bisect.bisect_left(xs, x)
    lower = upper - 1
    weight = (math.log(x) - math.log(xs[lower])) / (math.log(xs[upper]) - math.log(xs[lower]))
    return ys[lower] + weight * (ys[upper] - ys[lower])


@dataclass(frozen=True)
class VerifyCostModel:
    """Step time with k draft tokens per request over step time without, by batch size;
    interpolated linearly in log(batch), flat outside. Default: measured on the H100 with the
    Llama-3.1-8B shape, k=3 (bench/results/verify-8b-20261123T191722Z.json)."""

    batch_sizes: tuple[int, ...] = (1, 4, 16, 64)
    """Running requests (increasing, >= 1) at which the ratio was measured."""
    cost_ratios: tuple[float, ...] = (1.26, 1.33, 1.38, 1.67)
    """Step time with drafts / step time without, at each of ``batch_sizes``."""

    def __post_init__(self) -> None:
        if not self.batch_sizes or len(self.batch_sizes) != len(self.cost_ratios):
            raise ValueError("batch_sizes and cost_ratios must be non-empty and of the same length")
        if self.batch_sizes[0] < 1 or any(a >= b for a, b in itertools.pairwise(self.batch_sizes)):
            raise ValueError("batch_sizes must be increasing and >= 1")

    def cost(self, batch: float) -> float:
        return interpolate_log(self.batch_sizes, self.cost_ratios, batch)


@dataclass(frozen=True)
class VerifyCosts:
    """Verify-cost curves for several draft lengths k, measured at the same batch sizes."""

    batch_sizes: tuple[int, ...]
    by_draft_len: tuple[tuple[int, tuple[float, ...]], ...]
    """(k, cost ratio at each of batch_sizes), k increasing."""
    gpu: str = ""
    model_shape: str = ""
    source: str = ""
    """The result files the curves came from."""
    decode_step_s: tuple[float, ...] = ()
    """Seconds per vanilla decode step at each of batch_sizes; () when not measured. With
    ``prefill_s_per_token`` it prices drafting in time to first token (``cap.ttft_soft_cap``)."""
    prefill_s_per_token: float | None = None
    """Seconds of prefill per prompt token (the vanilla engine's TTFT of one long prompt / its
    length); None when not measured."""

    def __post_init__(self) -> None:
        if not self.by_draft_len:
            raise ValueError("by_draft_len: at least one draft length is needed")
        if self.decode_step_s and (
            len(self.decode_step_s) != len(self.batch_sizes)
            or any(not math.isfinite(s) or s <= 0 for s in self.decode_step_s)
        ):
            raise ValueError(
                f"decode_step_s: one positive time per batch size {list(self.batch_sizes)}, "
                f"got {list(self.decode_step_s)}"
            )
        if self.prefill_s_per_token is not None and not (
            math.isfinite(self.prefill_s_per_token) and self.prefill_s_per_token > 0
        ):
            raise ValueError(f"prefill_s_per_token: must be positive, got {self.prefill_s_per_token}")
        ks = [k for k, _ in self.by_draft_len]
        if ks[0] < 1 or any(a >= b for a, b in itertools.pairwise(ks)):
            raise ValueError(f"by_draft_len: draft lengths must be increasing and >= 1, got {ks}")
        for k, ratios in self.by_draft_len:
            VerifyCostModel(self.batch_sizes, ratios)  # validates the batch sizes and lengths
            if any(not math.isfinite(r) or r <= 0 for r in ratios):
                raise ValueError(f"by_draft_len[{k}]: cost ratios must be positive, got {list(ratios)}")

    def draft_lengths(self) -> tuple[int, ...]:
        return tuple(k for k, _ in self.by_draft_len)

    def model_for(self, draft_len: float | None) -> VerifyCostModel:
        """The curve at ``draft_len`` tokens per draft (None: the middle measured k), linear in k
        between measured lengths and flat outside them."""
        ks = self.draft_lengths()
        curves = [ratios for _, ratios in self.by_draft_len]
        if draft_len is None:
            return VerifyCostModel(self.batch_sizes, curves[(len(ks) - 1) // 2])
        if draft_len <= ks[0]:
            return VerifyCostModel(self.batch_sizes, curves[0])
        if draft_len >= ks[-1]:
            return VerifyCostModel(self.batch_sizes, curves[-1])
        upper = bisect.bisect_left(ks, draft_len)
        lower = upper - 1
        weight = (draft_len - ks[lower]) / (ks[upper] - ks[lower])
        ratios = tuple(a + weight * (b - a) for a, b in zip(curves[lower], curves[upper], strict=True))
        return VerifyCostModel(self.batch_sizes, ratios)

    def decode_step(self, batch: float) -> float | None:
        """Seconds per vanilla decode step of ``batch`` running requests (at least one); None when
        the step times were not measured."""
        if not self.decode_step_s:
            return None
        return interpolate_log(self.batch_sizes, self.decode_step_s, max(1.0, batch))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "gpu": self.gpu,
            "modelShape": self.model_shape,
            "source": self.source,
            "batchSizes": list(self.batch_sizes),
            "verifyCost": {str(k): list(ratios) for k, ratios in self.by_draft_len},
        }
        if self.decode_step_s:
            data["decodeStepSeconds"] = list(self.decode_step_s)
        if self.prefill_s_per_token is not None:
            data["prefillSecondsPerToken"] = self.prefill_s_per_token
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VerifyCosts:
        """From the chart's cost file; ValueError naming the key on bad input."""
        try:
            batches = tuple(int(b) for b in data["batchSizes"])
            curves = data["verifyCost"]
            by_k = tuple(sorted((int(k), tuple(float(r) for r in ratios)) for k, ratios in curves.items()))
            steps = tuple(float(t) for t in data.get("decodeStepSeconds", ()))
            prefill = data.get("prefillSecondsPerToken")
            prefill = None if prefill is None else float(prefill)
        except KeyError as exc:
            missing = exc.args[0]
            raise ValueError(f"cost file: missing key {missing!r} (needs batchSizes, verifyCost)") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            shape = (
                "batchSizes must be integers, verifyCost {k: [ratios]}, decodeStepSeconds [seconds], "
                "prefillSecondsPerToken a number"
            )
            raise ValueError(f"cost file: {shape}: {exc}") from exc
        return cls(
            batch_sizes=batches,
            by_draft_len=by_k,
            gpu=str(data.get("gpu", "")),
            model_shape=str(data.get("modelShape", "")),
            source=str(data.get("source", "")),
            decode_step_s=steps,
            prefill_s_per_token=prefill,
        )

    @classmethod
    def load(cls, path: Path) -> VerifyCosts:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cost file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"cost file {path}: must be a JSON object")
        return cls.from_json(data)


DEFAULT_COSTS = VerifyCosts(
    batch_sizes=(1, 4, 16, 64),
    by_draft_len=(
        (1, (1.24, 1.357, 1.386, 1.515)),
        (3, (1.262, 1.328, 1.381, 1.67)),
        (5, (1.459, 1.456, 1.523, 2.227)),
    ),
    gpu="H100",
    model_shape="llama-3.1-8b",
    source="verify-k<k> tpot_ms / vanilla tpot_ms of the same run: verify-8b-20261123T191722Z.json (k=1), "
    "verify-8b-20261123T191722Z.json (k=3), verify-8b-20261125T194437Z.json (k=5); decode steps: "
    "verify-8b-20261123T191722Z.json vanilla tpot_ms; prefill: overhead-8b-20261123T190159Z.json "
    "vanilla latency-512-256 ttft_ms / 512",
    decode_step_s=(0.006674, 0.006661, 0.006704, 0.007587),
    prefill_s_per_token=2.742e-05,
)
"""Built-in curves: H100, Llama-3.1-8B shape; the same numbers as the chart's
files/cost/h100-llama-3.1-8b.json (written by ``python -m bench.control --write-costs``)."""
