"""Draft heads inside an engine loop: the front end's translation of ``speculative_config``, the
hybrid rule, and a drafter kept in step with the engine's batch. No vLLM import (``hooks`` adapts).

**How it is wired.** vLLM 0.26 has no V1 proposer for MLP speculators and no ``"arctic"`` method,
so the front end rewrites ``{"method": "arctic" | "mlp_speculator", "model": DIR,
"num_speculative_tokens": k, "enable_suffix_decoding": bool, ...}`` into vLLM's ``method:
"suffix"`` (whose proposer the plugin already replaces) plus our
``additional_config["arctic"]["heads"]`` section. Each step the runner hook hands the drafter the
base model's final hidden state at every request's last accepted position and the token sampled
from it; the drafter runs the head (and, in hybrid mode, suffix decoding) and returns one draft per
request.

**Two paths.** vLLM schedules asynchronously (the host prepares step n + 1 while the device runs
step n) only for its EAGLE-like methods. *Head alone*: while its config is built, ``suffix``
counts as EAGLE-like (``hooks.wrap_vllm_config_post_init``), so vLLM keeps asynchronous scheduling
where it would for EAGLE; the step's last valid tokens and counts are found on the device before
bookkeeping (``accepted_tokens``, handed to vLLM's asynchronous spec-decode state) and the head
drafts on the device (``propose_on_device``); vLLM scatters the drafts into the next step's inputs
without the host waiting. *Hybrid* (and any engine where vLLM decides synchronous scheduling): the
drafter runs after bookkeeping from the host's lists (``propose``), on the step's critical path,
because the suffix cache reads every sampled token on the host.

**Hybrid** (``enable_suffix_decoding``, Arctic's key): per request and step the suffix cache is
updated and searched; its draft is used when its score (the expected number of accepted tokens)
is at least ``hybrid_threshold`` (default 1.0, chosen by measurement: ``DEFAULT_HYBRID_THRESHOLD``),
and continued by the head when it is shorter than ``k`` (the head drafts with the suffix tokens
forced); otherwise the head's draft. ``hybrid_threshold = n_predict`` is Arctic's rule. vLLM's
``num_speculative_tokens`` is then the longer of the two caps.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from arctic_runtime.contract import (
    DEFAULT_SUFFIX_TREE_DEPTH,
    HEAD_METHODS,
    FieldError,
    HeadSettings,
    InvalidSetting,
    default_suffix_spec_tokens,
)
from arctic_runtime.heads.config import HeadConfig, check_against_base, read_head_config

#: Arctic Inference's suffix keys in a hybrid config, and vLLM's names for them.
ARCTIC_SUFFIX_KEYS = {
    "suffix_cache_max_depth": "suffix_decoding_max_tree_depth",
    "suffix_cache_max_requests": "suffix_decoding_max_cached_requests",
    "suffix_max_spec_factor": "suffix_decoding_max_spec_factor",
    "suffix_min_token_prob": "suffix_decoding_min_token_prob",
}
VLLM_SUFFIX_KEYS = tuple(ARCTIC_SUFFIX_KEYS.values())
HEAD_KEYS = ("method", "model", "num_speculative_tokens", "enable_suffix_decoding", "hybrid_threshold")


def split_head_spec(
    spec: Mapping[str, Any] | None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, HeadConfig | None]:
    """Front end: a user's ``speculative_config`` -> (what vLLM gets, our ``heads`` section, the
    head's config), or the input unchanged and ``None``s when the method is not a head method.
    Reads the speculator's config.json (missing folder, files or bad fields raise
    ``InvalidSetting`` naming the key); the base-model checks come later (``check_head``)."""
    if spec is None or spec.get("method") not in HEAD_METHODS:
        return (None if spec is None else dict(spec)), None, None
    errors: list[FieldError] = []
    allowed = set(HEAD_KEYS) | set(ARCTIC_SUFFIX_KEYS) | set(VLLM_SUFFIX_KEYS)
    errors += [
        FieldError(
            f"speculative_config.{key}",
            f"is not used with method {spec['method']!r}; allowed: {', '.join(sorted(allowed))}",
        )
        for key in spec
        if key not in allowed
    ]
    model = spec.get("model")
    if not isinstance(model, str) or not model:
        errors.append(
            FieldError("speculative_config.model", f"must be the speculator's folder, got {model!r}")
        )
    hybrid = spec.get("enable_suffix_decoding", False)
    if not isinstance(hybrid, bool):
        errors.append(
            FieldError("speculative_config.enable_suffix_decoding", f"must be true or false, got {hybrid!r}")
        )
    k = spec.get("num_speculative_tokens")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        errors.append(
            FieldError("speculative_config.num_speculative_tokens", f"must be a whole number >= 1, got {k!r}")
        )
    if errors:
        raise InvalidSetting(errors)
    config = read_head_config(str(model))
    if k is not None and k > config.n_predict:
        raise InvalidSetting(
            [
                FieldError(
                    "speculative_config.num_speculative_tokens",
                    f"must be in 1..n_predict (= {config.n_predict}) for this speculator, got {k}",
                )
            ]
        )
    k = config.n_predict if k is None else k
    suffix: dict[str, Any] = {}
    for key, value in spec.items():
        if key in ARCTIC_SUFFIX_KEYS:
            suffix[ARCTIC_SUFFIX_KEYS[key]] = value
        elif key in VLLM_SUFFIX_KEYS:
            suffix[key] = value
    if suffix and not hybrid:
        key = next(iter(spec.keys() & (set(ARCTIC_SUFFIX_KEYS) | set(VLLM_SUFFIX_KEYS))))
        raise InvalidSetting([FieldError(f"speculative_config.{key}", "needs enable_suffix_decoding: true")])
    vllm_spec: dict[str, Any] = {"method": "suffix", **suffix}
    if hybrid:
        depth = suffix.setdefault("suffix_decoding_max_tree_depth", DEFAULT_SUFFIX_TREE_DEPTH)
        vllm_spec["suffix_decoding_max_tree_depth"] = depth
        suffix_cap = default_suffix_spec_tokens(depth) if isinstance(depth, int) else 1
        vllm_spec["num_speculative_tokens"] = max(k, suffix_cap)
    else:
        # the suffix machinery is not used: a tree just deep enough for vLLM's check
        vllm_spec["num_speculative_tokens"] = k
        vllm_spec["suffix_decoding_max_tree_depth"] = max(24, k + 1)
    threshold = spec.get("hybrid_threshold")
    section = HeadSettings(
        model=str(model),
        method=str(spec["method"]),
        num_speculative_tokens=k,
        hybrid=hybrid,
        hybrid_threshold=None if threshold is None else float(threshold),
    ).as_dict()
    return vllm_spec, section, config


def check_head(config: HeadConfig, hf_config: Any, k: int) -> None:
    """Front end, once vLLM has read the base model: hidden size, vocabulary and draft length."""
    check_against_base(
        config,
        base_hidden=int(hf_config.hidden_size),
        base_vocab=int(hf_config.vocab_size),
        num_speculative_tokens=k,
    )


#: The hybrid's default ``hybrid_threshold``: the suffix draft is used when its score (expected
#: accepted tokens) is at least 1, and extended by the head when shorter than ``k``. Chosen on the
#: development half of ``bench.speculator_accept``'s requests (heads with n_predict 3); Arctic's
#: rule is ``hybrid_threshold = n_predict`` (a score that high needs a draft of at least n_predict
#: tokens, so nothing is extended).
DEFAULT_HYBRID_THRESHOLD = 1.0

HybridSource = Literal["suffix", "suffix+head", "head"]


def hybrid_source(suffix_len: int, suffix_score: float, k: int, threshold: float) -> HybridSource:
    """Where a row's draft comes from this step: ``"suffix"`` when the suffix draft scores at least
    ``threshold`` and has ``k`` tokens or more; ``"suffix+head"`` when it scores enough but is
    shorter than ``k`` (the head continues it: its draft with the suffix tokens forced, see
    ``DraftHead.draft``'s ``prefix``); else ``"head"``."""
    if suffix_len and suffix_score >= threshold:
        return "suffix" if suffix_len >= k else "suffix+head"
    return "head"


def forced_prefix(source: HybridSource, suffix_draft: Sequence[int], k: int) -> list[int]:
    """The head's ``prefix`` row (``DraftHead.draft``) for a row of this ``source``: the suffix
    tokens of a ``"suffix+head"`` row, then -1 (the head's own) up to ``k``; all -1 otherwise."""
    forced = list(suffix_draft)[:k] if source == "suffix+head" else []
    return forced + [-1] * (k - len(forced))


def hybrid_pick(
    source: HybridSource, suffix_draft: Sequence[int], head_draft: Sequence[int], room: int
) -> list[int]:
    """The row's draft: the suffix draft, or the head's (for ``"suffix+head"`` the head's draft made
    with the suffix tokens forced, which starts with them), cut to ``room`` tokens."""
    if source == "suffix":
        return list(suffix_draft)
    if source == "suffix+head" and list(head_draft[: len(suffix_draft)]) != list(suffix_draft):
        raise ValueError("hybrid_pick: a suffix+head draft must start with the suffix draft")
    return list(head_draft)[: max(0, room)]


def accepted_tokens(sampled: Any, discarded: Any, backup: Any, vocab_size: int) -> tuple[Any, Any]:
    """On the device, from a step's sampled tokens (rows, 1 + drafts; -1 after the first rejected
    draft): each row's number of valid tokens and the last of them (the token the next draft
    follows), without waiting for the device. ``discarded`` rows (a prefill chunk that samples
    nothing) count 0 and take ``backup`` (the request's last known token). The asynchronous
    path's version of what the synchronous one reads from the host lists."""
    import torch

    valid = (sampled >= 0) & (sampled < vocab_size)
    counts = torch.where(discarded, 0, valid.sum(dim=1)).to(torch.int32)
    last = sampled.gather(1, (counts.clamp(min=1) - 1).long().unsqueeze(1)).squeeze(1)
    next_ids = torch.where(counts > 0, last.to(torch.int32), backup.to(torch.int32))
    return next_ids, counts


def last_accepted_rows(counts: Any, cu_num_sampled: Any) -> Any:
    """On the device: each request's row of ``sample_hidden_states`` at its last accepted token.
    ``cu_num_sampled``: vLLM's cumulative (drafts + 1) per request of a step that verified drafts
    (request i's rows start where request i - 1's end); a request with no valid token gets its
    first row (never read)."""
    import torch

    starts = torch.nn.functional.pad(cu_num_sampled[:-1], (1, 0))
    return (starts + (counts.to(starts.dtype) - 1).clamp(min=0)).long()


@dataclass
class HeadCounters:
    steps: int = 0
    rows: int = 0
    head_drafts: int = 0
    suffix_drafts: int = 0
    extended_drafts: int = 0  # suffix drafts shorter than k continued by the head
    drafted_tokens: int = 0
    step_ns: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "rows": self.rows,
            "head_drafts": self.head_drafts,
            "suffix_drafts": self.suffix_drafts,
            "extended_drafts": self.extended_drafts,
            "drafted_tokens": self.drafted_tokens,
            "us_per_step": self.step_ns / 1000 / max(1, self.steps),
        }


@dataclass
class HeadDrafter:
    """A draft head (and, in hybrid mode, a ``SuffixDrafter``) kept in step with the engine."""

    settings: HeadSettings
    max_model_len: int
    suffix: Any = None  # arctic_runtime.suffix.engine.SuffixDrafter in hybrid mode
    head: Any = None  # arctic_runtime.heads.model.DraftHead, loaded on the first step
    cuda_graphs: bool = False  # on CUDA: the drafting loop as one CUDA graph per padded batch size
    max_batch: int = 256
    graphed: Any = None  # arctic_runtime.heads.model.GraphedDrafter
    #: On CUDA: the common step's drafts stay on the device as one (rows, k) tensor, which vLLM
    #: copies to the host on its own stream and reads only when the engine core takes the drafts,
    #: after it has processed the step's output, so the head's kernels overlap that host work
    #: instead of the host waiting for them here (``propose``).
    device_drafts: bool = False
    counters: HeadCounters = field(default_factory=HeadCounters)
    #: Asynchronous path: the step's (last valid token, valid count) per row, on the device,
    #: between vLLM's bookkeeping and its call to the proposer (``hooks.wrap_bookkeeping_sync``).
    accepted: Any = None
    _dtype: Any = field(default=None, repr=False)  # the head's parameters' dtype (head_dtype)

    @property
    def threshold(self) -> float:
        if self.settings.hybrid_threshold is not None:
            return self.settings.hybrid_threshold
        return DEFAULT_HYBRID_THRESHOLD

    def load(self, embedding: Any, lm_head: Any, dtype: Any, device: Any) -> None:
        from arctic_runtime.heads.model import GraphedDrafter, load_head

        self.head = load_head(self.settings.model, embedding, lm_head=lm_head, dtype=dtype, device=device)
        self._dtype = None
        self.device_drafts = str(device).startswith("cuda")
        if self.cuda_graphs and self.device_drafts:
            self.graphed = GraphedDrafter(self.head, max_batch=GraphedDrafter.padded(self.max_batch))

    def propose(
        self,
        req_ids: Sequence[Hashable],
        token_ids: Any,
        num_tokens: Sequence[int],
        num_prompt_tokens: Sequence[int],
        sampled: Sequence[Sequence[int]],
        num_speculative_tokens: int,
        drafting: bool,
        hidden: Any,
    ) -> Any:
        """One draft per row: lists, or with ``device_drafts`` the common step's drafts as a
        (rows, k) tensor on the device (vLLM's runner takes either). ``hidden``: (rows, width) base
        hidden states at each row's last accepted position (rows without a sampled token: anything).

        Behind vLLM's suffix slot this runs inside the step with the device idle (synchronous
        scheduling), so its host time adds to every step: the drafting rows and their room come
        from array operations; head alone, the only per-row work left is reading each row's last
        sampled token; when every row drafts, the head reads ``hidden`` as it is (no gather), and
        with ``device_drafts`` the host does not wait for the head's kernels here.

        The common step is head alone with every row having sampled a token and room for k
        drafts; otherwise (a prefill chunk in the batch, a request near max_model_len, hybrid)
        the drafts are lists cut to each row's room."""
        started = time.perf_counter_ns()
        n = len(req_ids)
        drafts: Any = [[] for _ in range(n)]
        suffix_drafts: list[list[int]] = [[] for _ in range(n)]
        scores = [0.0] * n
        if self.suffix is not None:
            # keep the tries in step every step (drafting or not), then score each row's draft
            self.suffix.propose(req_ids, token_ids, num_tokens, num_prompt_tokens, sampled, 0, False)
            if drafting:
                cache = self.suffix.cache
                cap = min(num_speculative_tokens, self.suffix.config.max_spec_tokens)
                for i, req_id in enumerate(req_ids):
                    room = min(cap, self.max_model_len - 1 - int(num_tokens[i]))
                    if sampled[i] and room > 0:
                        draft = cache.speculate(req_id, room)
                        suffix_drafts[i], scores[i] = list(draft.token_ids), float(draft.score)
        if drafting and n:
            k = min(self.settings.num_speculative_tokens, num_speculative_tokens)
            counts = np.asarray(num_tokens[:n], dtype=np.int64)
            if (
                self.suffix is None
                and k > 0
                and all(map(len, sampled))  # every row sampled a token
                and self.max_model_len - 1 - int(counts.max()) >= k
            ):
                # the common step, head alone: every row sampled a token and has room for k drafts
                last = [int(s[-1]) for s in sampled]
                drafts = self._run_head(hidden, None, last, k, n, None, to_host=not self.device_drafts)
                self.counters.head_drafts += n
                self.counters.drafted_tokens += n * k
            else:
                # each row's room: at most k tokens, never past max_model_len; rows that sampled
                # nothing this step (a prefill chunk) do not draft
                rooms = np.minimum(k, self.max_model_len - 1 - counts)
                has_token = np.fromiter((len(s) > 0 for s in sampled), dtype=bool, count=n)
                rows = np.flatnonzero(has_token & (rooms > 0))
                if self.suffix is None:
                    self._head_only(drafts, rows, rooms, sampled, k, n, hidden)
                else:
                    self._hybrid(drafts, rows.tolist(), rooms, sampled, suffix_drafts, scores, k, hidden)
        self.counters.steps += 1
        self.counters.rows += n
        self.counters.step_ns += time.perf_counter_ns() - started
        return drafts

    def propose_on_device(self, hidden: Any, rows: Any, next_ids: Any, k: int, drafting: bool) -> Any:
        """The asynchronous path (head alone): every row's k drafts as one (rows, k) tensor on the
        device, queued behind the step's sampling and never waited for here; vLLM feeds them to
        the next step on the device. ``hidden``: the step's ``sample_hidden_states``; ``rows``: each
        request's row in it (None: row i is request i); ``next_ids``: each request's last valid
        token. Rows that will not verify drafts (a prefill chunk, the cap) get drafts all the
        same: the scheduler decides how many of them the next step verifies. With ``drafting``
        off (the hard cap holds for the whole batch) the drafts are zeros and the head does not run."""
        import torch

        started = time.perf_counter_ns()
        n = int(next_ids.shape[0])
        if not drafting or n == 0:
            out = torch.zeros((1, k), dtype=torch.long, device=next_ids.device).expand(n, k)
        else:
            states = hidden[:n] if rows is None else hidden.index_select(0, rows)
            out = self._draft(states, next_ids.long(), k, None)
            self.counters.head_drafts += n
            self.counters.drafted_tokens += n * k
        self.counters.steps += 1
        self.counters.rows += n
        self.counters.step_ns += time.perf_counter_ns() - started
        return out

    def _run_head(
        self,
        hidden: Any,
        index: list[int] | None,
        last: list[int],
        k: int,
        n: int,
        prefix: Any,
        *,
        to_host: bool = True,
    ) -> Any:
        """The head's drafts for the rows ``index`` (sorted; None: all ``n``) of ``hidden``, fed
        ``last``: as lists (``to_host``; waits for the device) or as the device tensor."""
        import torch

        device = hidden.device
        if index is None or len(index) == n:  # every row drafts: no gather
            rows = hidden[:n]
        else:
            rows = hidden.index_select(0, torch.tensor(index, dtype=torch.long).to(device, non_blocking=True))
        tokens = torch.tensor(last, dtype=torch.long).to(device, non_blocking=True)
        out = self._draft(rows, tokens, k, prefix)
        return out.tolist() if to_host else out

    def _draft(self, states: Any, tokens: Any, k: int, prefix: Any) -> Any:
        """The head's drafts of ``states`` fed ``tokens`` (its CUDA graphs when it has them)."""
        drafter = self.graphed if self.graphed is not None else self.head
        return drafter.draft(states.to(self.head_dtype), tokens, k, prefix)

    def _head_only(
        self,
        drafts: list[list[int]],
        rows: Any,
        rooms: Any,
        sampled: Sequence[Sequence[int]],
        k: int,
        n: int,
        hidden: Any,
    ) -> None:
        if not rows.size:
            return
        index = rows.tolist()
        out = self._run_head(hidden, index, [int(sampled[i][-1]) for i in index], k, n, None)
        cut = rooms[rows]
        for j in np.flatnonzero(cut < k).tolist():  # near max_model_len: shorter drafts
            out[j] = out[j][: int(cut[j])]
        for i, draft in zip(index, out, strict=True):
            drafts[i] = draft
        self.counters.head_drafts += len(index)
        self.counters.drafted_tokens += int(cut.sum())

    def _hybrid(
        self,
        drafts: list[list[int]],
        rows: list[int],
        rooms: Any,
        sampled: Sequence[Sequence[int]],
        suffix_drafts: list[list[int]],
        scores: list[float],
        k: int,
        hidden: Any,
    ) -> None:
        import torch

        threshold = self.threshold
        sources = {i: hybrid_source(len(suffix_drafts[i]), scores[i], k, threshold) for i in rows}
        need_head = [i for i in rows if sources[i] != "suffix"]
        head_out: dict[int, list[int]] = {}
        if need_head and k > 0:
            prefix = None
            if any(sources[i] == "suffix+head" for i in need_head):
                prefix = torch.tensor(
                    [forced_prefix(sources[i], suffix_drafts[i], k) for i in need_head],
                    dtype=torch.long,
                ).to(hidden.device, non_blocking=True)
            last = [int(sampled[i][-1]) for i in need_head]
            out = self._run_head(hidden, need_head, last, k, len(sampled), prefix)
            head_out = dict(zip(need_head, out, strict=True))
        for i in rows:
            source = sources[i]
            draft = hybrid_pick(source, suffix_drafts[i], head_out.get(i, []), int(rooms[i]))
            drafts[i] = draft
            if source == "suffix":
                self.counters.suffix_drafts += 1
            elif source == "suffix+head":
                self.counters.extended_drafts += 1
            else:
                self.counters.head_drafts += 1
            self.counters.drafted_tokens += len(draft)

    @property
    def head_dtype(self) -> Any:
        if self._dtype is None:  # read once: walking the parameters costs microseconds every step
            self._dtype = next(self.head.parameters()).dtype
        return self._dtype

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "settings": self.settings.as_dict(),
            "loaded": self.head is not None,
            "counters": self.counters.as_dict(),
        }
        if self.head is not None:
            out["head"] = {"kind": self.head.config.kind, "n_predict": self.head.config.n_predict}
            out["cuda_graphs"] = None if self.graphed is None else sorted(self.graphed.graphs)
            out["threshold"] = self.threshold
        if self.suffix is not None:
            out["suffix"] = self.suffix.state()
        return out
