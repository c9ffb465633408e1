"""``python -m bench run --suite NAME`` | ``python -m bench report`` | ``python -m bench list``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.suites import SUITES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one suite and write bench/results/<suite>-<time>.json")
    run.add_argument("--suite", required=True, choices=sorted(SUITES))
    run.add_argument("--engines", help="comma-separated subset of the suite's engines")
    run.add_argument("--out", default="bench/results")
    run.add_argument(
        "--budget-s",
        type=float,
        help="wall-time limit of the whole run (a device command's): engines get what is left, and "
        "the result file is rewritten after each engine",
    )
    sub.add_parser("report", help="regenerate docs/benchmarks.md from bench/results/")
    sub.add_parser("list", help="list the suites")
    args = parser.parse_args(argv)
    if args.command == "list":
        for suite in SUITES.values():
            print(f"{suite.name:16} {suite.device}  {suite.description}")
        return 0
    if args.command == "report":
        from bench.claims import ClaimError
        from bench.report import write_report

        try:
            print(write_report())
        except ClaimError as exc:
            print(f"bench report: {exc}", file=sys.stderr)
            return 1
        return 0
    from bench.run import run_suite

    engines = args.engines.split(",") if args.engines else None
    unknown = [e for e in engines or [] if e not in SUITES[args.suite].engines]
    if unknown:
        print(
            f"bench: --engines: {unknown} not in suite {args.suite} (allowed: "
            f"{', '.join(SUITES[args.suite].engines)})",
            file=sys.stderr,
        )
        return 2
    run_suite(args.suite, Path(args.out), engines, budget_s=args.budget_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
