"""The ``course-adv`` command. Each subcommand is a small ``add_<name>(subparsers)`` function
that declares its arguments and sets ``run`` to a callable taking the parsed arguments and
returning the exit code; add a new one to ``SUBCOMMANDS``.

    course-adv grade PATH [--json] [--csv FILE] [--timeout S] [--hidden FILE] [--exercise NAME]
                          [--jobs N] [--no-sandbox]
    course-adv make-exercises [--check] [--solutions DIR] [--exercises DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def add_grade(subparsers) -> None:
    parser = subparsers.add_parser(
        "grade",
        help="grade exercise notebooks (one, or a folder of them)",
        description="Grade a submitted exercise notebook, or every notebook in a folder. Each "
        "notebook runs in a bubblewrap sandbox (no network, no view of other files, a time "
        "limit). Exits 0 whatever the score; 2 when grading itself cannot run (bad path, bad "
        "hidden-cases file, no sandbox for a folder).",
    )
    parser.add_argument("path", help="a notebook (.ipynb) or a folder of notebooks")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--csv", metavar="FILE", help="also write one row per notebook to FILE")
    parser.add_argument(
        "--timeout", type=float, default=60.0, metavar="S",
        help="seconds for a notebook's cells, all together; each graded call gets 10%% of it "
        "(at least 5 s) on top (default: 60)",
    )  # fmt: skip
    parser.add_argument(
        "--hidden", metavar="FILE",
        help="JSON file of hidden cases (default: $COURSE_ADV_HIDDEN_CASES, if set)",
    )  # fmt: skip
    parser.add_argument(
        "--exercise", metavar="NAME",
        help="grade against this exercise (default: from the notebook's metadata or file name)",
    )  # fmt: skip
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N",
        help="grade N notebooks at once (default: 1; on 2 cores, 2)",
    )  # fmt: skip
    parser.add_argument(
        "--no-sandbox", action="store_true",
        help="grade without bubblewrap (where it is missing); every report says 'not sandboxed'",
    )  # fmt: skip

    def run(args: argparse.Namespace) -> int:
        from .grading import grade_command

        return grade_command(
            args.path,
            as_json=args.json,
            csv_file=args.csv,
            timeout=args.timeout,
            hidden_file=args.hidden,
            exercise=args.exercise,
            jobs=args.jobs,
            no_sandbox=args.no_sandbox,
        )

    parser.set_defaults(run=run)


def add_make_exercises(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-exercises",
        help="regenerate exercises/ from solutions/",
        description="Write each solutions/*.ipynb to exercises/ with its solution regions "
        "replaced by `raise NotImplementedError`. With --check, write nothing and exit 1 if "
        "exercises/ is out of date.",
    )
    parser.add_argument("--check", action="store_true", help="only check that exercises/ is fresh")
    parser.add_argument("--solutions", default="solutions", metavar="DIR")
    parser.add_argument("--exercises", default="exercises", metavar="DIR")

    def run(args: argparse.Namespace) -> int:
        from .exercises import stale_exercises, write_exercises

        try:
            if args.check:
                problems = stale_exercises(args.solutions, args.exercises)
                for problem in problems:
                    print(problem, file=sys.stderr)
                if problems:
                    print("run `course-adv make-exercises` to regenerate them", file=sys.stderr)
                return 1 if problems else 0
            for path in write_exercises(args.solutions, args.exercises):
                print(f"wrote {path}" if path.exists() else f"removed {path}")
        except (OSError, ValueError) as err:
            print(f"course-adv make-exercises: error: {err}", file=sys.stderr)
            return 2
        return 0

    parser.set_defaults(run=run)


SUBCOMMANDS = (add_grade, add_make_exercises)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``course-adv`` console script."""
    parser = argparse.ArgumentParser(
        prog="course-adv", description="Tools for the course-adv adversarial ML course."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
