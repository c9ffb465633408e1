"""A small plain-PyTorch Llama with the SwiftKV student path: teacher, student and reference in one.

Why our own (~250 lines) instead of transformers' model: the GPU host has transformers 5.17 but no
package index, the CPU machines another version, and training shares layers < L_kv between teacher and
student (computed once), which a stock model does not expose. Tests compare this forward with
transformers' LlamaForCausalLM on the real SmolLM2 weights, and our vLLM model with this one.

SwiftKV (Snowflake's SingleInputKV, arXiv 2410.03960), for layers ``l >= L_kv``:

* ``x = norm_swiftkv(h_Lkv)``, the residual stream entering layer ``L_kv``, RMS-normed once;
* ``K_l, V_l = k_proj_swiftkv_l(x), v_proj_swiftkv_l(x)`` (RoPE on K as usual);
* ``Q_l = q_proj_swiftkv_l(input_layernorm_l(h_l))``; the rest of the layer is unchanged.

Weight names are the published checkpoints' (``model.layers.N.self_attn.q_proj_swiftkv.weight``,
``model.norm_swiftkv.weight``), so a trained delta loads into vLLM and Arctic Inference unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SWIFTKV_PROJS = ("q_proj_swiftkv", "k_proj_swiftkv", "v_proj_swiftkv")


@dataclass(frozen=True)
class LlamaShape:
    """The few config.json fields a Llama forward needs."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    rope_theta: float
    eps: float

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LlamaShape:
        heads = int(config["num_attention_heads"])
        return cls(
            hidden=int(config["hidden_size"]),
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or int(config["hidden_size"]) // heads),
            intermediate=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            rope_theta=float(
                config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta", 1e4)
            ),
            eps=float(config.get("rms_norm_eps", 1e-5)),
        )


def load_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """config.json and every safetensors file of a model folder (names as stored)."""
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    state: dict[str, Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(f)))
    return config, state


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def rope(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos, sin of shape [B, T, head_dim] (Llama's rotate-half layout), float32."""
    inv = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    )
    freqs = positions.float()[..., None] * inv
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [B, H, T, D]; cos/sin: [B, T, D]."""
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    c, s = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)
    return x * c + rot * s


class SwiftKVLlama(nn.Module):
    """Frozen base weights (plain tensors) plus trainable SwiftKV parameters for layers >= L_kv.

    ``num_kv_layers`` = L_kv. With ``L_kv == layers`` there is no SwiftKV layer and the student is the
    base model. ``swiftkv`` maps published names to tensors; missing ones are initialised the way
    ArcticTraining does (q from the layer's q_proj, k/v from its k/v_proj, norm from layer L_kv's
    input_layernorm)."""

    def __init__(
        self,
        config: dict[str, Any],
        base: dict[str, Tensor],
        num_kv_layers: int,
        swiftkv: dict[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.shape = LlamaShape.from_config(config)
        if not 1 <= num_kv_layers <= self.shape.layers:
            raise ValueError(f"num_key_value_layers must be 1..{self.shape.layers} (got {num_kv_layers})")
        self.num_kv_layers = num_kv_layers
        self.base = {
            k: v for k, v in base.items() if not k.endswith(("_swiftkv.weight",)) and "norm_swiftkv" not in k
        }
        if "lm_head.weight" not in self.base:
            self.base["lm_head.weight"] = self.base["model.embed_tokens.weight"]
        given = dict(swiftkv or {})
        for k, v in base.items():
            if k not in self.base:
                given.setdefault(k, v)
        self.swiftkv = nn.ParameterDict()
        for name, init in self.swiftkv_init().items():
            value = given.get(name, init)
            self.swiftkv[name.replace(".", "__")] = nn.Parameter(value.detach().clone().float())

    # ---- weights -------------------------------------------------------------------------------
    def swiftkv_init(self) -> dict[str, Tensor]:
        """ArcticTraining's initialisation (with one KV head per group: the layer's own k/v)."""
        out: dict[str, Tensor] = {}
        if self.num_kv_layers == self.shape.layers:
            return out
        out["model.norm_swiftkv.weight"] = self.base[
            f"model.layers.{self.num_kv_layers}.input_layernorm.weight"
        ]
        for layer in range(self.num_kv_layers, self.shape.layers):
            for proj in SWIFTKV_PROJS:
                out[f"model.layers.{layer}.self_attn.{proj}.weight"] = self.base[
                    f"model.layers.{layer}.self_attn.{proj.replace('_swiftkv', '')}.weight"
                ]
        return out

    def swiftkv_state(self, dtype: torch.dtype = torch.bfloat16) -> dict[str, Tensor]:
        """The trained tensors under their published names."""
        return {
            k.replace("__", "."): v.detach().to(dtype).contiguous().cpu() for k, v in self.swiftkv.items()
        }

    def sw(self, name: str) -> Tensor:
        return self.swiftkv[name.replace(".", "__")]

    def to_device(self, device: torch.device | str, base_dtype: torch.dtype) -> SwiftKVLlama:
        self.base = {k: v.to(device=device, dtype=base_dtype) for k, v in self.base.items()}
        self.base["lm_head.weight"] = (
            self.base["model.embed_tokens.weight"] if self._tied() else self.base["lm_head.weight"]
        )
        self.to(device)
        return self

    def _tied(self) -> bool:
        return self.base["lm_head.weight"].data_ptr() == self.base["model.embed_tokens.weight"].data_ptr()

    # ---- pieces --------------------------------------------------------------------------------
    def w(self, name: str) -> Tensor:
        return self.base[name]

    def lin(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight.to(x.dtype) if not torch.is_autocast_enabled(x.device.type) else weight)

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """q [B,H,T,D], k/v [B,KVH,S,D]; ``mask`` None = causal over T == S, else bool [B,1,T,S]."""
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    def heads(self, x: Tensor, n: int) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, n, self.shape.head_dim).transpose(1, 2)

    def layer(
        self,
        i: int,
        h: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        swift_in: Tensor | None = None,
        cache: tuple[Tensor, Tensor] | None = None,
        cache_pos: int = 0,
    ) -> Tensor:
        """One decoder layer. ``swift_in`` (norm_swiftkv of the stream at L_kv) selects the SwiftKV
        projections. ``cache`` (k, v of [B,KVH,S,D]) is written at ``cache_pos`` and attended in full."""
        s, p = self.shape, f"model.layers.{i}."
        x = rms_norm(h, self.w(p + "input_layernorm.weight"), s.eps)
        if swift_in is not None:
            q = self.lin(x, self.sw(p + "self_attn.q_proj_swiftkv.weight"))
            k = self.lin(swift_in, self.sw(p + "self_attn.k_proj_swiftkv.weight"))
            v = self.lin(swift_in, self.sw(p + "self_attn.v_proj_swiftkv.weight"))
        else:
            q = self.lin(x, self.w(p + "self_attn.q_proj.weight"))
            k = self.lin(x, self.w(p + "self_attn.k_proj.weight"))
            v = self.lin(x, self.w(p + "self_attn.v_proj.weight"))
        q = apply_rope(self.heads(q, s.heads), cos, sin)
        k = apply_rope(self.heads(k, s.kv_heads), cos, sin)
        v = self.heads(v, s.kv_heads)
        if cache is not None:
            t = k.shape[2]
            cache[0][:, :, cache_pos : cache_pos + t] = k.to(cache[0].dtype)
            cache[1][:, :, cache_pos : cache_pos + t] = v.to(cache[1].dtype)
            k, v = cache[0][:, :, : cache_pos + t].to(q.dtype), cache[1][:, :, : cache_pos + t].to(q.dtype)
        a = self.attention(q, k, v, mask).transpose(1, 2).reshape(h.shape[0], h.shape[1], -1)
        h = h + self.lin(a, self.w(p + "self_attn.o_proj.weight"))
        x = rms_norm(h, self.w(p + "post_attention_layernorm.weight"), s.eps)
        gate = self.lin(x, self.w(p + "mlp.gate_proj.weight"))
        up = self.lin(x, self.w(p + "mlp.up_proj.weight"))
        return h + self.lin(F.silu(gate) * up, self.w(p + "mlp.down_proj.weight"))

    def embed(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.w("model.embed_tokens.weight"))

    def logits(self, h: Tensor) -> Tensor:
        return self.lin(rms_norm(h, self.w("model.norm.weight"), self.shape.eps), self.w("lm_head.weight"))

    def swift_input(self, h_kv: Tensor) -> Tensor:
        return rms_norm(h_kv, self.sw("model.norm_swiftkv.weight"), self.shape.eps)

    # ---- whole forwards ------------------------------------------------------------------------
    def prefix(
        self, ids: Tensor, positions: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Embedding and layers < L_kv; returns (h at L_kv, cos, sin)."""
        cos, sin = rope(positions, self.shape.head_dim, self.shape.rope_theta)
        h = self.embed(ids)
        for i in range(self.num_kv_layers):
            h = self.layer(i, h, cos, sin, mask)
        return h, cos, sin

    def suffix(
        self,
        h: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        student: bool,
        keep: list[Tensor] | None = None,
    ) -> Tensor:
        """Layers >= L_kv from the stream at L_kv, as the teacher or as the SwiftKV student; ``keep``
        collects the stream entering the last layer."""
        swift_in = self.swift_input(h) if student and self.num_kv_layers < self.shape.layers else None
        for i in range(self.num_kv_layers, self.shape.layers):
            if keep is not None and i == self.shape.layers - 1:
                keep.append(h)
            h = self.layer(i, h, cos, sin, mask, swift_in=swift_in)
        if keep is not None and self.num_kv_layers == self.shape.layers:
            keep.append(h)
        return h

    def forward(
        self, ids: Tensor, positions: Tensor | None = None, mask: Tensor | None = None, student: bool = True
    ) -> Tensor:
        """Logits [B, T, V]; causal (right padding is harmless) unless ``mask`` is given."""
        if positions is None:
            positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        h, cos, sin = self.prefix(ids, positions, mask)
        return self.logits(self.suffix(h, cos, sin, mask, student))

    @torch.no_grad()
    def greedy(
        self,
        prompts: list[list[int]],
        max_new: int,
        eos: int,
        student: bool = False,
        dtype: torch.dtype | None = None,
    ) -> list[list[int]]:
        """Greedy answers for one batch of prompts: left padding, a preallocated KV cache, one token a
        step for all rows; an answer stops after its first ``eos`` (kept) or at ``max_new`` tokens."""
        s = self.shape
        dev = self.w("model.embed_tokens.weight").device
        dtype = dtype or self.w("model.embed_tokens.weight").dtype
        b, t = len(prompts), max(len(p) for p in prompts)
        ids = torch.zeros((b, t), dtype=torch.long, device=dev)
        valid = torch.zeros((b, t + max_new), dtype=torch.bool, device=dev)
        for r, p in enumerate(prompts):
            ids[r, t - len(p) :] = torch.tensor(p, device=dev)
            valid[r, t - len(p) : t] = True
        positions = (valid[:, :t].long().cumsum(-1) - 1).clamp(min=0)
        size = (b, s.kv_heads, t + max_new, s.head_dim)
        caches = [
            (torch.zeros(size, dtype=dtype, device=dev), torch.zeros(size, dtype=dtype, device=dev))
            for _ in range(s.layers)
        ]
        causal = torch.ones((t, t), dtype=torch.bool, device=dev).tril()
        mask = (causal[None] & valid[:, None, :t])[:, None]
        # a padding query sees no valid key (NaN); the diagonal keeps it finite (its output is unused)
        mask = mask | torch.eye(t, dtype=torch.bool, device=dev)[None, None]
        out = torch.zeros((b, max_new), dtype=torch.long, device=dev)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        lengths = torch.full((b,), max_new, dtype=torch.long, device=dev)
        pos_next = positions[:, -1] + 1
        x, cur = ids, 0
        for n in range(max_new):
            q_len = x.shape[1]
            pos = positions if n == 0 else pos_next[:, None] + (n - 1)
            cos, sin = rope(pos, s.head_dim, s.rope_theta)
            h = self.embed(x).to(dtype)
            m = mask if n == 0 else valid[:, None, None, : cur + 1]
            swift_in = None
            for i in range(s.layers):
                if student and i == self.num_kv_layers and i < s.layers:
                    swift_in = self.swift_input(h)
                h = self.layer(i, h, cos, sin, m, swift_in=swift_in, cache=caches[i], cache_pos=cur)
            step_ids = self.logits(h[:, -1:]).argmax(-1)[:, 0]
            step_ids = torch.where(done, torch.zeros_like(step_ids), step_ids)
            out[:, n] = step_ids
            newly = (~done) & (step_ids == eos)
            lengths = torch.where(newly, torch.full_like(lengths, n + 1), lengths)
            done = done | newly
            cur += q_len
            if cur < valid.shape[1]:
                valid[:, cur] = True
            x = step_ids[:, None]
            if bool(done.all()):
                break
        rows = out.tolist()
        return [row[: int(n)] for row, n in zip(rows, lengths.tolist(), strict=True)]
