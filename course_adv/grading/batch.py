"""Grading a class: every notebook in a folder, ``jobs`` at once, and ``course-adv grade``.

Whatever happens while one notebook is graded (the grader's own failure included) becomes an
error row for that notebook; every other notebook is still graded, and the text, JSON and CSV
always have one complete entry per notebook. A folder is graded only in the sandbox, unless the
instructor passes ``--no-sandbox``.
"""

from __future__ import annotations

import os
import queue
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .child import describe_error
from .engine import grade_notebook
from .registry import all_exercises, hidden_from_env, load_hidden_cases
from .report import GradeReport, display_path, format_json, format_text, write_csv
from .sandbox import missing_reason
from .spec import Case, GradingError

__all__ = ["find_notebooks", "grade_path", "grade_command", "NO_SANDBOX_HELP"]

NO_SANDBOX_HELP = (
    "install bubblewrap (Debian/Ubuntu: apt install bubblewrap) or grade inside a Linux "
    "container; or pass --no-sandbox to grade without it (submissions then run as you, "
    "with your files in reach)"
)


def find_notebooks(path: str | os.PathLike) -> list[Path]:
    """The notebooks to grade: ``path`` itself, or every ``.ipynb`` under the folder ``path``."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".ipynb":
            raise GradingError(f"{display_path(path)} is not a notebook (.ipynb)")
        return [path]
    if not path.is_dir():
        raise GradingError(f"{display_path(path)} does not exist")
    found = sorted(
        p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and p.is_file()
    )
    if not found:
        raise GradingError(f"no notebooks (.ipynb) under {display_path(path)}")
    return found


def grade_path(
    path: str | os.PathLike,
    *,
    timeout: float = 60.0,
    hidden: Iterable[Case] | None = None,
    exercise: str | None = None,
    progress: Callable[[str], None] | None = None,
    jobs: int = 1,
    sandbox: bool | None = None,
) -> list[GradeReport]:
    """Grade a notebook or every notebook in a folder, ``jobs`` at a time, in the given order.

    ``sandbox``: True or None (the default) grades in bubblewrap; None grades a single notebook
    without it (its report says "not sandboxed") where bubblewrap is missing, and refuses a
    folder; False grades without the sandbox.
    """
    known = all_exercises()
    if exercise is not None and exercise not in known:
        raise GradingError(f"exercise {exercise!r} is unknown; choose one of {sorted(known)}")
    if not (isinstance(timeout, int | float) and timeout > 0):
        raise GradingError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise GradingError(f"jobs must be a whole number >= 1, got {jobs!r}")
    notebooks = find_notebooks(path)
    missing = missing_reason()
    if sandbox is not False and missing is not None and (sandbox or Path(path).is_dir()):
        raise GradingError(f"cannot grade in the sandbox: {missing}; {NO_SANDBOX_HELP}")
    sandboxed = sandbox is not False and missing is None
    hidden = list(hidden) if hidden is not None else hidden_from_env()
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(jobs):
        slots.put(slot)

    def grade(notebook: Path) -> GradeReport:
        slot = slots.get()
        try:
            if progress is not None:
                progress(f"grading {display_path(notebook)}")
            return grade_notebook(
                notebook,
                timeout=timeout,
                hidden=hidden,
                exercise=exercise,
                sandbox=sandboxed,
                slot=slot,
            )
        except Exception as err:  # the grader's own failure: an error row, never a lost class
            return GradeReport(
                display_path(notebook),
                None,
                error=f"the grader failed on this notebook: {describe_error(err)}",
                sandboxed=sandboxed,
            )
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(grade, notebooks))


def grade_command(
    path: str,
    *,
    as_json: bool = False,
    csv_file: str | None = None,
    timeout: float = 60.0,
    hidden_file: str | None = None,
    exercise: str | None = None,
    jobs: int = 1,
    no_sandbox: bool = False,
) -> int:
    """``course-adv grade``: print the report; 0 whatever the score, 2 if grading cannot run."""
    try:
        hidden = load_hidden_cases(hidden_file) if hidden_file else hidden_from_env()
        reports = grade_path(
            path,
            timeout=timeout,
            hidden=hidden,
            exercise=exercise,
            progress=lambda text: print(text, file=sys.stderr),
            jobs=jobs,
            sandbox=False if no_sandbox else None,
        )
        if len(reports) == 1 and reports[0].exercise is None:
            raise GradingError(f"{reports[0].path}: {reports[0].error}")
    except GradingError as err:
        print(f"course-adv grade: error: {err}", file=sys.stderr)
        return 2
    print(format_json(reports) if as_json else format_text(reports))
    if csv_file:
        write_csv(reports, csv_file)
    return 0
