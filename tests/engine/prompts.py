"""Prompts shared by the engine tests. Repetitive ones make n-gram speculation draft a lot."""

PROMPTS = [
    "The capital of France is",
    "1, 2, 3, 4, 5, 6, 7, 8,",
    "Repeat after me: the cat sat on the mat. The cat sat on the mat. The cat sat on the mat.",
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday, Monday, Tuesday,",
    "Write a short poem about the sea.",
]
MAX_TOKENS = 40

# Sampled answers with suffix decoding: a prompt the answer copies from, so that drafts are made and
# verified by rejection sampling (bench/sampling.py compares such answers with vanilla vLLM's).
SAMPLE = {
    "prompt": "Repeat after me: the cat sat on the mat. The cat sat on the mat. The cat sat on the mat.",
    "n": 200,
    "max_tokens": 6,
    "temperature": 1.0,
}


def sample_params() -> object:
    """vLLM SamplingParams for SAMPLE (imported lazily: this module is imported without vLLM too). No
    per-request seed: on CPU, vLLM 0.26 cannot rewind a seeded request's generator when its prompt is
    prefilled in chunks ("CPU Generator does not use offset"), and 200 answers' prompts are."""
    from vllm import SamplingParams

    return SamplingParams(
        n=int(SAMPLE["n"]),  # type: ignore[call-overload]
        max_tokens=int(SAMPLE["max_tokens"]),  # type: ignore[call-overload]
        temperature=float(SAMPLE["temperature"]),  # type: ignore[arg-type]
        ignore_eos=True,
    )
