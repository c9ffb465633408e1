"""Draft-head (speculator) checkpoints: their config, read and checked. Standard library only.

Two published layouts are read unchanged:

* **MLP** (IBM's ``MLPSpeculatorPreTrainedModel``, ``model_type: mlp_speculator``; also Arctic
  Inference's ``ArcticMLPSpeculator``): fields ``n_predict``, ``emb_dim`` (the base model's hidden
  width), ``inner_dim`` (0 = ``emb_dim``), ``vocab_size``, ``tie_weights``, ``scale_input``; weights
  ``emb.i``, ``proj.i``, ``ln.i`` (weight, bias), ``head.i`` per step.
* **LSTM** (Arctic's ``ArcticLSTMSpeculatorPreTrainedModel`` with ``method: sum_lstm``): fields
  ``n_predict``, ``input_hidden_dim``, ``inner_dim``, ``emb_dim``, ``proj_dim`` (Arctic writes these
  three as dotted strings such as ``"4096"``; one level is supported), ``vocab_size``,
  ``tie_weights`` and ``tie_lstm_embs`` (both required by the design), ``scale_input``; weights
  ``forget_emb.0``, ``projs.0`` (from the base hidden state), ``projs.1`` (from the previous step),
  ``cell_ln.0``, ``state_ln.0``, ``head.i``. ArcticTraining saves each ``projs.i`` as four gate
  matrices (``forget_proj.i``, ``input_proj.i``, ``output_proj.i``, ``cell_proj.i``; Arctic
  Inference 0.3.0 requires them): both are read (``heads.model.join_gate_projections``), and
  ``heads.model.save_arctic_layout`` writes that layout.

One field of our own, ``tie_base_embeddings`` (default false): the token embedding and the output
head are the base model's own (its ``embed_tokens``, and its ``lm_head``), so the checkpoint leaves
them out. That keeps a head for SmolLM2 at a few MiB instead of 100+ (what it costs in acceptance
is measured in ``docs/benchmarks.md``). It needs ``emb_dim``/``inner_dim`` equal to the base width.

Every problem raises ``InvalidSetting`` naming ``speculative_config.<key>`` (for the engine) or the
config file's field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from arctic_runtime.contract import HEAD_METHODS, FieldError, InvalidSetting

__all__ = ["HEAD_METHODS", "HeadConfig", "check_against_base", "parse_head_config", "read_head_config"]

HeadKind = Literal["mlp", "lstm"]

#: ``speculative_config.method`` values served by the draft-head proposer.
#: Config file name inside a speculator folder.
CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class HeadConfig:
    """A speculator's shape, whichever layout it was read from."""

    kind: HeadKind
    n_predict: int
    input_hidden_dim: int  # the base model's hidden width the head reads
    inner_dim: int  # the head's state width (what its output head reads)
    emb_dim: int  # the token embedding width (LSTM: equals proj_dim)
    proj_dim: int  # LSTM gate width (4 * proj_dim pre-activations); MLP: inner_dim
    vocab_size: int
    tie_weights: bool
    scale_input: bool
    tie_base_embeddings: bool = False

    def to_json(self) -> dict[str, Any]:
        """The config.json that reads back as this config, in the published layout."""
        common: dict[str, Any] = {
            "n_predict": self.n_predict,
            "vocab_size": self.vocab_size,
            "tie_weights": self.tie_weights,
            "scale_input": self.scale_input,
            "tie_base_embeddings": self.tie_base_embeddings,
        }
        if self.kind == "mlp":
            return {
                "architectures": ["MLPSpeculatorPreTrainedModel"],
                "model_type": "mlp_speculator",
                "emb_dim": self.input_hidden_dim,
                "inner_dim": self.inner_dim,
                "top_k_tokens_per_head": [1] * self.n_predict,
                **common,
            }
        return {
            "architectures": ["ArcticLSTMSpeculatorPreTrainedModel"],
            "model_type": "mlp_speculator",
            "method": "sum_lstm",
            "input_hidden_dim": self.input_hidden_dim,
            "inner_dim": str(self.inner_dim),
            "emb_dim": str(self.emb_dim),
            "proj_dim": str(self.proj_dim),
            "tie_lstm_embs": True,
            "num_lookahead_tokens": self.n_predict,
            **common,
        }


def _dims(raw: Any, key: str, errors: list[FieldError]) -> int:
    """Arctic's dotted dimension strings ("4096", "4096.4096") or plain ints; one level only."""
    if isinstance(raw, bool):
        errors.append(FieldError(key, f"must be a positive integer, got {raw!r}"))
        return 0
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str):
        parts = raw.split(".")
        if not all(p.isdigit() for p in parts):
            errors.append(
                FieldError(key, f"must be a positive integer or a dotted string of them, got {raw!r}")
            )
            return 0
        if len(parts) > 1:
            errors.append(FieldError(key, f"several levels ({raw!r}) are not supported; use one width"))
            return 0
        value = int(parts[0])
    else:
        errors.append(FieldError(key, f"must be a positive integer, got {raw!r}"))
        return 0
    if value < 1:
        errors.append(FieldError(key, f"must be >= 1, got {value}"))
    return value


def _int(obj: dict[str, Any], key: str, errors: list[FieldError], where: str) -> int:
    if key not in obj:
        errors.append(FieldError(f"{where}.{key}", "is missing"))
        return 0
    return _dims(obj[key], f"{where}.{key}", errors)


def _bool(obj: dict[str, Any], key: str, default: bool, errors: list[FieldError], where: str) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        errors.append(FieldError(f"{where}.{key}", f"must be true or false, got {value!r}"))
        return default
    return value


def parse_head_config(obj: dict[str, Any], where: str = "config.json") -> HeadConfig:
    """``HeadConfig`` from a speculator's config.json contents; ``InvalidSetting`` names the field."""
    errors: list[FieldError] = []
    archs = obj.get("architectures") or []
    if isinstance(archs, str):  # ArcticTraining's saver writes a string
        archs = [archs]
    method = obj.get("method")
    is_lstm = any("LSTM" in str(a) for a in archs) or method is not None
    if is_lstm:
        if method != "sum_lstm":
            raise InvalidSetting(
                [
                    FieldError(
                        f"{where}.method", f"must be 'sum_lstm' (Arctic's LSTM speculator), got {method!r}"
                    )
                ]
            )
        hidden = _int(obj, "input_hidden_dim", errors, where)
        inner = _int(obj, "inner_dim", errors, where)
        emb = _int(obj, "emb_dim", errors, where)
        proj = _int(obj, "proj_dim", errors, where)
        if not _bool(obj, "tie_weights", True, errors, where):
            errors.append(FieldError(f"{where}.tie_weights", "must be true for method sum_lstm"))
        if not _bool(obj, "tie_lstm_embs", True, errors, where):
            errors.append(FieldError(f"{where}.tie_lstm_embs", "must be true for method sum_lstm"))
        if not errors and not (inner == emb == proj):
            errors.append(
                FieldError(
                    f"{where}.proj_dim",
                    f"inner_dim, emb_dim and proj_dim must be equal for sum_lstm, got {inner}, {emb}, {proj}",
                )
            )
        kind: HeadKind = "lstm"
        tie = True
    else:
        hidden = _int(obj, "emb_dim", errors, where)
        inner = _dims(obj.get("inner_dim", 0) or hidden, f"{where}.inner_dim", errors) if hidden else 0
        emb = proj = inner
        kind = "mlp"
        tie = _bool(obj, "tie_weights", False, errors, where)
    n_predict = _int(obj, "n_predict", errors, where)
    vocab = _int(obj, "vocab_size", errors, where)
    scale_input = _bool(obj, "scale_input", False, errors, where)
    tie_base = _bool(obj, "tie_base_embeddings", False, errors, where)
    if kind == "mlp" and tie and n_predict == 1:
        errors.append(
            FieldError(f"{where}.tie_weights", "needs n_predict >= 2 (nothing to tie with one step)")
        )
    if errors:
        raise InvalidSetting(errors)
    return HeadConfig(
        kind=kind,
        n_predict=n_predict,
        input_hidden_dim=hidden,
        inner_dim=inner,
        emb_dim=emb,
        proj_dim=proj,
        vocab_size=vocab,
        tie_weights=tie,
        scale_input=scale_input,
        tie_base_embeddings=tie_base,
    )


def read_head_config(folder: str | Path, key: str = "speculative_config.model") -> HeadConfig:
    """Read and check ``folder/config.json``; its weights file must exist too."""
    path = Path(folder)
    if not path.is_dir():
        raise InvalidSetting([FieldError(key, f"speculator folder {str(folder)!r} does not exist")])
    config_path = path / CONFIG_FILE
    try:
        obj = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidSetting([FieldError(key, f"{config_path} is missing")]) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidSetting([FieldError(key, f"{config_path} cannot be read: {exc}")]) from None
    if not isinstance(obj, dict):
        raise InvalidSetting([FieldError(key, f"{config_path} must hold a JSON object")])
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise InvalidSetting(
            [FieldError(key, f"no weights in {path} (expected one of {', '.join(WEIGHT_FILES)})")]
        )
    return parse_head_config(obj, where=f"{key} {CONFIG_FILE}")


def check_against_base(
    config: HeadConfig, *, base_hidden: int, base_vocab: int, num_speculative_tokens: int | None
) -> int:
    """Check a head against the base model and the requested draft length; the draft length to use
    (``n_predict`` when not given). Errors name ``speculative_config.<key>``."""
    errors: list[FieldError] = []
    if config.input_hidden_dim != base_hidden:
        errors.append(
            FieldError(
                "speculative_config.model",
                f"the speculator reads hidden states of width {config.input_hidden_dim} "
                f"(input_hidden_dim/emb_dim) but the base model's hidden size is {base_hidden}",
            )
        )
    if config.vocab_size != base_vocab:
        errors.append(
            FieldError(
                "speculative_config.model",
                f"the speculator's vocab_size {config.vocab_size} differs from the base model's {base_vocab}",
            )
        )
    if config.tie_base_embeddings and (config.emb_dim != base_hidden or config.inner_dim != base_hidden):
        errors.append(
            FieldError(
                "speculative_config.model",
                "tie_base_embeddings needs emb_dim and inner_dim equal to the base hidden size "
                f"{base_hidden}",
            )
        )
    k = config.n_predict if num_speculative_tokens is None else num_speculative_tokens
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= config.n_predict:
        errors.append(
            FieldError(
                "speculative_config.num_speculative_tokens",
                f"must be an integer in 1..n_predict (= {config.n_predict}) for this speculator, got {k!r}",
            )
        )
    if errors:
        raise InvalidSetting(errors)
    return k
