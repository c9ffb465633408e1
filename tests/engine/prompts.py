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
