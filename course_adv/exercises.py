"""Exercises from solutions: one source of truth for every exercise notebook.

Each exercise is written once, with its solution, as ``solutions/NN_name.ipynb``. The code a
student writes sits between nbgrader-style markers::

    def fgsm(model, x, y, eps):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

``course-adv make-exercises`` writes ``exercises/NN_name.ipynb`` with every such region
replaced by one line at the indentation of its ``### BEGIN SOLUTION`` marker,
``raise NotImplementedError(...)``, so the student copy runs (and fails politely) until it is
filled in. ``course-adv make-exercises --check`` exits non-zero when ``exercises/`` is stale,
which is what the tests and CI call. The output is deterministic: same solutions, same bytes.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import nbformat

__all__ = [
    "BEGIN",
    "END",
    "STUB",
    "strip_solutions",
    "make_exercise",
    "render_exercises",
    "write_exercises",
    "stale_exercises",
]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = 'raise NotImplementedError("your code here: replace this line with your solution")'
MARKDOWN_STUB = "*Your answer here.*"


def strip_solutions(source: str, stub: str = STUB) -> str:
    """``source`` with each BEGIN/END SOLUTION region (markers included) replaced by ``stub``.

    The stub keeps the indentation of the ``### BEGIN SOLUTION`` line; the code before and after
    a region is kept as it is. Raises ValueError on a marker without its partner.
    """
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(keepends=True), start=1):
        text = line.strip()
        if text == BEGIN:
            if inside:
                raise ValueError(f"line {number}: {BEGIN!r} inside another solution region")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            newline = "\n" if line.endswith("\n") else ""
            out.append(f"{indent}{stub}{newline}")
        elif text == END:
            if not inside:
                raise ValueError(f"line {number}: {END!r} without a {BEGIN!r} before it")
            inside = False
            if not line.endswith("\n") and out[-1].endswith("\n"):
                out[-1] = out[-1][:-1]  # the region ended the cell: so does the stub
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"a {BEGIN!r} region is never closed by {END!r}")
    return "".join(out)


def make_exercise(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student copy of a solution notebook: solutions stubbed, outputs cleared."""
    exercise = copy.deepcopy(solution)
    for i, cell in enumerate(exercise.cells):
        stub = STUB if cell.cell_type == "code" else MARKDOWN_STUB
        try:
            cell.source = strip_solutions(cell.source, stub)
        except ValueError as err:
            raise ValueError(f"cell {i}: {err}") from None
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return exercise


def _solution_files(solutions: str | os.PathLike) -> list[Path]:
    folder = Path(solutions)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"solutions folder {str(folder)!r} does not exist; run from the repository root "
            "or pass --solutions"
        )
    return sorted(folder.glob("*.ipynb"))


def render_exercises(
    solutions: str | os.PathLike = "solutions", exercises: str | os.PathLike = "exercises"
) -> dict[Path, str]:
    """What ``exercises/`` should hold: {path: notebook text} for every solution notebook."""
    rendered = {}
    for source in _solution_files(solutions):
        notebook = nbformat.read(source, as_version=nbformat.NO_CONVERT)
        try:
            text = nbformat.writes(make_exercise(notebook))
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        rendered[Path(exercises) / source.name] = text + "\n"
    return rendered


def stale_exercises(
    solutions: str | os.PathLike = "solutions", exercises: str | os.PathLike = "exercises"
) -> list[str]:
    """Why ``exercises/`` differs from what ``solutions/`` generates (empty when up to date)."""
    rendered = render_exercises(solutions, exercises)
    problems = []
    for path, text in rendered.items():
        if not path.exists():
            problems.append(f"{path} is missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path} is stale (its solution changed)")
    for path in sorted(Path(exercises).glob("*.ipynb")):
        if path not in rendered:
            problems.append(f"{path} has no solution in {solutions}")
    return problems


def write_exercises(
    solutions: str | os.PathLike = "solutions", exercises: str | os.PathLike = "exercises"
) -> list[Path]:
    """Regenerate ``exercises/`` from ``solutions/``; return the files written or removed.

    Files already up to date are left untouched; exercise notebooks without a solution are
    removed, since everything in ``exercises/`` is generated.
    """
    rendered = render_exercises(solutions, exercises)
    changed = []
    Path(exercises).mkdir(parents=True, exist_ok=True)
    for path, text in rendered.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for path in sorted(Path(exercises).glob("*.ipynb")):
        if path not in rendered:
            path.unlink()
            changed.append(path)
    return changed
