"""Mutation testing of the modules in tools/mutation/modules.txt with cosmic-ray: ``make mutation``.

    python tools/mutation/run.py [--sample 60] [--seed 0] [--min-killed 0.9] [--only PATH] [--out FILE]

Runs under the interpreter that has cosmic-ray (``make mutation`` makes ``.venv/mutation``); the
tests run with the project's ``.venv``. The repository's tracked files are copied to a scratch
directory first (cosmic-ray mutates files in place), and the tests import that copy. Per module:
``cosmic-ray init``, then a seeded sample of ``--sample`` mutants is kept (the others are marked
skipped), ``cosmic-ray exec``, and the share killed (a test failed or timed out) is reported. Exit 1
if any module is below ``--min-killed``; the survivors' diffs are printed so that a test can be
written for each.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "tools" / "mutation" / "modules.txt"
CONFIG = """[cosmic-ray]
module-path = "{module}"
timeout = {timeout}
excluded-modules = []
test-command = "env ARCTIC_HYPOTHESIS_SCALE={scale} {python} -m pytest -x -q -p no:cacheprovider {tests}"

[cosmic-ray.distributor]
name = "local"
"""


def modules(path: Path = MODULES) -> list[tuple[str, list[str]]]:
    """(module, tests) per non-comment line of modules.txt; a module listed twice gets the union."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        module, _, tests = line.partition(":")
        if not tests.strip():
            raise SystemExit(f"{path}: {line!r}: expected '<module>: <tests...>'")
        merged = found.setdefault(module.strip(), [])
        merged += [t for t in tests.split() if t not in merged]
    return list(found.items())


def copy_tree(dest: Path) -> None:
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file() and not src.is_symlink():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of the module's annotations: with ``from __future__ import
    annotations`` they are never evaluated, so a mutant inside one is equivalent by construction."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        annotations: list[ast.expr | None] = []
        if isinstance(node, ast.arg):
            annotations.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for ann in annotations:
            if ann is not None and ann.end_lineno is not None and ann.end_col_offset is not None:
                spans.append(((ann.lineno, ann.col_offset), (ann.end_lineno, ann.end_col_offset)))
    return spans


def sample(session: Path, size: int, seed: int, source: str = "") -> int:
    """Keep ``size`` of the session's mutants (seeded) that are not inside annotations (when the
    module postpones them); mark the rest skipped. How many are kept."""
    postponed = "from __future__ import annotations" in source
    spans = annotation_spans(source) if postponed else []
    with use_db(str(session), WorkDB.Mode.open) as db:
        # job ids are random per init: order the mutants by what they change, so a seed picks the same
        items = sorted(
            db.pending_work_items,
            key=lambda item: [
                (str(m.module_path), m.operator_name, m.occurrence, m.start_pos) for m in item.mutations
            ],
        )
        items = [
            item
            for item in items
            if not any(start <= tuple(m.start_pos) < end for m in item.mutations for start, end in spans)
        ]
        jobs = [item.job_id for item in items]
        every = [item.job_id for item in db.pending_work_items]
        keep = set(random.Random(seed).sample(jobs, min(size, len(jobs))))
        skipped = [job for job in every if job not in keep]
        if skipped:
            db.set_multiple_results(skipped, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
        return len(keep)


@dataclass
class Outcome:
    killed: int = 0
    survived: int = 0
    incompetent: int = 0
    survivors: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float | None:
        tried = self.killed + self.survived
        return self.killed / tried if tried else None


def outcome(session: Path) -> Outcome:
    out = Outcome()
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            if result.test_outcome == TestOutcome.SURVIVED:
                out.survived += 1
                mutation = item.mutations[0]
                out.survivors.append(f"{mutation.operator_name} line {mutation.start_pos[0]}:\n{result.diff}")
            elif result.test_outcome == TestOutcome.INCOMPETENT:
                out.incompetent += 1
            else:
                out.killed += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/mutation/run.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--sample", type=int, default=60, help="mutants per module (seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-killed", type=float, default=0.9)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant's test run")
    parser.add_argument("--only", action="append", help="module path(s) of modules.txt to run")
    parser.add_argument(
        "--hypothesis-scale",
        type=float,
        default=0.1,
        help="property tests' example counts x this (tests/operator/hypo.py), to try many mutants",
    )
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"), help="runs the tests")
    parser.add_argument("--out", type=Path, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    selected = [(m, t) for m, t in modules() if not args.only or m in args.only]
    if args.only and len(selected) != len(args.only):
        unknown = sorted(set(args.only) - {m for m, _ in selected})
        known = ", ".join(m for m, _ in modules())
        raise SystemExit(f"--only: {unknown} not in {MODULES.name}; known: {known}")
    summary: dict[str, dict[str, Any]] = {}
    failed = []
    with tempfile.TemporaryDirectory(prefix="arctic-mutation-") as tmp:
        work = Path(tmp) / "repo"
        copy_tree(work)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(work / p) for p in ("operator", "runtime", ".")),
        }
        for module, tests in selected:
            config = Path(tmp) / (Path(module).stem + ".toml")
            session = Path(tmp) / (Path(module).stem + ".sqlite")
            config.write_text(
                CONFIG.format(
                    module=module,
                    timeout=args.timeout,
                    python=args.python,
                    tests=" ".join(tests),
                    scale=args.hypothesis_scale,
                )
            )
            pytest = [args.python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
            scale = f"ARCTIC_HYPOTHESIS_SCALE={args.hypothesis_scale}"
            baseline = subprocess.run(
                ["env", scale, *pytest], cwd=work, env=env, capture_output=True, text=True, check=False
            )
            if baseline.returncode != 0:  # else every mutant would count as killed
                raise SystemExit(
                    f"mutation: {module}: the tests fail without a mutant:\n{baseline.stdout[-2000:]}"
                )
            subprocess.run(["cosmic-ray", "init", str(config), str(session)], cwd=work, env=env, check=True)
            kept = sample(session, args.sample, args.seed, (work / module).read_text())
            began = time.monotonic()
            print(
                f"mutation: {module}: {kept} mutants (seed {args.seed}), tests {' '.join(tests)}", flush=True
            )
            subprocess.run(["cosmic-ray", "exec", str(config), str(session)], cwd=work, env=env, check=True)
            result = outcome(session)
            summary[module] = {**asdict(result), "killed_fraction": result.fraction, "sampled": kept}
            print(
                f"mutation: {module}: killed {result.killed} of {result.killed + result.survived}"
                f" ({result.fraction}), incompetent {result.incompetent}, {time.monotonic() - began:.0f} s",
                flush=True,
            )
            for text in result.survivors:
                print(f"  survived: {text}")
            if result.fraction is None or result.fraction < args.min_killed:
                failed.append(module)
    if args.out:
        record = {
            "kind": "mutation",
            "tool": "cosmic-ray 8.7.0",
            "command": "python tools/mutation/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "sample": args.sample,
            "seed": args.seed,
            "hypothesis_scale": args.hypothesis_scale,
            "modules": summary,
        }
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    if failed:
        print(f"mutation: below {args.min_killed:.0%} killed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
