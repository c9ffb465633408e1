"""CPU cost of suffix decoding per engine step: ``python -m bench.suffix_speed``.

A batch of requests (default 64) decodes synthetic token streams with repetition (code-like "lines"
drawn from a shared pool, some copied from the prompt, some fresh). Each step, for every request:
``add_tokens`` with what the previous step accepted, then ``speculate``; acceptance is simulated
against the true stream (longest matching draft prefix plus the target model's own token). Only
the ``add_tokens`` and ``speculate`` calls are timed (``time.perf_counter_ns``), summed over the
batch: that is what the engine loop would pay per step on one core. Before the measured steps,
``--warm-requests`` finished responses fill the global tree so global matching is exercised too.

Prints one JSON object: ``us_per_step`` (mean, whole batch), ``us_per_request`` (per request per
step), percentiles, the split between update and speculate, the acceptance seen, and the issue's
target (``target_us_per_step``: 300 us per step for the batch on one core).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import time

from arctic_runtime.suffix import SuffixDecodingCache

TARGET_US_PER_STEP = 300.0


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


def run(batch: int, depth: int, steps: int, warm_requests: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    pool = [[rng.randrange(1000, 20_000) for _ in range(rng.randrange(5, 15))] for _ in range(400)]
    cache = SuffixDecodingCache(max_depth=depth)

    for i in range(warm_requests):  # finished responses for the global tree
        prompt, output = make_stream(rng, pool, 24)
        cache.start_request(("warm", i), prompt)
        cache.add_tokens(("warm", i), output[:400])
        cache.stop_request(("warm", i))

    streams = [make_stream(rng, pool, 24) for _ in range(batch)]
    for req_id, (prompt, _) in enumerate(streams):
        cache.start_request(req_id, prompt)
    produced = [0] * batch
    pending: list[list[int]] = [[] for _ in range(batch)]  # accepted last step, not yet added
    for req_id, (_, output) in enumerate(streams):  # the prefill's first token
        pending[req_id] = output[:1]
        produced[req_id] = 1

    clock = time.perf_counter_ns
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
            start = produced[req_id]
            hits = 0
            while hits < len(draft) and start + hits < len(output) and draft[hits] == output[start + hits]:
                hits += 1
            pending[req_id] = output[start : start + hits + 1]
            produced[req_id] += len(pending[req_id])
            drafted += len(draft)
            accepted += hits
            emitted += len(pending[req_id])
            if produced[req_id] >= len(output):
                raise RuntimeError("a synthetic stream ran out; make the streams longer")
        step_ns.append(this_step)

    step_ns.sort()
    mean_us = sum(step_ns) / len(step_ns) / 1e3
    memory = cache.memory_estimate()
    return {
        "batch": batch,
        "max_depth": depth,
        "steps": steps,
        "warm_requests": warm_requests,
        "us_per_step": round(mean_us, 1),
        "us_per_step_p50": round(step_ns[len(step_ns) // 2] / 1e3, 1),
        "us_per_step_p90": round(step_ns[int(len(step_ns) * 0.9)] / 1e3, 1),
        "us_per_request": round(mean_us / batch, 2),
        "us_update_per_step": round(update_ns / steps / 1e3, 1),
        "us_speculate_per_step": round(speculate_ns / steps / 1e3, 1),
        "tokens_per_request_step": round(emitted / (steps * batch), 2),
        "accept_rate": round(accepted / drafted, 3) if drafted else 0.0,
        "target_us_per_step": TARGET_US_PER_STEP,
        "meets_target": mean_us < TARGET_US_PER_STEP,
        "gc_enabled": gc.isenabled(),
        "nodes": memory["local_nodes"] + memory["global_nodes"],
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suffix_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warm-requests", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-gc", action="store_true", help="disable Python's cyclic GC while measuring")
    args = parser.parse_args(argv)
    if args.no_gc:
        gc.disable()
    print(json.dumps(run(args.batch, args.depth, args.steps, args.warm_requests, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
