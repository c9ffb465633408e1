# mypy: disable-error-code="no-untyped-def, untyped-decorator"
"""The draft heads' two fused steps, as Triton kernels beside plain-PyTorch references.

* ``speculator_ln``: the speculators' layer norm (RMS-style: ``x / rms(x) * weight + bias``, no mean
  subtraction, as in IBM's and Arctic's speculators), optionally followed by GELU (exact, erf).
* ``lstm_cell``: one step of Arctic's ``sum_lstm`` cell: gate pre-activations plus the scaled token
  embedding (tiled four times), sigmoid forget/input/output gates, ``c = c * f + gelu(ln_c(cand)) *
  i``, ``h = gelu(ln_s(c)) * o``.

``speculator_ln`` and ``lstm_cell`` pick the Triton kernel for CUDA tensors when Triton can run and
the reference otherwise (CPU); ``*_reference`` are the definitions the kernels are tested against
(``tests/unit/test_speculator_kernels.py``: references on CPU, kernels against references on CUDA).
Rows are independent: one Triton program per row, the whole row in one block (widths up to 16K).
"""

from __future__ import annotations

import math
from typing import Any

import torch

SQRT_HALF = 1.0 / math.sqrt(2.0)


def speculator_ln_reference(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-6,
    gelu: bool = False,
) -> torch.Tensor:
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    if bias is not None:
        y = y + bias.float()
    if gelu:
        y = torch.nn.functional.gelu(y)
    return y.to(x.dtype)


def lstm_cell_reference(
    gates: torch.Tensor,
    emb: torch.Tensor,
    alpha: float,
    cell: torch.Tensor,
    cell_weight: torch.Tensor,
    cell_bias: torch.Tensor,
    state_weight: torch.Tensor,
    state_bias: torch.Tensor,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``gates``: (rows, 4p) pre-activations [forget, input, output, candidate]; ``emb``: (rows, p)
    token embedding, added to each quarter times ``alpha``; ``cell``: (rows, p). Returns (h, c)."""
    p = cell.shape[-1]
    g = gates.float() + alpha * emb.float().repeat(1, 4)
    f, i, o = torch.sigmoid(g[:, : 3 * p]).split(p, dim=-1)
    cand = speculator_ln_reference(g[:, 3 * p :], cell_weight, cell_bias, eps, gelu=True)
    c = cell.float() * f + cand.float() * i
    h = speculator_ln_reference(c, state_weight, state_bias, eps, gelu=True).float() * o
    return h.to(gates.dtype), c.to(cell.dtype)


def triton_usable(t: torch.Tensor) -> bool:
    if not t.is_cuda:
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


_KERNELS: dict[str, Any] = {}


def _build() -> dict[str, Any]:
    if _KERNELS:
        return _KERNELS
    import triton
    import triton.language as tl

    @triton.jit
    def _gelu(x):  # no annotations: Triton resolves them as globals inside @jit
        return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))

    @triton.jit
    def _ln_kernel(
        X, W, B, Y, n, eps, HAS_W: tl.constexpr, HAS_B: tl.constexpr, GELU: tl.constexpr, BLOCK: tl.constexpr
    ):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < n
        x = tl.load(X + row * n + cols, mask=mask, other=0.0).to(tl.float32)
        y = x * tl.math.rsqrt(tl.sum(x * x, axis=0) / n + eps)
        if HAS_W:
            y = y * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_B:
            y = y + tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
        if GELU:
            y = _gelu(y)
        tl.store(Y + row * n + cols, y.to(Y.dtype.element_ty), mask=mask)

    @triton.jit
    def _lstm_kernel(G, E, C, CW, CB, SW, SB, H, CO, p, alpha, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < p
        base = G + row * 4 * p
        e = alpha * tl.load(E + row * p + cols, mask=mask, other=0.0).to(tl.float32)
        f = tl.sigmoid(tl.load(base + cols, mask=mask, other=0.0).to(tl.float32) + e)
        i = tl.sigmoid(tl.load(base + p + cols, mask=mask, other=0.0).to(tl.float32) + e)
        o = tl.sigmoid(tl.load(base + 2 * p + cols, mask=mask, other=0.0).to(tl.float32) + e)
        cand = tl.load(base + 3 * p + cols, mask=mask, other=0.0).to(tl.float32) + e
        cand = tl.where(mask, cand, 0.0)
        cand = cand * tl.math.rsqrt(tl.sum(cand * cand, axis=0) / p + eps)
        cand = cand * tl.load(CW + cols, mask=mask, other=0.0).to(tl.float32)
        cand = _gelu(cand + tl.load(CB + cols, mask=mask, other=0.0).to(tl.float32))
        c = tl.load(C + row * p + cols, mask=mask, other=0.0).to(tl.float32) * f + cand * i
        c = tl.where(mask, c, 0.0)
        # the reference rounds c to the cell dtype before normalising it: do the same
        c_store = c.to(CO.dtype.element_ty)
        tl.store(CO + row * p + cols, c_store, mask=mask)
        cs = c_store.to(tl.float32)
        s = cs * tl.math.rsqrt(tl.sum(cs * cs, axis=0) / p + eps)
        s = s * tl.load(SW + cols, mask=mask, other=0.0).to(tl.float32)
        s = _gelu(s + tl.load(SB + cols, mask=mask, other=0.0).to(tl.float32))
        tl.store(H + row * p + cols, (s * o).to(H.dtype.element_ty), mask=mask)

    _KERNELS.update(ln=_ln_kernel, lstm=_lstm_kernel, next_pow2=triton.next_power_of_2)
    return _KERNELS


def speculator_ln_triton(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-6,
    gelu: bool = False,
) -> torch.Tensor:
    k = _build()
    n = x.shape[-1]
    x2 = x.reshape(-1, n).contiguous()
    y = torch.empty_like(x2)
    dummy = x2
    k["ln"][(x2.shape[0],)](
        x2,
        weight if weight is not None else dummy,
        bias if bias is not None else dummy,
        y,
        n,
        eps,
        HAS_W=weight is not None,
        HAS_B=bias is not None,
        GELU=gelu,
        BLOCK=k["next_pow2"](n),
    )
    return y.reshape(x.shape)


def lstm_cell_triton(
    gates: torch.Tensor,
    emb: torch.Tensor,
    alpha: float,
    cell: torch.Tensor,
    cell_weight: torch.Tensor,
    cell_bias: torch.Tensor,
    state_weight: torch.Tensor,
    state_bias: torch.Tensor,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    k = _build()
    rows, p = cell.shape
    g = gates.contiguous()
    e = emb.contiguous()
    c_in = cell.contiguous()
    h = torch.empty((rows, p), dtype=gates.dtype, device=gates.device)
    c_out = torch.empty_like(c_in)
    k["lstm"][(rows,)](
        g,
        e,
        c_in,
        cell_weight,
        cell_bias,
        state_weight,
        state_bias,
        h,
        c_out,
        p,
        float(alpha),
        eps,
        BLOCK=k["next_pow2"](p),
    )
    return h, c_out


def speculator_ln(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-6,
    gelu: bool = False,
) -> torch.Tensor:
    if triton_usable(x) and not torch.is_grad_enabled():
        return speculator_ln_triton(x, weight, bias, eps, gelu)
    return speculator_ln_reference(x, weight, bias, eps, gelu)


def lstm_cell(
    gates: torch.Tensor,
    emb: torch.Tensor,
    alpha: float,
    cell: torch.Tensor,
    cell_weight: torch.Tensor,
    cell_bias: torch.Tensor,
    state_weight: torch.Tensor,
    state_bias: torch.Tensor,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    fn = lstm_cell_triton if triton_usable(gates) and not torch.is_grad_enabled() else lstm_cell_reference
    return fn(gates, emb, alpha, cell, cell_weight, cell_bias, state_weight, state_bias, eps)
