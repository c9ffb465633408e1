"""Benchmark suites and engines as plain data. ``python -m bench run --suite NAME`` runs one.

A suite names a model, engine settings, the engines to compare and the cases to run in each.
Every engine runs in its own process, started once per suite, and runs every case there; ratios
between engines are computed within one suite run (machines are noisy; runs on different days
are not compared).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

CaseKind = Literal["latency", "throughput", "acceptance", "e2e", "draft-cost"]


@dataclass(frozen=True)
class Case:
    """One measurement. Prompts are random token ids (seeded), so any model folder works.

    latency: ``num_prompts`` requests decoding together (1 = single-request latency); TTFT = a 1-token
      generation, TPOT = (E2E(output_len) - TTFT) / (output_len - 1), ``repeats`` times after a warm-up.
    throughput: ``num_prompts`` requests submitted at once; output and total tokens per second over
      the wall time of the whole batch, ``repeats`` times after one warm-up with the same batch.
    acceptance: real prompts (bench/texts.py) on a real model; vLLM's spec-decode counters give the
      accept rate and tokens per drafting step of the engine's draft method.
    e2e: the same real prompts one request at a time, ``repeats`` rounds: wall time per output token
      and acceptance per round (round 1 cold; figures from rounds 2..).
    draft-cost: as latency, plus wall time per engine step and the drafter's own time per step
      (``bench.worker.run_draft_cost``; the suite sets ``worker_extension_cls`` to
      ``bench.drafttimer.DraftTimer``).
    """

    name: str
    kind: CaseKind
    input_len: int
    output_len: int
    num_prompts: int = 1
    repeats: int = 3


@dataclass(frozen=True)
class OnlineCase:
    """Open-loop load through the OpenAI server: Poisson arrivals at each rate (bench/load.py)."""

    name: str
    rates: tuple[float, ...]
    seconds_per_rate: float
    input_len: int
    output_len: int


@dataclass(frozen=True)
class Engine:
    """How an engine is started: environment and extra engine arguments.

    ``vanilla`` sets VLLM_PLUGINS to an empty allowlist so no plugin at all is loaded.
    """

    name: str
    env: dict[str, str]
    engine_args: dict[str, Any] = field(default_factory=dict)
    requires: str | None = None  # an importable module this engine needs (else it is reported, not run)


_PLUGIN_ON = {"VLLM_PLUGINS": "arctic_serve", "ARCTIC_SERVE_ENABLED": "1"}
SUFFIX_SPEC: dict[str, Any] = {
    "method": "suffix",
    "num_speculative_tokens": 16,
    "suffix_decoding_max_tree_depth": 64,
}


#: The speculator every draft-head engine of a suite with ``head`` loads: written by the harness in
#: Arctic Inference's layout (bench.headcost.write_dummy_head), the same folder for ours and Arctic's.
HEAD_SPEC: dict[str, Any] = {"method": "arctic", "model": "{head}", "num_speculative_tokens": 3}
_ARCTIC_INFERENCE_ON = {
    "VLLM_PLUGINS": "arctic_inference",
    "ARCTIC_INFERENCE_ENABLED": "1",
    "ARCTIC_SERVE_ENABLED": "0",
}


def _verify_engine(k: int) -> Engine:
    """Plugin on, k drafts per request per step, acceptance forced to 0 (see bench/proposers.py)."""
    return Engine(
        f"verify-k{k}",
        _PLUGIN_ON,
        {
            "speculative_config": {
                "method": "custom_class",
                "model": "bench.proposers.FixedLengthProposer",
                "num_speculative_tokens": k,
                "rejection_sample_method": "synthetic",
                "synthetic_acceptance_rates": [0.0] * k,
            }
        },
    )


ENGINES: dict[str, Engine] = {
    "vanilla": Engine("vanilla", {"VLLM_PLUGINS": "", "ARCTIC_SERVE_ENABLED": "0"}),
    "arctic-serve-off": Engine("arctic-serve-off", _PLUGIN_ON),
    "arctic-serve-ngram3": Engine(
        "arctic-serve-ngram3",
        _PLUGIN_ON,
        {
            "speculative_config": {
                "method": "ngram",
                "num_speculative_tokens": 3,
                "prompt_lookup_max": 4,
                "prompt_lookup_min": 2,
            }
        },
    ),
    **{f"verify-k{k}": _verify_engine(k) for k in (1, 3, 5)},
    # vanilla again, last in a run: its start_s is a start with the compile caches warm (the control
    # simulator's time-to-serve with spec.compileCache); its cases repeat vanilla's (run-to-run noise)
    "vanilla-restart": Engine("vanilla-restart", {"VLLM_PLUGINS": "", "ARCTIC_SERVE_ENABLED": "0"}),
    # Suffix decoding at the same settings: ours (plugin on) and vLLM's own proposer, which uses
    # Arctic Inference's suffix cache (plugin off; vLLM imports arctic_inference itself).
    "arctic-serve-suffix": Engine("arctic-serve-suffix", _PLUGIN_ON, {"speculative_config": SUFFIX_SPEC}),
    "vllm-suffix-arctic": Engine(
        "vllm-suffix-arctic",
        {"VLLM_PLUGINS": "", "ARCTIC_SERVE_ENABLED": "0"},
        {"speculative_config": SUFFIX_SPEC},
        requires="arctic_inference",
    ),
    # SwiftKV (suite swiftkv-8b): ours with vLLM's defaults (torch.compile, CUDA graphs), and Arctic
    # Inference 0.3.0's in eager mode (with CUDA graphs on it hits a device-side assert on the H200)
    "arctic-serve-swiftkv": Engine(
        "arctic-serve-swiftkv", _PLUGIN_ON, {"additional_config": {"arctic": {"swiftkv": {"enabled": True}}}}
    ),
    # the saving path in every step that skips rows (min_saving_tokens 1), beside the default engine:
    # where the saving path starts to pay (prompt-1k ... prompt-8k)
    "arctic-serve-swiftkv-always": Engine(
        "arctic-serve-swiftkv-always",
        _PLUGIN_ON,
        {"additional_config": {"arctic": {"swiftkv": {"enabled": True, "min_saving_tokens": 1}}}},
    ),
    "arctic-serve-swiftkv-eager": Engine(
        "arctic-serve-swiftkv-eager",
        _PLUGIN_ON,
        {"additional_config": {"arctic": {"swiftkv": {"enabled": True}}}, "enforce_eager": True},
    ),
    "arctic-inference-swiftkv-eager": Engine(
        "arctic-inference-swiftkv-eager",
        {"VLLM_PLUGINS": "arctic_inference", "ARCTIC_INFERENCE_ENABLED": "1", "ARCTIC_SERVE_ENABLED": "0"},
        {"enforce_eager": True},
        requires="arctic_inference",
    ),
    "vanilla-eager": Engine(
        "vanilla-eager", {"VLLM_PLUGINS": "", "ARCTIC_SERVE_ENABLED": "0"}, {"enforce_eager": True}
    ),
    "arctic-inference-off": Engine(
        "arctic-inference-off",
        {"VLLM_PLUGINS": "arctic_inference", "ARCTIC_INFERENCE_ENABLED": "1", "ARCTIC_SERVE_ENABLED": "0"},
        requires="arctic_inference",
    ),
    # A draft head (suites with ``head``): ours (plugin on) and Arctic Inference 0.3.0's own proposer
    # (its plugin, ours off), on the same speculator folder and config
    "arctic-serve-head": Engine("arctic-serve-head", _PLUGIN_ON, {"speculative_config": HEAD_SPEC}),
    "arctic-inference-head": Engine(
        "arctic-inference-head",
        _ARCTIC_INFERENCE_ON,
        {"speculative_config": HEAD_SPEC},
        requires="arctic_inference",
    ),
    # Arctic's proposer with asynchronous scheduling off, as vLLM runs ours (method suffix has no
    # asynchronous path): suite heads-8b-sync, which separates scheduling from drafting cost
    "arctic-inference-head-sync": Engine(
        "arctic-inference-head-sync",
        _ARCTIC_INFERENCE_ON,
        {"speculative_config": HEAD_SPEC, "async_scheduling": False},
        requires="arctic_inference",
    ),
}


ModelKey = Literal["smollm2", "llama-3.1-8b-shape", "llama-3.1-8b-swiftkv-shape"]


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    model: ModelKey
    device: Literal["cpu", "gpu"]
    engines: tuple[str, ...]
    cases: tuple[Case, ...]
    engine_args: dict[str, Any] = field(default_factory=dict)
    measure_floor: bool = False  # weight bytes / measured copy bandwidth (GPU)
    online: tuple[OnlineCase, ...] = ()  # served through the OpenAI server instead of offline LLM
    #: Engines that serve another model than ``model`` (swiftkv-8b: vanilla serves the base Llama).
    engine_models: dict[str, ModelKey] = field(default_factory=dict)
    #: A draft head the harness writes for the suite's model (kind: "lstm" or "mlp"; random weights,
    #: Arctic's layout); engines name it as ``"{head}"`` in ``speculative_config.model``.
    head: str | None = None


CPU_ENGINE_ARGS: dict[str, Any] = {
    "dtype": "float32",
    "enforce_eager": True,
    "max_model_len": 1024,
    "max_num_batched_tokens": 512,
}
GPU_8B_ARGS: dict[str, Any] = {
    "dtype": "bfloat16",
    "load_format": "dummy",
    "max_model_len": 4096,
    "gpu_memory_utilization": 0.90,
    "skip_tokenizer_init": True,
}

#: The issue's first numbers: one request (512 in / 256 out) and 256 x 1024/256 offline.
OVERHEAD_CASES = (
    Case("latency-512-256", "latency", 512, 256, repeats=5),
    Case("throughput-256x1024-256", "throughput", 1024, 256, num_prompts=256, repeats=3),
)

#: The draft-cost cases: the same batch sizes as the verification-cost calibration (control-h200).
HEAD_COST_CASES = tuple(
    Case(f"batch-{b}-128-128", "draft-cost", 128, 128, num_prompts=b, repeats=3) for b in (1, 16, 64)
)
_TIMER = {"worker_extension_cls": "bench.drafttimer.DraftTimer", "disable_log_stats": False}

SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite(
            name="cpu-smoke",
            description="The harness on CPU with the real SmolLM2-135M (CI keeps it from rotting).",
            model="smollm2",
            device="cpu",
            engines=("vanilla", "arctic-serve-off"),
            cases=(
                Case("latency-64-16", "latency", 64, 16, repeats=2),
                Case("throughput-8x64-32", "throughput", 64, 32, num_prompts=8, repeats=1),
            ),
            engine_args=CPU_ENGINE_ARGS,
        ),
        Suite(
            name="overhead-8b",
            description=(
                "Llama-3.1-8B shape, dummy weights, bf16, CUDA graphs: the cost of enabling the plugin."
            ),
            model="llama-3.1-8b-shape",
            device="gpu",
            engines=("vanilla", "arctic-serve-off"),
            cases=OVERHEAD_CASES,
            engine_args=GPU_8B_ARGS,
            measure_floor=True,
        ),
        Suite(
            name="reference-8b",
            description=(
                "The same cases for Arctic Inference 0.3.0 enabled with its features off, beside vanilla."
            ),
            model="llama-3.1-8b-shape",
            device="gpu",
            engines=("vanilla", "arctic-inference-off"),
            cases=OVERHEAD_CASES,
            engine_args=GPU_8B_ARGS,
        ),
        Suite(
            name="verify-8b",
            description=(
                "Cost of a verification step with k draft tokens at batch 1-64, Llama-3.1-8B shape: "
                "time per output token with k drafts per request per step and acceptance forced to 0, "
                "beside vanilla without speculation."
            ),
            model="llama-3.1-8b-shape",
            device="gpu",
            engines=("vanilla", "verify-k1", "verify-k3", "verify-k5"),
            cases=tuple(
                Case(f"batch-{b}-128-128", "latency", 128, 128, num_prompts=b, repeats=3)
                for b in (1, 4, 16, 64)
            ),
            engine_args=GPU_8B_ARGS,
        ),
        Suite(
            name="control-h200",
            description=(
                "The control simulator's calibration (bench/gpu/calibrate.sh), Llama-3.1-8B shape: time "
                "per output token at batch 1-256 without speculation and with k = 1, 3 draft tokens per "
                "request (acceptance forced to 0), the TTFT of a 2048-token prompt, and engine starts "
                "(the first one as the host had it, the last with the compile caches warm)."
            ),
            model="llama-3.1-8b-shape",
            device="gpu",
            engines=("vanilla", "verify-k3", "verify-k1", "vanilla-restart"),
            cases=(
                *(
                    Case(f"batch-{b}-128-64", "latency", 128, 64, num_prompts=b, repeats=2)
                    for b in (1, 4, 16, 64, 128, 256)
                ),
                Case("prefill-2048", "latency", 2048, 2, repeats=3),
            ),
            # prefix caching off: the prefill case's warm-up would otherwise cache its prompt, and its
            # TTFT would time a cache hit (the first runs, 2026-12-03: 10-20 ms for 2048 tokens)
            engine_args={**GPU_8B_ARGS, "max_num_seqs": 256, "enable_prefix_caching": False},
        ),
        Suite(
            name="suffix-8b",
            description=(
                "Suffix decoding in the engine loop, Llama-3.1-8B shape (dummy weights: acceptance is "
                "not meaningful here, cost is): time per output token at batch 1 and 64 for ours and "
                "for vLLM's proposer with Arctic Inference's cache, beside vanilla; our drafter's own "
                "time per step is read from the worker."
            ),
            model="llama-3.1-8b-shape",
            device="gpu",
            engines=("vanilla", "arctic-serve-suffix", "vllm-suffix-arctic"),
            cases=tuple(
                Case(f"batch-{b}-128-256", "latency", 128, 256, num_prompts=b, repeats=3) for b in (1, 64)
            ),
            engine_args={**GPU_8B_ARGS, "disable_log_stats": False},
        ),
        Suite(
            name="heads-8b",
            description=(
                "Draft-head cost in the engine loop, Llama-3.1-8B shape, dummy weights (acceptance not "
                "meaningful; cost is): an LSTM speculator of the 8B shape (n_predict 3, random weights "
                "in Arctic's layout) in ours and in Arctic Inference 0.3.0's proposer, beside vanilla. "
                "Per batch size: time per engine step, and the drafter's own time per step timed "
                "between device synchronisations in a separate run; the implied per-request speedup "
                "from held-out acceptance (section implied: formulas and sources)."
            ),
            model="llama-3.1-8b-shape",
            device="gpu",
            engines=("vanilla", "arctic-serve-head", "arctic-inference-head"),
            cases=HEAD_COST_CASES,
            engine_args={**GPU_8B_ARGS, **_TIMER},
            head="lstm",
        ),
        Suite(
            name="heads-8b-sync",
            description=(
                "heads-8b with Arctic Inference 0.3.0's proposer run with asynchronous scheduling off, "
                "as vLLM runs ours (it turns asynchronous scheduling off for method suffix, which our "
                "heads run behind; Arctic registers its method as EAGLE-like and drafts on the device "
                "before the host's bookkeeping): the step time each engine would have with the same "
                "scheduling, beside ours and vanilla in the same run (each engine's settings: "
                "engines.<name>.settings)."
            ),
            model="llama-3.1-8b-shape",
            device="gpu",
            engines=("vanilla", "arctic-serve-head", "arctic-inference-head-sync"),
            cases=HEAD_COST_CASES,
            engine_args={**GPU_8B_ARGS, **_TIMER},
            head="lstm",
        ),
        Suite(
            name="heads-cpu",
            description=(
                "heads-8b's dry run on CPU with the real SmolLM2-135M and a random LSTM head of its "
                "shape (Arctic Inference's engine needs CUDA: reported, not run)."
            ),
            model="smollm2",
            device="cpu",
            engines=("vanilla", "arctic-serve-head", "arctic-inference-head"),
            cases=(
                Case("batch-1-32-8", "draft-cost", 32, 8, repeats=1),
                Case("batch-4-32-8", "draft-cost", 32, 8, num_prompts=4, repeats=1),
            ),
            engine_args={**CPU_ENGINE_ARGS, **_TIMER},
            head="lstm",
        ),
        Suite(
            name="smollm2-gpu",
            description=(
                "The real SmolLM2-135M end to end on the GPU, one request at a time on real prompts, "
                "repeated: time per output token and acceptance, without speculation, with our suffix "
                "decoding and with vLLM's suffix proposer (Arctic Inference's cache). A 135M model's "
                "step is overhead-bound, so this shows drafting's cost where it cannot pay."
            ),
            model="smollm2",
            device="gpu",
            engines=("vanilla", "arctic-serve-suffix", "vllm-suffix-arctic"),
            cases=(Case("e2e-real-prompts-128", "e2e", 0, 128, repeats=4),),
            engine_args={"dtype": "bfloat16", "max_model_len": 2048, "disable_log_stats": False},
        ),
        Suite(
            name="acceptance-cpu",
            description="n-gram acceptance on real SmolLM2-135M outputs for real prompts (CPU, greedy).",
            model="smollm2",
            device="cpu",
            engines=("arctic-serve-ngram3",),
            cases=(Case("acceptance-128", "acceptance", 0, 128),),
            engine_args={**CPU_ENGINE_ARGS, "disable_log_stats": False},
        ),
        Suite(
            name="online-8b",
            description=(
                "Online serving, Llama-3.1-8B shape: Poisson arrivals through the OpenAI server, "
                "1000 in / 250 out, at several request rates."
            ),
            model="llama-3.1-8b-shape",
            device="gpu",
            engines=("vanilla", "arctic-serve-off"),
            cases=(),
            engine_args=GPU_8B_ARGS,
            online=(OnlineCase("poisson-1000-250", (4.0, 16.0, 32.0), 20.0, 1000, 250),),
        ),
        Suite(
            name="online-cpu",
            description="The online harness on CPU with the real SmolLM2 (keeps it from rotting).",
            model="smollm2",
            device="cpu",
            engines=("arctic-serve-off",),
            cases=(),
            engine_args=CPU_ENGINE_ARGS,
            online=(OnlineCase("poisson-64-16", (2.0,), 4.0, 64, 16),),
        ),
        Suite(
            name="throughput-8b",
            description="Offline throughput, Llama-3.1-8B shape: prefill-heavy, mixed and decode-heavy.",
            model="llama-3.1-8b-shape",
            device="gpu",
            engines=("vanilla", "arctic-serve-off"),
            cases=(
                Case("prefill-heavy-256x2000-250", "throughput", 2000, 250, num_prompts=256, repeats=2),
                Case("mixed-256x1000-250", "throughput", 1000, 250, num_prompts=256, repeats=2),
                Case("decode-heavy-256x128-1000", "throughput", 128, 1000, num_prompts=256, repeats=1),
            ),
            engine_args=GPU_8B_ARGS,
        ),
        Suite(
            name="swiftkv-8b",
            description=(
                "SwiftKV, Llama-3.1-8B shape with L_kv = 16 of 32 layers, dummy weights, prefix caching "
                "off: vanilla vLLM on the base config (torch.compile + CUDA graphs), ours on the SwiftKV "
                "config (same defaults), Arctic Inference 0.3.0's SwiftKV (eager: CUDA graphs crash it). "
                "Throughput of 2000-in/250-out requests, TTFT of one 2k and one 8k prompt, TPOT at batch 1."
            ),
            model="llama-3.1-8b-swiftkv-shape",
            device="gpu",
            engines=(
                "vanilla",
                "arctic-serve-swiftkv",
                "arctic-inference-swiftkv-eager",
                "arctic-serve-swiftkv-always",
            ),
            engine_models={"vanilla": "llama-3.1-8b-shape", "vanilla-eager": "llama-3.1-8b-shape"},
            cases=(
                Case("throughput-512x2000-250", "throughput", 2000, 250, num_prompts=512, repeats=1),
                Case("prompt-1k", "latency", 1000, 2, repeats=5),
                Case("prompt-2k", "latency", 2000, 2, repeats=5),
                Case("prompt-4k", "latency", 4000, 2, repeats=5),
                Case("prompt-8k", "latency", 8000, 2, repeats=5),
                Case("batch-1-512-256", "latency", 512, 256, repeats=3),
            ),
            engine_args={
                **GPU_8B_ARGS,
                "max_model_len": 8448,
                "enable_prefix_caching": False,
                "gpu_memory_utilization": 0.85,
            },
        ),
    )
}

#: L_kv of the swiftkv-8b suite's config: half of Llama-3.1-8B's 32 layers, as the published
#: Llama-3.1-SwiftKV-8B-Instruct.
SWIFTKV_8B_LKV = 16


def llama_8b_swiftkv_config() -> dict[str, Any]:
    """Llama-3.1-8B's architecture as a SwiftKV checkpoint (``llama_swiftkv``, L_kv = 16)."""
    return {
        **llama_8b_config(),
        "architectures": ["LlamaSwiftKVForCausalLM"],
        "model_type": "llama_swiftkv",
        "num_key_value_layers": SWIFTKV_8B_LKV,
    }


def llama_8b_config() -> dict[str, Any]:
    """Llama-3.1-8B's architecture (no weights: vLLM's dummy loader fills random ones)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "torch_dtype": "bfloat16",
    }


def llama_weight_bytes(config: dict[str, Any], bytes_per_param: int = 2) -> int:
    """Bytes of weights one decode step reads (every parameter once; embeddings: one row, ignored)."""
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim", h // heads)
    attn = h * heads * head_dim + 2 * h * kv_heads * head_dim + heads * head_dim * h
    mlp = 3 * h * inter
    norms = 2 * h
    per_layer = attn + mlp + norms
    lm_head = config["vocab_size"] * h
    total: int = (layers * per_layer + lm_head + h) * bytes_per_param
    return total
