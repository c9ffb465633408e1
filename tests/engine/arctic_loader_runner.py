"""Arctic Inference 0.3.0's own LSTM speculator (Python, from its sdist) on our checkpoints, on CPU:
``python -m tests.engine.arctic_loader_runner '{"source": DIR, "ours": DIR, "exported": DIR,
"base": DIR}'`` prints one ``RESULT {json}`` line: the error its loader raises on ``ours`` as it
is, and its drafts beside ours for the ``exported`` copy (its PyTorch fallback path; the FP8 head it
uses at batch <= 32 is CUDA-only and left out). Its plugin patches vLLM, hence a process of its own.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def main() -> None:
    request = json.loads(sys.argv[1])
    sys.path.insert(0, request["source"])
    os.environ.update(ARCTIC_INFERENCE_ENABLED="1", ARCTIC_INFERENCE_SKIP_PLATFORM_CHECK="1")
    import torch
    from arctic_inference.vllm.plugin import arctic_inference_plugin  # type: ignore[import-not-found]

    arctic_inference_plugin()
    import vllm.distributed.parallel_state as ps
    from arctic_inference.vllm.spec_dec.arctic_speculator import (  # type: ignore[import-not-found]
        ArcticLSTMSpeculator,
    )
    from safetensors.torch import load_file
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment
    from vllm.engine.arg_utils import EngineArgs

    from arctic_runtime.heads.model import load_head

    spec = {"method": "arctic", "model": request["exported"], "num_speculative_tokens": 3}
    args = EngineArgs(
        model=request["base"],
        speculative_config=spec,
        max_model_len=1024,
        enforce_eager=True,
        dtype="float32",
    )
    config = args.create_engine_config()
    with set_current_vllm_config(config):
        init_distributed_environment(1, 0, "tcp://127.0.0.1:29533", 0, "gloo")
        ps.initialize_model_parallel(1, 1)
    sc = config.speculative_config
    draft_config = VllmConfig(
        model_config=sc.draft_model_config,
        parallel_config=sc.draft_parallel_config,
        scheduler_config=config.scheduler_config,
        speculative_config=sc,
        load_config=config.load_config,
        device_config=config.device_config,
    )
    result: dict[str, Any] = {"method": sc.method, "archs": sc.draft_model_config.hf_config.architectures}
    with set_current_vllm_config(draft_config):
        model = ArcticLSTMSpeculator(vllm_config=draft_config)
    try:
        model.load_weights(load_file(os.path.join(request["ours"], "model.safetensors")).items())
        result["ours_as_is"] = "loaded"
    except Exception as exc:  # what a user sees
        result["ours_as_is"] = f"{type(exc).__name__}: {exc}"
    with set_current_vllm_config(draft_config):
        model = ArcticLSTMSpeculator(vllm_config=draft_config)
    model.load_weights(load_file(os.path.join(request["exported"], "model.safetensors")).items())
    model.qhead = None  # its FP8 head (batch <= 32) needs CUDA
    model = model.float()
    ours = load_head(request["exported"], dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(8, ours.config.input_hidden_dim, generator=g) * 3
    tokens = torch.randint(0, ours.config.vocab_size, (8,), generator=g)
    with torch.no_grad():
        result["arctic"] = model.generate_proposals(
            input_ids=tokens, previous_hidden_states=hidden, num_predict_tokens=3
        ).tolist()
    result["ours"] = ours.draft(hidden, tokens, 3).tolist()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
