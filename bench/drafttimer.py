"""Bench-only counters inside an engine's worker process, added as vLLM's ``worker_extension_cls``
(``"bench.drafttimer.DraftTimer"``), so they work the same for vanilla vLLM, ours and Arctic
Inference's engine without touching either plugin:

* ``bench_timer_install()`` wraps the model runner's class methods once: ``execute_model`` counts
  engine steps; ``propose_draft_token_ids`` (the whole drafting of a step: hidden states, the
  drafter, the drafts to the host) counts calls and, while ``bench_timer_sync(True)``, is timed
  between two device synchronisations (the first waits out the forward pass so that only the
  drafter's work is timed; the second its GPU kernels). Steps are the calls that schedule tokens
  (vLLM also calls ``execute_model`` with nothing scheduled to pass on finished requests: counted
  apart as ``empty_steps``). Off by default: the synchronisations cost
  overlap, so step times are measured with it off and the drafter with it on, in separate runs.
* ``bench_timer_read()`` returns the counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

_STATE: dict[str, Any] = {
    "steps": 0,
    "empty_steps": 0,
    "calls": 0,
    "timed_calls": 0,
    "timed_ns": 0,
    "sync": False,
}


def _sync_fn(runner: Any) -> Callable[[], None]:
    device = getattr(runner, "device", None)
    if getattr(device, "type", None) == "cuda":
        import torch

        def synchronize() -> None:
            torch.cuda.synchronize()

        return synchronize
    return lambda: None


def _wrap(cls: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> bool:
    original = getattr(cls, name, None)
    if original is None or getattr(original, "_bench_wrapped", False):
        return False
    wrapped = make(original)
    wrapped._bench_wrapped = True  # type: ignore[attr-defined]
    setattr(cls, name, wrapped)
    return True


class DraftTimer:
    """Mixed into the worker class by vLLM (``worker_extension_cls``); ``self`` is the worker."""

    model_runner: Any

    def bench_timer_install(self) -> dict[str, Any]:
        runner = self.model_runner
        cls = type(runner)
        sync = _sync_fn(runner)

        def count_steps(original: Callable[..., Any]) -> Callable[..., Any]:
            def execute_model(self: Any, *args: Any, **kwargs: Any) -> Any:
                scheduled = args[0] if args else kwargs.get("scheduler_output")
                if getattr(scheduled, "total_num_scheduled_tokens", 1) > 0:  # not a bookkeeping call
                    _STATE["steps"] += 1
                else:
                    _STATE["empty_steps"] += 1
                return original(self, *args, **kwargs)

            return execute_model

        def time_drafts(original: Callable[..., Any]) -> Callable[..., Any]:
            def propose_draft_token_ids(self: Any, *args: Any, **kwargs: Any) -> Any:
                _STATE["calls"] += 1
                if not _STATE["sync"]:
                    return original(self, *args, **kwargs)
                sync()
                started = time.perf_counter_ns()
                out = original(self, *args, **kwargs)
                sync()
                _STATE["timed_ns"] += time.perf_counter_ns() - started
                _STATE["timed_calls"] += 1
                return out

            return propose_draft_token_ids

        _wrap(cls, "execute_model", count_steps)
        _wrap(cls, "propose_draft_token_ids", time_drafts)
        return {**_STATE, "runner": f"{cls.__module__}.{cls.__qualname__}"}

    def bench_timer_sync(self, on: bool) -> dict[str, Any]:
        _STATE["sync"] = bool(on)
        return dict(_STATE)

    def bench_timer_read(self) -> dict[str, Any]:
        return dict(_STATE)
