"""CPU cost of suffix decoding per engine step: ``python -m bench.suffix_speed``.

A batch of requests (default 64) decodes synthetic token streams with repetition (code-like "lines"
drawn from a shared pool, some copied from the prompt, some fresh). Each step, for every request:
``add_tokens`` with what the previous step accepted, then ``speculate``; acceptance is simulated
against the true stream (longest matching draft prefix plus the target model's own token). Only
the ``add_tokens`` and ``speculate`` calls are timed (``time.perf_counter_ns``, or with ``--clock cpu``
the thread's CPU time, ``time.thread_time_ns``: on a shared, oversubscribed machine the wall clock
also counts the time other processes held the core), summed over the
batch: that is what the engine loop would pay per step on one core. Before the measured steps,
``--warm-requests`` finished responses fill the global tree so global matching is exercised too; the
batch's own responses go into it live as they are generated (and are matched by each other).

Before the measured run, ``--warmup-passes`` (default 1) untimed replays of the same workload on a
throwaway cache touch the memory the run needs once: the first touch of fresh memory (page faults;
on a VM also the host backing the pages) is a one-time cost of a process that grows, not of a
steady engine loop, where the cache recycles freed memory. ``--warmup-passes 0`` measures it too.

The same steps are then replayed through the engine's own entry point (``SuffixDrafter.propose``:
one ``sync_and_draft`` call per step for the whole batch, fed a vLLM-style numpy token buffer), timed
per call: ``us_per_step_engine``, what the engine loop pays. Both replays draft exactly the same tokens.

``--backend`` picks the cache backend (auto: native when built, else Python; see
``arctic_runtime.suffix``). Prints one JSON object: the ``backend`` that ran, ``us_per_step`` (mean,
whole batch, one ``add_tokens`` + one ``speculate`` call per request), ``us_per_request`` (per
request per step), percentiles, the split between update and speculate, ``us_per_step_engine``
(and its p50, p90), the acceptance seen, memory (``bytes_per_node``: the node record;
``allocated_bytes_per_node``: everything the cache holds divided by its trie nodes, natively below
the record size because unique paths are stored as tails) and the issue's target
(``target_us_per_step``: 300 us per step for the batch on one core).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import time
from pathlib import Path
from typing import Any

from arctic_runtime.suffix import SuffixDecodingCache
from arctic_runtime.suffix.tree import BackendChoice, SuffixConfig

TARGET_US_PER_STEP = 300.0
CLOCKS = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}


def make_stream(rng: random.Random, pool: list[list[int]], lines: int) -> tuple[list[int], list[int]]:
    """(prompt, output): the prompt is ``lines`` pool lines; the output mostly re-uses the prompt's
    lines (an edit), sometimes other pool lines, sometimes fresh tokens."""
    prompt_lines = [pool[rng.randrange(len(pool))] for _ in range(lines)]
    output: list[int] = []
    while len(output) < lines * 40:
        roll = rng.random()
        if roll < 0.6:
            output.extend(prompt_lines[rng.randrange(lines)])
        elif roll < 0.85:
            output.extend(pool[rng.randrange(len(pool))])
        else:
            output.extend(rng.randrange(20_000, 50_000) for _ in range(rng.randrange(3, 12)))
    return [tok for line in prompt_lines for tok in line], output


def make_repeat_stream(rng: random.Random) -> tuple[list[int], list[int]]:
    """(prompt, output) of the ``repeat`` workload: a random 128-token prompt, then one token over and
    over, as a model with dummy weights answers (the GPU suites' 8B shape): every draft is accepted
    and every suffix is shared, the tries' worst case."""
    return [rng.randrange(1000, 20_000) for _ in range(128)], [7] * 4000


def _warm(
    cache: SuffixDecodingCache, batch: int, warm_requests: int, seed: int, workload: str = "edit"
) -> list[tuple[list[int], list[int]]]:
    """Put ``warm_requests`` finished responses into ``cache``'s global tree; the batch's streams."""
    rng = random.Random(seed)
    pool = [[rng.randrange(1000, 20_000) for _ in range(rng.randrange(5, 15))] for _ in range(400)]
    if workload == "repeat":
        for i in range(warm_requests):
            prompt, output = make_repeat_stream(rng)
            cache.start_request(("warm", i), prompt)
            cache.add_tokens(("warm", i), output[:400])
            cache.stop_request(("warm", i))
        return [make_repeat_stream(rng) for _ in range(batch)]
    for i in range(warm_requests):
        prompt, output = make_stream(rng, pool, 24)
        cache.start_request(("warm", i), prompt)
        cache.add_tokens(("warm", i), output[:400])
        cache.stop_request(("warm", i))
    return [make_stream(rng, pool, 24) for _ in range(batch)]


def _setup(
    batch: int, depth: int, warm_requests: int, seed: int, backend: BackendChoice, workload: str = "edit"
) -> tuple[SuffixDecodingCache, list[tuple[list[int], list[int]]]]:
    """A cache with ``warm_requests`` finished responses and ``batch`` started requests (ids 0..batch-1)."""
    cache = SuffixDecodingCache(max_depth=depth, backend=backend)
    streams = _warm(cache, batch, warm_requests, seed, workload)
    for req_id, (prompt, _) in enumerate(streams):
        cache.start_request(req_id, prompt)
    return cache, streams


def _engine_steps(
    batch: int,
    depth: int,
    steps: int,
    warm_requests: int,
    seed: int,
    backend: BackendChoice,
    workload: str = "edit",
    clock_name: str = "wall",
) -> tuple[list[int], int]:
    """The same workload through the engine's own entry point, ``SuffixDrafter.propose``, fed the way
    vLLM's suffix proposer feeds it (a ``max_model_len``-wide token buffer, numpy when installed,
    with the token counts per row): (ns per propose call, drafted). The first call is the prefill
    step, where every request is started with its prompt (the other replays start them untimed): it
    is left out of the times, not of the drafts. Against an older checkout without ``propose``
    (``bench/gpu/suffix_host.sh BASELINE``) it replays that checkout's hook: a ``BatchRow`` per request
    and ``SuffixDrafter.step``."""
    from arctic_runtime.suffix.engine import SuffixDrafter

    config = SuffixConfig(max_depth=depth)
    max_model_len = 4096
    drafter = SuffixDrafter(config, max_model_len, backend=backend)
    streams = _warm(drafter.cache, batch, warm_requests, seed, workload)
    try:
        import numpy as np

        buffer: Any = np.zeros((batch, max_model_len), dtype=np.int32)
    except ImportError:
        buffer = [[0] * max_model_len for _ in range(batch)]
    num_tokens = [0] * batch
    num_prompt = [len(prompt) for prompt, _ in streams]
    produced = [0] * batch
    pending: list[list[int]] = []
    for i, (prompt, output) in enumerate(streams):
        buffer[i][: len(prompt)] = prompt
        num_tokens[i] = len(prompt)
        pending.append(output[:1])  # the prefill's token
        produced[i] = 1
    req_ids = list(range(batch))
    sampled = [[0]] * batch  # every row sampled a token each step
    propose = getattr(drafter, "propose", None)
    if propose is None:  # a checkout from before propose() (A/B runs against a baseline): its hook
        from arctic_runtime.suffix.engine import BatchRow  # built one row object per request

        def propose(ids: Any, rows: Any, counts: Any, prompts: Any, flags: Any, k: int, on: bool) -> Any:
            batch_rows = [
                BatchRow(rid, rows[i][: int(counts[i])], int(prompts[i]), bool(flags[i]))
                for i, rid in enumerate(ids)
            ]
            return drafter.step(batch_rows, k, on)

    clock = CLOCKS[clock_name]
    step_ns: list[int] = []
    drafted = 0
    for step in range(steps):
        for i, accepted in enumerate(pending):  # what the engine wrote into its buffer this step
            buffer[i][num_tokens[i] : num_tokens[i] + len(accepted)] = accepted
            num_tokens[i] += len(accepted)
        t0 = clock()
        drafts = propose(req_ids, buffer, num_tokens, num_prompt, sampled, config.max_spec_tokens, True)
        if step > 0:
            step_ns.append(clock() - t0)
        for i, draft in enumerate(drafts):
            pending[i] = _accept(draft, streams[i][1], produced[i])
            produced[i] += len(pending[i])
            drafted += len(draft)
    return step_ns, drafted


def _accept(draft: list[int], output: list[int], start: int) -> list[int]:
    """The tokens a step emits: the longest correct draft prefix plus the target model's own token."""
    hits = 0
    while hits < len(draft) and start + hits < len(output) and draft[hits] == output[start + hits]:
        hits += 1
    if start + hits >= len(output):
        raise RuntimeError("a synthetic stream ran out; make the streams longer")
    return output[start : start + hits + 1]


def run(
    batch: int,
    depth: int,
    steps: int,
    warm_requests: int,
    seed: int,
    backend: BackendChoice = "auto",
    warmup_passes: int = 1,
    workload: str = "edit",
    clock_name: str = "wall",
) -> dict[str, object]:
    for _ in range(warmup_passes):
        _engine_steps(batch, depth, steps, warm_requests, seed, backend, workload)
    gc.collect()
    cache, streams = _setup(batch, depth, warm_requests, seed, backend, workload)
    produced = [0] * batch
    pending: list[list[int]] = [[] for _ in range(batch)]  # accepted last step, not yet added
    for req_id, (_, output) in enumerate(streams):  # the prefill's first token
        pending[req_id] = output[:1]
        produced[req_id] = 1

    clock = CLOCKS[clock_name]
    step_ns: list[int] = []
    update_ns = speculate_ns = 0
    drafted = accepted = emitted = 0
    for _ in range(steps):
        this_step = 0
        for req_id in range(batch):
            output = streams[req_id][1]
            t0 = clock()
            cache.add_tokens(req_id, pending[req_id])
            t1 = clock()
            draft = cache.speculate(req_id).token_ids
            t2 = clock()
            update_ns += t1 - t0
            speculate_ns += t2 - t1
            this_step += t2 - t0
            pending[req_id] = _accept(draft, output, produced[req_id])
            produced[req_id] += len(pending[req_id])
            drafted += len(draft)
            accepted += len(pending[req_id]) - 1
            emitted += len(pending[req_id])
        step_ns.append(this_step)
    memory = cache.memory_estimate()
    nodes = memory["local_nodes"] + memory["global_nodes"]
    used_backend = cache.backend
    del cache

    engine_ns, engine_drafted = _engine_steps(
        batch, depth, steps, warm_requests, seed, backend, workload, clock_name
    )
    if engine_drafted != drafted:
        raise RuntimeError(
            "the engine replay (SuffixDrafter.propose) drafted differently from the per-call one"
        )

    step_ns.sort()
    engine_ns.sort()
    mean_us = sum(step_ns) / len(step_ns) / 1e3
    engine_us = sum(engine_ns) / len(engine_ns) / 1e3
    return {
        "backend": used_backend,
        "workload": workload,
        "clock": clock_name,
        "batch": batch,
        "max_depth": depth,
        "steps": steps,
        "warm_requests": warm_requests,
        "warmup_passes": warmup_passes,
        "us_per_step": round(mean_us, 1),
        "us_per_step_p50": round(step_ns[len(step_ns) // 2] / 1e3, 1),
        "us_per_step_p90": round(step_ns[int(len(step_ns) * 0.9)] / 1e3, 1),
        "us_per_request": round(mean_us / batch, 2),
        "us_update_per_step": round(update_ns / steps / 1e3, 1),
        "us_speculate_per_step": round(speculate_ns / steps / 1e3, 1),
        "us_per_step_engine": round(engine_us, 1),
        "us_per_step_engine_p50": round(engine_ns[len(engine_ns) // 2] / 1e3, 1),
        "us_per_step_engine_p90": round(engine_ns[int(len(engine_ns) * 0.9)] / 1e3, 1),
        "tokens_per_request_step": round(emitted / (steps * batch), 2),
        "accept_rate": round(accepted / drafted, 3) if drafted else 0.0,
        "target_us_per_step": TARGET_US_PER_STEP,
        "meets_target": mean_us < TARGET_US_PER_STEP,
        "meets_target_engine": engine_us < TARGET_US_PER_STEP,
        "gc_enabled": gc.isenabled(),
        "nodes": nodes,
        "bytes_per_node": memory["bytes_per_node"],
        "allocated_bytes_per_node": round(memory["allocated_bytes"] / max(nodes, 1), 1),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suffix_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warm-requests", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workload",
        choices=["edit", "repeat"],
        default="edit",
        help="edit: code-like lines re-used from the prompt and a shared pool (default); repeat: one "
        "token over and over, every draft accepted (what dummy weights produce; the worst case)",
    )
    parser.add_argument("--no-gc", action="store_true", help="disable Python's cyclic GC while measuring")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time (default); cpu: this thread's CPU time (steadier on a shared machine)",
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "native", "python"],
        default="auto",
        help="suffix cache backend (default: auto, native when built)",
    )
    parser.add_argument(
        "--warmup-passes",
        type=int,
        default=1,
        help="untimed replays before measuring, so that memory is touched once (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="also write bench/results-style JSON (suite suffix-speed) into this folder, for the report",
    )
    args = parser.parse_args(argv)
    if args.no_gc:
        gc.disable()
    result = run(
        args.batch,
        args.depth,
        args.steps,
        args.warm_requests,
        args.seed,
        args.backend,
        args.warmup_passes,
        args.workload,
        args.clock,
    )
    print(json.dumps(result))
    if args.out is not None:
        print(write_result(result, args.out))
    return 0


def write_result(result: dict[str, object], out_dir: Path) -> Path:
    """``result`` as ``<out_dir>/suffix-speed-<time>.json`` with the fields the report reads."""
    import datetime as dt
    import os

    now = dt.datetime.now(dt.UTC)
    wrapped = {
        "suite": "suffix-speed",
        "kind": "suffix-speed",
        "description": "CPU cost of suffix decoding per engine step (update + speculate for the whole "
        "batch, one core): python -m bench.suffix_speed",
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "host": os.environ.get("ARCTIC_BENCH_HOST"),
            "commit": os.environ.get("ARCTIC_BENCH_COMMIT"),
        },
        "result": result,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"suffix-speed-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(wrapped, indent=2) + "\n")
    return path


if __name__ == "__main__":
    raise SystemExit(main())
