"""Replay a trace of requests through suffix decoding and measure what it would accept.

A trace is JSON Lines, one request per line: ``{"prompt": [token ids], "output": [token ids]}``.
Requests are replayed in file order through one cache, so later requests see earlier responses in
the global trie. Per request: ``start_request(prompt)``, then steps until the output is produced:
draft (``speculate``), accept the longest draft prefix equal to the true next output tokens plus one
more token (the one the target model produces itself; none once the output is complete), feed the
accepted tokens back (``add_tokens``). Then ``stop_request``.

``simulate`` runs our ``SuffixDecodingCache`` (the native backend when it is built, else the Python
one; its result says which under ``backend``); ``simulate_arctic`` runs Arctic Inference's (when
installed) through the same loop. Neither needs vLLM or torch.
"""

from __future__ import annotations

import importlib
import inspect
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arctic_runtime.suffix.tree import BackendChoice, SuffixConfig, SuffixDecodingCache

RESULT_KEYS = (
    "requests",
    "output_tokens",
    "steps",
    "tokens_per_step",
    "mean_accepted_per_step",
    "accept_rate",
    "mean_draft_len",
    "us_per_speculate",
    "us_per_update",
)

ARCTIC_MODULE = "arctic_inference.suffix_decoding"


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file (and line)."""


@dataclass(frozen=True)
class TraceRequest:
    prompt: list[int]
    output: list[int]


def _token_list(value: object, key: str, where: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(tok, int) and not isinstance(tok, bool) and tok >= 0 for tok in value
    ):
        raise TraceError(f"{where}: {key!r} must be a list of non-negative integer token ids")
    return value


def load_trace(path: str | Path) -> list[TraceRequest]:
    """Read a JSONL trace; blank lines are skipped. ``TraceError`` names the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TraceError(f"{path}: cannot read trace: {reason}") from None
    requests: list[TraceRequest] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict) or "prompt" not in obj or "output" not in obj:
            raise TraceError(f'{where}: expected an object {{"prompt": [...], "output": [...]}}')
        requests.append(
            TraceRequest(
                _token_list(obj["prompt"], "prompt", where), _token_list(obj["output"], "output", where)
            )
        )
    if not requests:
        raise TraceError(f"{path}: no requests in trace")
    return requests


@dataclass
class _Tally:
    requests: int = 0
    output_tokens: int = 0
    steps: int = 0
    drafted: int = 0
    accepted: int = 0
    speculate_ns: int = 0
    speculate_calls: int = 0
    update_ns: int = 0
    update_calls: int = 0

    def result(self) -> dict[str, Any]:
        steps = max(self.steps, 1)
        return {
            "requests": self.requests,
            "output_tokens": self.output_tokens,
            "steps": self.steps,
            "tokens_per_step": self.output_tokens / steps,
            "mean_accepted_per_step": self.accepted / steps,
            "accept_rate": self.accepted / self.drafted if self.drafted else 0.0,
            "mean_draft_len": self.drafted / steps,
            "us_per_speculate": self.speculate_ns / max(self.speculate_calls, 1) / 1e3,
            "us_per_update": self.update_ns / max(self.update_calls, 1) / 1e3,
        }


def _accepted_prefix(draft: Sequence[int], truth: Sequence[int], start: int) -> int:
    n = 0
    limit = min(len(draft), len(truth) - start)
    while n < limit and draft[n] == truth[start + n]:
        n += 1
    return n


def _replay(
    requests: Sequence[TraceRequest],
    start: Callable[[int, list[int]], None],
    speculate: Callable[[int, list[int]], Sequence[int]],
    update: Callable[[int, list[int]], None],
    stop: Callable[[int], None],
) -> dict[str, Any]:
    """The replay loop, shared by every implementation. ``speculate`` gets the request id and its
    full token sequence so far (prompt + accepted output)."""
    tally = _Tally()
    clock = time.perf_counter_ns
    for req_id, req in enumerate(requests):
        tally.requests += 1
        tally.output_tokens += len(req.output)
        sequence = list(req.prompt)
        start(req_id, req.prompt)
        produced = 0
        while produced < len(req.output):
            t0 = clock()
            draft = speculate(req_id, sequence)
            t1 = clock()
            tally.speculate_ns += t1 - t0
            tally.speculate_calls += 1
            hits = _accepted_prefix(draft, req.output, produced)
            accepted = req.output[produced : produced + hits + 1]  # + the target model's own token
            tally.steps += 1
            tally.drafted += len(draft)
            tally.accepted += hits
            produced += len(accepted)
            sequence.extend(accepted)
            t0 = clock()
            update(req_id, accepted)
            tally.update_ns += clock() - t0
            tally.update_calls += 1
        stop(req_id)
    return tally.result()


def simulate(
    requests: Sequence[TraceRequest], config: SuffixConfig, backend: BackendChoice = "auto"
) -> dict[str, Any]:
    """Replay ``requests`` through our ``SuffixDecodingCache``; returns the ``RESULT_KEYS`` dict plus
    ``backend`` ("native" or "python": the cache backend that ran)."""
    cache = SuffixDecodingCache(config=config, backend=backend)
    result = _replay(
        requests,
        start=cache.start_request,
        speculate=lambda req_id, _sequence: cache.speculate(req_id).token_ids,
        update=cache.add_tokens,
        stop=cache.stop_request,
    )
    result["backend"] = cache.backend
    return result


def arctic_available() -> bool:
    try:
        importlib.import_module(ARCTIC_MODULE)
    except ImportError:
        return False
    return True


def simulate_arctic(requests: Sequence[TraceRequest], config: SuffixConfig) -> dict[str, Any]:
    """The same replay through Arctic Inference's ``SuffixDecodingCache`` (``ImportError`` if it is
    not installed). Its ``speculate`` takes the pattern (the last ``max_depth`` tokens) and the
    speculation limits per call; ``max_spec_offset`` is passed only if its version accepts it."""
    module: Any = importlib.import_module(ARCTIC_MODULE)
    cache: Any = module.SuffixDecodingCache(
        max_tree_depth=config.max_depth, max_cached_requests=config.max_cached_requests
    )
    spec_kwargs: dict[str, Any] = {
        "max_spec_tokens": config.max_spec_tokens,
        "max_spec_factor": config.max_spec_factor,
        "min_token_prob": config.min_token_prob,
    }
    try:
        if "max_spec_offset" in inspect.signature(cache.speculate).parameters:
            spec_kwargs["max_spec_offset"] = config.max_spec_offset
    except (TypeError, ValueError):  # a compiled method may have no introspectable signature
        pass

    def speculate(req_id: int, sequence: list[int]) -> list[int]:
        draft: Any = cache.speculate(req_id, sequence[-config.max_depth :], **spec_kwargs)
        return [int(tok) for tok in draft.token_ids]

    return _replay(
        requests,
        start=cache.start_request,
        speculate=speculate,
        update=cache.add_active_response,
        stop=cache.stop_request,
    )
