"""Traces of real model outputs for suffix decoding: ``python -m bench.suffix_traces --out DIR``.

Runs the real SmolLM2-135M-Instruct through vLLM (offline ``LLM.chat``, CPU or GPU) on three
workloads and writes one JSON Lines trace per workload, ``{"prompt": [ids], "output": [ids]}`` per
request in the order a server would have finished them (what ``arctic-serve suffix-sim`` replays):

* ``edit``: code-editing requests (rename, add type hints, add a docstring, ...) over a handful of
  functions: the answer re-states most of the prompt's code;
* ``agent``: multi-turn agent loops: each turn's prompt is the whole conversation so far plus a new
  tool observation, and the model re-writes its code after each failure report;
* ``chat-repeat``: ordinary questions, each asked three times with sampling (temperature 0.7), as
  popular questions recur in real traffic.

Greedy decoding except for ``chat-repeat``; 256 tokens at most per answer (128 for chat). The
prompts are fixed, so a rerun on the same engine build gives the same traces.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.texts import PARSE_CONFIG

FUNCTIONS = [
    PARSE_CONFIG.rstrip(),
    """def merge_sorted(a, b):
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    out.extend(a[i:])
    out.extend(b[j:])
    return out""",
    """class Counter:
    def __init__(self):
        self.counts = {}

    def add(self, item):
        self.counts[item] = self.counts.get(item, 0) + 1

    def most_common(self, n):
        items = sorted(self.counts.items(), key=lambda kv: kv[1], reverse=True)
        return items[:n]""",
    """def fetch_all(client, urls, retries=3):
    results = {}
    for url in urls:
        for attempt in range(retries):
            try:
                results[url] = client.get(url).text
                break
            except TimeoutError:
                if attempt == retries - 1:
                    results[url] = None
    return results""",
    """function debounce(fn, wait) {
  let timer = null;
  return function (...args) {
    clearTimeout(timer);
    timer = setTimeout(() => fn.apply(this, args), wait);
  };
}""",
    """SELECT customers.name, COUNT(orders.id) AS orders, SUM(orders.total) AS spent
FROM customers
JOIN orders ON orders.customer_id = customers.id
WHERE orders.created_at >= '2024-01-01'
GROUP BY customers.name
ORDER BY spent DESC
LIMIT 10;""",
]

EDITS = [
    "Rename every variable to a more descriptive name and print the whole code again.",
    "Add comments explaining each step and print the whole code again.",
    "Add type hints (or the closest equivalent in this language) and print the whole code again.",
    "Fix any bug you can find, then print the complete corrected code.",
]

AGENT_SYSTEM = (
    "You are a coding agent. For each task, think briefly, then print the complete code in one "
    "code block. After every tool result, print the complete updated code again."
)
AGENT_TASKS = [
    "Write a Python function is_palindrome(s) that ignores case and spaces.",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Write a Python function that counts the words in a text file.",
    "Write a Python function that flattens a nested list.",
    "Write a Python function that checks whether a string is a valid IPv4 address.",
    "Write a Python function that returns the most frequent element of a list.",
]
AGENT_OBSERVATIONS = [
    "Tool result: tests failed: 1 of 5 cases wrong (empty input). Fix it.",
    "Tool result: tests pass. Now add a docstring and input validation.",
    "Tool result: lint failed: line too long. Reformat and print the whole code again.",
]

CHAT_QUESTIONS = [
    "What is the capital of Australia?",
    "How do I reverse a list in Python?",
    "Explain what an HTTP 404 error means.",
    "What is the difference between RAM and storage?",
    "Give me three tips for better sleep.",
    "How many minutes are in a day? Show the calculation.",
    "What does the acronym CPU stand for?",
    "Write a one-sentence definition of photosynthesis.",
    "How do I exit vim?",
    "What is a prime number?",
]

Message = dict[str, str]


def edit_conversations() -> list[list[Message]]:
    return [
        [{"role": "user", "content": f"{edit}\n\n```\n{code}\n```"}] for code in FUNCTIONS for edit in EDITS
    ]


def chat_rounds() -> list[list[list[Message]]]:
    return [[[{"role": "user", "content": q}] for q in CHAT_QUESTIONS] for _ in range(3)]


def run(out_dir: Path, device: str) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    from arctic_runtime.models import ensure_smollm2

    args: dict[str, Any] = {"max_model_len": 4096, "seed": 0}
    if device == "cpu":
        args.update(dtype="float32", enforce_eager=True, max_num_batched_tokens=1024)
    llm = LLM(str(ensure_smollm2()), **args)
    greedy = SamplingParams(temperature=0.0, max_tokens=256)
    traces: dict[str, list[dict[str, list[int]]]] = {"edit": [], "agent": [], "chat-repeat": []}

    def record(name: str, outputs: list[Any]) -> list[str]:
        for o in outputs:
            traces[name].append({"prompt": list(o.prompt_token_ids), "output": list(o.outputs[0].token_ids)})
        return [o.outputs[0].text for o in outputs]

    record("edit", llm.chat(edit_conversations(), greedy, use_tqdm=False))

    conversations: list[list[Message]] = [
        [{"role": "system", "content": AGENT_SYSTEM}, {"role": "user", "content": task}]
        for task in AGENT_TASKS
    ]
    for observation in [None, *AGENT_OBSERVATIONS]:
        if observation is not None:
            for conv in conversations:
                conv.append({"role": "user", "content": observation})
        texts = record("agent", llm.chat(conversations, greedy, use_tqdm=False))
        for conv, text in zip(conversations, texts, strict=True):
            conv.append({"role": "assistant", "content": text})

    for i, batch in enumerate(chat_rounds()):
        sampled = SamplingParams(temperature=0.7, seed=100 + i, max_tokens=128)
        record("chat-repeat", llm.chat(batch, sampled, use_tqdm=False))

    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for name, rows in traces.items():
        path = out_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
        summary[name] = {
            "file": str(path),
            "requests": len(rows),
            "prompt_tokens": sum(len(r["prompt"]) for r in rows),
            "output_tokens": sum(len(r["output"]) for r in rows),
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suffix_traces", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/traces"))
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.out, args.device), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
