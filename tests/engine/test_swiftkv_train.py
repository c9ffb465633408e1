"""The SwiftKV recipe's pieces on the real SmolLM2 (no vLLM engine; marked ``engine`` for the real
weights): our plain-PyTorch forward against transformers', the cached greedy loop against full
forwards, the SwiftKV student path, a few distillation steps, and the GGUF dequantizer against the
``gguf`` package's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from arctic_runtime.train.llama import SwiftKVLlama, load_folder
from arctic_runtime.train.swiftkv import collate, distill_loss
from arctic_runtime.train.weights import dequantize

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def base(smollm2_dir: Path) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    config, state = load_folder(smollm2_dir)
    return config, {k: v.float() for k, v in state.items()}


def test_forward_equals_transformers(
    smollm2_dir: Path, base: tuple[dict[str, object], dict[str, torch.Tensor]]
) -> None:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()
    ids = torch.randint(0, 49152, (2, 33), generator=torch.Generator().manual_seed(0))
    ours = SwiftKVLlama(base[0], base[1], 15).to_device("cpu", torch.float32)
    with torch.no_grad():
        assert torch.allclose(ours(ids, student=False), hf(ids).logits, atol=1e-4)


def test_cached_greedy_equals_full_forwards(base: tuple[dict[str, object], dict[str, torch.Tensor]]) -> None:
    """Left-padded batch with a KV cache, teacher and SwiftKV student (random projections): every
    token is the argmax of a full forward over the prompt and the tokens before it."""
    model = SwiftKVLlama(base[0], base[1], 15).to_device("cpu", torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.swiftkv.parameters():
            p.add_(0.3 * p.std() * torch.randn(p.shape, generator=gen))
    prompts = [
        [1, 504, 3575, 282, 4649, 314],
        [19161, 253, 1890, 8216, 563, 260, 3426, 30, 378, 3426, 314, 2000],
    ]
    for student in (False, True):
        answers = model.greedy(prompts, max_new=6, eos=2, student=student)
        for prompt, answer in zip(prompts, answers, strict=True):
            with torch.no_grad():
                logits = model(torch.tensor([prompt + answer]), student=student)[0]
            assert logits[len(prompt) - 1 : -1].argmax(-1).tolist() == answer[: len(answer)]


def test_lkv_equal_to_layers_is_the_teacher(base: tuple[dict[str, object], dict[str, torch.Tensor]]) -> None:
    model = SwiftKVLlama(base[0], base[1], 30).to_device("cpu", torch.float32)
    ids = torch.randint(0, 49152, (1, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(ids, student=True), model(ids, student=False))
    assert len(model.swiftkv) == 0


def test_distillation_steps_lower_the_loss(base: tuple[dict[str, object], dict[str, torch.Tensor]]) -> None:
    model = SwiftKVLlama(base[0], base[1], 15).to_device("cpu", torch.float32)
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 49152, (64,), generator=gen).tolist()
    batch = [(tokens, [i >= 16 for i in range(64)], 16)]
    ids, target, valid = collate(batch, torch.device("cpu"))
    opt = torch.optim.AdamW(model.swiftkv.parameters(), lr=5e-4, weight_decay=0.0)
    losses = []
    for _ in range(4):
        loss, _, _ = distill_loss(model, ids, target, valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("kind", ["Q4_1", "Q8_0"])
def test_dequantizer_equals_gguf(kind: str) -> None:
    from gguf import GGMLQuantizationType, quants

    qtype = GGMLQuantizationType[kind]
    data = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    raw = quants.quantize(data, qtype)
    ours = dequantize(raw.tobytes(), kind, [8, 64])
    assert np.array_equal(ours, quants.dequantize(raw, qtype))
