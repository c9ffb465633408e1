"""SmolLM2's weights for a host without a package index, in parts small enough to carry.

The GPU host takes ~64 MiB per command; the bf16 model is 269 MB and the GGUF 98 MB. ``pack`` keeps
the GGUF's quantized blocks as they are (Q4_1 and Q8_0, 96.5 MB) in parts of <= ``part_bytes`` plus a
JSON index, written here where the ``gguf`` reader exists; ``load_packed`` dequantizes them with numpy
on the host, no gguf, transformers or hub needed. The result equals the converted folder that
``arctic_runtime.models`` writes with transformers (a test compares every tensor), including the
un-permuting of q/k rows that llama.cpp's converter applied for its RoPE layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

BLOCK = 32
_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(gguf_name: str) -> str:
    base = gguf_name.removesuffix(".weight")
    if base == "token_embd":
        return "model.embed_tokens.weight"
    if base == "output_norm":
        return "model.norm.weight"
    if base == "output":
        return "lm_head.weight"
    _, layer, kind = base.split(".", 2)
    return f"model.layers.{layer}.{_NAMES[kind]}.weight"


def pack(gguf_path: Path, config: dict[str, Any], out: Path, part_bytes: int = 48 << 20) -> list[Path]:
    """Write ``index.json`` and ``part-N.bin`` files (quantized bytes, in tensor order)."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    out.mkdir(parents=True, exist_ok=True)
    index: list[dict[str, Any]] = []
    blob = bytearray()
    for t in reader.tensors:
        raw = np.asarray(t.data).tobytes()
        rows = [int(d) for d in reversed([int(x) for x in t.shape])]  # numpy order: outer first
        index.append(
            {
                "name": hf_name(t.name),
                "type": t.tensor_type.name,
                "shape": rows,
                "offset": len(blob),
                "nbytes": len(raw),
            }
        )
        blob += raw
    parts = []
    for n, start in enumerate(range(0, len(blob), part_bytes)):
        path = out / f"part-{n}.bin"
        path.write_bytes(bytes(blob[start : start + part_bytes]))
        parts.append(path)
    (out / "index.json").write_text(
        json.dumps({"config": config, "tensors": index, "parts": len(parts), "total": len(blob)}) + "\n"
    )
    return parts


def dequantize(raw: bytes, kind: str, shape: list[int]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """GGUF Q4_1 / Q8_0 / F32 / F16 bytes to float32 of ``shape``."""
    n = int(np.prod(shape))
    if kind == "F32":
        return np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()
    if kind == "F16":
        return np.frombuffer(raw, dtype=np.float16).astype(np.float32).reshape(shape)
    if kind == "Q8_0":
        b = np.frombuffer(raw, dtype=np.uint8).reshape(n // BLOCK, 2 + BLOCK)
        d = b[:, :2].copy().view(np.float16).astype(np.float32)
        q = b[:, 2:].copy().view(np.int8).astype(np.float32)
        return (d * q).reshape(shape)
    if kind == "Q4_1":
        b = np.frombuffer(raw, dtype=np.uint8).reshape(n // BLOCK, 4 + BLOCK // 2)
        d = b[:, :2].copy().view(np.float16).astype(np.float32)
        m = b[:, 2:4].copy().view(np.float16).astype(np.float32)
        qs = b[:, 4:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
        return (d * q + m).reshape(shape)
    raise ValueError(f"unsupported GGUF tensor type {kind}")


def unpermute(w: np.ndarray[Any, np.dtype[np.float32]], heads: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Undo llama.cpp's q/k row permutation (interleaved -> Llama's rotate-half halves)."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_packed(
    folder: Path, dtype: torch.dtype = torch.bfloat16
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, state) in Hugging Face names from ``pack``'s output (all parts present)."""
    meta = json.loads((folder / "index.json").read_text())
    blob = b"".join((folder / f"part-{n}.bin").read_bytes() for n in range(int(meta["parts"])))
    if len(blob) != int(meta["total"]):
        raise ValueError(
            f"{folder}: parts hold {len(blob)} bytes, index says {meta['total']} (a part missing?)"
        )
    config = meta["config"]
    heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    state: dict[str, torch.Tensor] = {}
    for t in meta["tensors"]:
        w = dequantize(blob[t["offset"] : t["offset"] + t["nbytes"]], t["type"], t["shape"])
        if t["name"].endswith("q_proj.weight"):
            w = unpermute(w, heads)
        elif t["name"].endswith("k_proj.weight"):
            w = unpermute(w, kv_heads)
        state[t["name"]] = torch.from_numpy(np.ascontiguousarray(w)).to(dtype)
    return config, state
