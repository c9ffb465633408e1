"""Real prompts for acceptance measurements: chat questions, and the edit-style and structured
text where model-free drafting is expected to help (code edits, lists, repeated formats)."""

from __future__ import annotations

PARSE_CONFIG = """def parse_config(path):
    with open(path) as f:
        lines = f.read().splitlines()
    config = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        key, value = line.split("=", 1)
        config[key.strip()] = value.strip()
    return config
"""


def acceptance_prompts() -> list[str]:
    return [
        "What is the capital of France?",
        "Explain in two sentences why the sky is blue.",
        "Write a haiku about autumn leaves.",
        "List the first ten prime numbers, separated by commas.",
        "Count from 1 to 30: 1, 2, 3,",
        "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday, Monday, Tuesday,",
        f"Rewrite this function with type hints, keeping everything else the same:\n\n{PARSE_CONFIG}",
        f"Add a docstring to this function and return the full code:\n\n{PARSE_CONFIG}",
        "Rename the variable `config` to `settings` in this code and print the whole function:\n\n"
        + PARSE_CONFIG,
        "Convert to JSON: name Alice, age 30, city Paris; name Bob, age 25, city Rome; name Carol, age 35,",
        "<ul>\n  <li>apple</li>\n  <li>banana</li>\n  <li>cherry</li>\n  <li>",
        "Translate to French: Good morning. How are you? I am fine, thank you.",
    ]
