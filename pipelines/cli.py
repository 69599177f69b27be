"""The ``spex-ray`` command: ``run`` a job, ``plan`` it without querying, ``show`` its explanations,
``report`` them as an HTML page.

Exit status: 0 on success (examples with bad input still get error rows), 2 for a bad config or
command line, 1 when the job cannot run (e.g. the output folder holds another config's results),
when every example failed, or at the first error row with ``--fail-fast``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pipelines.config import ConfigError, load_config

logger = logging.getLogger("pipelines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spex-ray",
                                     description="Batch explanations of model outputs with SPEX on Ray.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run (or resume) a job")
    run.add_argument("config", help="YAML job config")
    run.add_argument("--output", help="output folder (overrides the config's 'output')")
    run.add_argument("--address", help="address of a running Ray cluster (overrides 'ray.address')")
    run.add_argument("--fail-fast", action="store_true",
                     help="stop at the first example that gets an error row (to debug a config)")
    _common(run)

    plan = commands.add_parser("plan", help="print what a job would query, without querying")
    plan.add_argument("config", help="YAML job config")
    plan.add_argument("--output", help="output folder whose query log can calibrate the time estimate")
    _common(plan)

    show = commands.add_parser("show", help="print explanations readably")
    show.add_argument("output", help="a job's output folder")
    show.add_argument("--example", help="only this example id")
    show.add_argument("--index", help="interaction index to show (default: fbii when present)")
    show.add_argument("--top", type=_positive, default=10, help="marked features and listed terms (default 10)")

    report = commands.add_parser("report", help="write a self-contained HTML report of a job's explanations")
    report.add_argument("output", help="a job's output folder")
    report.add_argument("--output", dest="destination", metavar="FILE",
                        help="the HTML file to write (default: OUTPUT/report.html)")
    report.add_argument("--index", help="interaction index to show (default: fbii when present)")
    report.add_argument("--top", type=_positive, default=10,
                        help="interactions listed per example and counted in the recurring table (default 10)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spex-ray`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        if args.command == "show":
            from pipelines.show import show

            print(show(args.output, example_id=args.example, index=args.index, top=args.top))
            return 0
        if args.command == "report":
            from pipelines.report import report

            print(report(args.output, args.destination, index=args.index, top=args.top))
            return 0
        config = load_config(args.config, args.set)
        if args.output is not None:
            config.output = args.output
        if getattr(args, "address", None) is not None:
            config.ray.address = args.address
        if args.command == "plan":
            from pipelines.plan import describe, plan_job

            print(describe(config, plan_job(config, args.limit)))
            return 0
        from pipelines.runner import run_job

        summary = run_job(config, limit=args.limit, fail_fast=args.fail_fast)
        if summary.examples_ok == 0 and summary.examples_error > 0:
            print(f"spex-ray: error: every example failed ({summary.examples_error} error rows); "
                  f"the first: {summary.first_error}", file=sys.stderr)
            return 1
        return 0
    except ConfigError as err:
        print(f"spex-ray: {err}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, ImportError, OSError) as err:
        print(f"spex-ray: error: {err}", file=sys.stderr)
        return 1


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_positive, help="only the first N input records")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set ray.num_actors=4 (repeatable)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
