"""Two processes sharing the model cache: one writes a model folder, the other waits and reuses it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from arctic_runtime import models

REPO = Path(__file__).resolve().parents[2]


def tiny_llama(folder: Path) -> Path:
    """A 2-layer Llama-shaped folder with 3 query / 1 KV heads of 4 dims (weights only)."""
    folder.mkdir(parents=True)
    config = {"num_attention_heads": 3, "num_key_value_heads": 1, "hidden_size": 12, "head_dim": 4}
    (folder / "config.json").write_text(json.dumps(config))
    state = {}
    for i in range(2):
        pre = f"model.layers.{i}.self_attn."
        state[pre + "q_proj.weight"] = torch.randn(12, 12)
        state[pre + "k_proj.weight"] = torch.randn(4, 12)
        state[pre + "v_proj.weight"] = torch.randn(4, 12)
        state[pre + "o_proj.weight"] = torch.randn(12, 12)
    save_file(state, str(folder / "model.safetensors"))
    return folder


def test_a_second_writer_waits_for_the_first_and_reuses_its_folder(tmp_path: Path) -> None:
    src = tiny_llama(tmp_path / "base")
    dst = tmp_path / "cache" / "base-heads6"
    code = (
        "import sys; from pathlib import Path; from arctic_runtime import models; "
        "print(models.head_padded_copy(Path(sys.argv[1]), Path(sys.argv[2]), 6, 2))"
    )
    with models._writer_lock(dst.parent):  # another process is writing into this cache
        other = subprocess.Popen(
            [sys.executable, "-c", code, str(src), str(dst)],
            cwd=REPO,
            env={"PYTHONPATH": str(REPO / "runtime"), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(3.0)  # ample for the write itself (a few KB)
        assert other.poll() is None, "the second writer did not wait for the lock"
        assert not dst.exists()
    out, _ = other.communicate(timeout=120)
    assert other.returncode == 0 and out.strip() == str(dst)
    assert json.loads((dst / "config.json").read_text())["num_attention_heads"] == 6
    # written once: a later call returns the same folder without rewriting it
    stamp = (dst / "model.safetensors").stat().st_mtime_ns
    assert models.head_padded_copy(src, dst, 6, 2) == dst
    assert (dst / "model.safetensors").stat().st_mtime_ns == stamp
