"""Findings whose numbers come from result files, checked by ``make bench-report``.

In ``bench/report_intro.md`` (the findings at the top of docs/benchmarks.md) every measured number is
written as a reference to a field of a result file, which the report renders:

* ``<!-- ref S = smollm2-gpu-20261126T014848Z -->`` on a line of its own names a result file
  (``bench/results/<name>.json``); the line is not rendered;
* ``{{S:engines.vanilla.cases["e2e-real-prompts-128"].ms_per_token.median|.3f}}`` renders that field
  with the format spec after ``|`` (Python's ``format``: ``.3f``, ``.1%``, ``,.0f``; default ``g``). A
  path is dotted keys, ``["key"]`` for keys with dots or slashes, ``[2]`` for a list item and
  ``[name=value]`` for the list item whose ``name`` is ``value``;
* ``{{(A + B) / C|.2f}}``: arithmetic over references and numbers (``+ - * /``, parentheses,
  ``min(...)``, ``max(...)``), e.g. a ratio of two fields of one run.

``make bench-report`` fails when a reference does not resolve to a number, and when the findings hold
a number written by hand that looks measured (a decimal or thousands-separated number, or a number
with a unit: x, %, ms, us, s, tok/s, GB, GB/s, TB/s, MB) outside code spans, version numbers and
names such as H100. Plain integers (batch 64, 16 tokens, 4 rounds) are settings and stay as they are.
An item that cannot be checked yet carries ``<!-- claims: unchecked (why) -->`` and is rendered with a
visible note saying so.

``check_quoted`` applies the same rule to text outside the report (README's suffix paragraph between
``<!-- claims -->`` and ``<!-- /claims -->``): each measured-looking number there must be one the
findings rendered.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import operator
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALIAS = re.compile(r"^<!-- ref (\w+) = ([\w.-]+) -->[ \t]*\n?", re.M)
PLACEHOLDER = re.compile(r"\{\{(.+?)\}\}", re.S)
UNCHECKED = re.compile(r"<!-- claims: unchecked \(([^)]*)\) -->")
UNCHECKED_NOTE = " *(numbers in this item are not yet checked against bench/results: {why})*"
OPERATORS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Div: operator.truediv,
    ast.Mult: operator.mul,
    ast.Sub: operator.sub,
    ast.Add: operator.add,
}
FUNCTIONS: dict[str, Callable[..., float]] = {"min": min, "max": max}
REFERENCE = re.compile(r'([A-Za-z_][\w.-]*):((?:[A-Za-z_][\w-]*|\["[^"]*"\]|\[[^\]]*\]|\.)+)')
UNITS = r"(?:x|%|ms|us|µs|s|tok/s|GB/s|TB/s|GB|MB)"
NUMBER = re.compile(
    r"(?<![\w./=#])(?<![A-Za-z_]-)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(\s?" + UNITS + r")?(?!\w|\.\d)"
)
# Words after which a number is a version or a name, not a measurement.
NOT_MEASURED_AFTER = {"vllm", "python", "inference", "torch", "cuda", "nanobind", "version", "issue", "pr"}


class ClaimError(ValueError):
    """A claim that cannot be rendered or checked; the message names it and what is wrong."""


@dataclass(frozen=True)
class Claim:
    expression: str
    value: float
    text: str


Step = str | int | tuple[tuple[str, str], ...]


def parse_path(path: str) -> list[Step]:
    """``a.b["c.d"][2][name=x,kind=y]`` -> ["a", "b", "c.d", 2, (("name", "x"), ("kind", "y"))]."""
    steps: list[Step] = []
    pos = 0
    token = re.compile(r'\.?([A-Za-z_][\w-]*)|\["([^"]*)"\]|\[(-?\d+)\]|\[([^\]]+=[^\]]*)\]')
    while pos < len(path):
        m = token.match(path, pos)
        if m is None or m.end() == pos:
            raise ClaimError(f"cannot read the path {path!r} at {path[pos:]!r}")
        name, quoted, number, select = m.groups()
        if name is not None:
            steps.append(name)
        elif quoted is not None:
            steps.append(quoted)
        elif number is not None:
            steps.append(int(number))
        else:
            pairs = [part.split("=", 1) for part in select.split(",")]
            steps.append(tuple((k.strip(), v.strip().strip('"')) for k, v in pairs))
        pos = m.end()
    return steps


def resolve(data: Any, path: str) -> Any:
    """The value at ``path`` in ``data`` (``ClaimError`` naming the step that is missing)."""
    current = data
    for step in parse_path(path):
        try:
            if isinstance(step, tuple):
                current = next(
                    item for item in current if all(str(item.get(key)) == value for key, value in step)
                )
            else:
                current = current[step]
        except (KeyError, IndexError, TypeError, StopIteration, AttributeError):
            raise ClaimError(f"{path!r}: no {step!r} there") from None
    return current


def _reference(name: str, path: str, aliases: dict[str, str], load: Callable[[str], Any]) -> float:
    file = aliases.get(name, name)
    value = resolve(load(file), path)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ClaimError(f"{name}:{path} is {value!r}, not a number")
    return float(value)


def evaluate(expression: str, aliases: dict[str, str], load: Callable[[str], Any]) -> float:
    """Arithmetic over references ``FILE:PATH`` (FILE a result file's name or an alias) and numbers."""
    values: dict[str, float] = {}

    def bind(m: re.Match[str]) -> str:
        name = f"_ref{len(values)}"
        values[name] = _reference(m.group(1), m.group(2), aliases, load)
        return name

    source = REFERENCE.sub(bind, expression.strip())
    if not values:
        raise ClaimError(f"{expression!r}: no reference FILE:PATH in it")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise ClaimError(f"{expression!r}: not an arithmetic expression") from None

    def run(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return run(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in values:
            return values[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            return OPERATORS[type(node.op)](run(node.left), run(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -run(node.operand)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FUNCTIONS
            and not node.keywords
        ):
            return FUNCTIONS[node.func.id](*(run(arg) for arg in node.args))
        raise ClaimError(f"{expression!r}: only + - * /, parentheses, min() and max() are allowed")

    return run(tree)


def loader(results_dir: Path) -> Callable[[str], Any]:
    cache: dict[str, Any] = {}

    def load(name: str) -> Any:
        if name not in cache:
            path = results_dir / f"{name}.json"
            if not path.exists():
                raise ClaimError(f"result file {path.name} not found in {results_dir}")
            cache[name] = json.loads(path.read_text())
        return cache[name]

    return load


def _visible(text: str) -> str:
    """The text a reader reads as prose: code spans, link targets and HTML comments blanked."""

    def blank(m: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))

    text = re.sub(r"<!--.*?-->", blank, text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", blank, text)
    return re.sub(r"\]\([^)]*\)", blank, text)


def measured_numbers(text: str) -> list[tuple[int, str]]:
    """(line, number) for every number in ``text`` that looks measured (see the module docstring)."""
    found = []
    visible = _visible(text)
    for m in NUMBER.finditer(visible):
        whole, decimals, unit = m.group(1), m.group(2), m.group(3)
        if not (decimals or "," in whole or unit):
            continue
        before = re.findall(r"[\w-]+", visible[max(0, m.start() - 30) : m.start()])
        if before and before[-1].lower() in NOT_MEASURED_AFTER:
            continue
        found.append((visible.count("\n", 0, m.start()) + 1, m.group(0).strip()))
    return found


def _items(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the list items and paragraphs of ``text``."""
    bounds = [0] + [m.start() + 1 for m in re.finditer(r"\n(?=- |\n|#)", text)] + [len(text)]
    return list(itertools.pairwise(bounds))


def render(template: str, load: Callable[[str], Any]) -> tuple[str, list[Claim]]:
    """``template`` with its references rendered; ``ClaimError`` listing every problem: references
    that do not resolve, and measured-looking numbers written by hand (outside unchecked items)."""
    aliases = {m.group(1): m.group(2) for m in ALIAS.finditer(template)}
    template = ALIAS.sub("", template)
    problems: list[str] = []
    for start, end in _items(template):
        item = template[start:end]
        if UNCHECKED.search(item):
            continue
        line0 = template.count("\n", 0, start)
        for line, number in measured_numbers(PLACEHOLDER.sub(" ", item)):
            problems.append(
                f"line {line0 + line}: {number!r} is written by hand; write it as a reference "
                "{{FILE:PATH}} to the result field it comes from"
            )
    claims: list[Claim] = []

    def substitute(m: re.Match[str]) -> str:
        body = m.group(1)
        expression, _, spec = body.partition("|")
        try:
            value = evaluate(expression, aliases, load)
            text = format(value, spec.strip() or "g")
        except (ClaimError, ValueError, ZeroDivisionError) as exc:
            problems.append(f"{{{{{body}}}}}: {exc}")
            return m.group(0)
        claims.append(Claim(expression.strip(), value, text))
        return text

    rendered = PLACEHOLDER.sub(substitute, template)
    rendered = UNCHECKED.sub(lambda m: UNCHECKED_NOTE.format(why=m.group(1)), rendered)
    rendered = reflow(rendered)
    if problems:
        raise ClaimError("findings not backed by bench/results:\n  " + "\n  ".join(problems))
    return rendered, claims


def reflow(text: str, width: int = 104) -> str:
    """List items (``- `` and their two-space continuation lines) rewrapped at ``width``: rendered
    references leave ragged lines behind."""
    out: list[str] = []
    item: list[str] = []

    def flush() -> None:
        if item:
            words = " ".join(line.strip() for line in item)[2:]
            out.extend(
                textwrap.wrap(
                    words,
                    width,
                    initial_indent="- ",
                    subsequent_indent="  ",
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
            item.clear()

    for line in text.split("\n"):
        if line.startswith("- "):
            flush()
            item.append(line)
        elif item and line.startswith("  ") and line.strip():
            item.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return "\n".join(out)


def check_quoted(text: str, claims: list[Claim], where: str) -> list[str]:
    """Problems with the checked regions of ``text`` (between ``<!-- claims -->`` and
    ``<!-- /claims -->``): measured-looking numbers that are not among the rendered claims."""

    def bare(number: str) -> str:  # "+2.0%" in the findings is quoted as "+2.0%" or "2.0%"
        return re.sub(r"\s?" + UNITS + "$", "", number.strip()).lstrip("+")

    rendered = {bare(c.text) for c in claims}
    problems = []
    for region in re.finditer(r"<!-- claims -->(.*?)<!-- /claims -->", text, flags=re.S):
        line0 = text.count("\n", 0, region.start(1))
        for line, number in measured_numbers(region.group(1)):
            if bare(number) not in rendered:
                problems.append(
                    f"{where} line {line0 + line}: {number!r} is not a number the findings render "
                    "(bench/report_intro.md); quote one of them or add a reference there"
                )
    return problems
