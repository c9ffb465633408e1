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


# Shift Parallelism exactness (tests/engine/test_shift_parallel.py): 22 prompts from 2 to ~400
# tokens (chunked prefill at 512 batched tokens), answers of 6 to 40 tokens so the decode batch
# shrinks while the run goes on and requests cross the shift threshold mid-generation. Some repeat
# themselves, so suffix decoding drafts.
_STORY = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. He trimmed the wick, "
    "polished the great lens and wrote the weather in a leather book. "
)
_NOTES = "Meeting notes: the budget was approved, the launch moved to March, and the team grew by two. "
PARALLEL_PROMPTS = [
    "Hi",
    "The capital of France is",
    "1, 2, 3, 4, 5, 6, 7, 8,",
    "Write a short poem about the sea.",
    "Explain photosynthesis to a child.",
    "def fibonacci(n):",
    "List three primary colors:",
    "Translate 'good morning' into Spanish:",
    "Repeat after me: the cat sat on the mat. The cat sat on the mat. The cat sat on the mat.",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday, Monday, Tuesday,",
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):",
    _STORY * 6 + "What did the keeper do every evening?",
    _NOTES * 10 + "Summarise the meeting notes in one sentence.",
    "Question: What is the largest planet in our solar system?\nAnswer:",
    "Once upon a time, in a small village by the mountains,",
    "The quick brown fox jumps over the lazy dog. " * 8 + "Now write it backwards:",
    "SELECT name, age FROM users WHERE",
    "Give me a recipe for pancakes.",
    "a b c d e f g h i j k l m n o p",
    _STORY * 12 + "Continue the story.",
    "Why is the sky blue?",
    "import numpy as np\n\nx = np.arange(10)\ny =",
]
PARALLEL_MAX_TOKENS = [6 + (i * 7) % 35 for i in range(len(PARALLEL_PROMPTS))]
