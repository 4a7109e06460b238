"""exercises/ is generated from solutions/: fresh, free of solution text, deterministic."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from course_adv.cli import main
from course_adv.exercises import (
    BEGIN,
    END,
    STUB,
    make_exercise,
    render_exercises,
    stale_exercises,
    strip_solutions,
    write_exercises,
)

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
SOLUTION_FILES = sorted(SOLUTIONS.glob("*.ipynb"))


def test_every_solution_has_its_exercise_and_none_is_stale():
    assert SOLUTION_FILES, "solutions/ holds no notebooks"
    assert stale_exercises(SOLUTIONS, EXERCISES) == []
    assert main(["make-exercises", "--check", "--solutions", str(SOLUTIONS),
                 "--exercises", str(EXERCISES)]) == 0  # fmt: skip


def test_strip_keeps_indentation_and_the_code_around_a_region():
    source = "\n".join(
        [
            "def f(x):",
            '    """Doc."""',
            "    y = 1",
            f"    {BEGIN}",
            "    secret = x * 42",
            "    return secret",
            f"    {END}",
            "",
            "after = True",
        ]
    )
    assert strip_solutions(source) == "\n".join(
        ["def f(x):", '    """Doc."""', "    y = 1", f"    {STUB}", "", "after = True"]
    )
    assert strip_solutions(f"{BEGIN}\nx = 1\n{END}") == STUB  # a cell that is all solution
    assert strip_solutions("no markers\n") == "no markers\n"


@pytest.mark.parametrize(
    "source, message",
    [
        (f"{BEGIN}\nx = 1\n", "never closed"),
        (f"x = 1\n{END}\n", "without"),
        (f"{BEGIN}\n{BEGIN}\n{END}\n", "inside another"),
    ],
)
def test_unbalanced_markers_are_errors(source, message):
    with pytest.raises(ValueError, match=message):
        strip_solutions(source)


def _regions(source: str) -> list[str]:
    """The stripped lines inside the solution regions of a cell."""
    lines, inside = [], False
    for line in source.splitlines():
        if line.strip() == BEGIN:
            inside = True
        elif line.strip() == END:
            inside = False
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


@pytest.mark.parametrize("path", SOLUTION_FILES, ids=[p.name for p in SOLUTION_FILES])
def test_exercises_contain_no_solution_text(path):
    solution = nbformat.read(path, as_version=4)
    exercise = nbformat.read(EXERCISES / path.name, as_version=4)
    assert len(exercise.cells) == len(solution.cells)
    solution_lines = [line for cell in solution.cells for line in _regions(cell.source)]
    assert solution_lines, f"{path.name} marks no solution region"
    outside = {
        line.strip()
        for cell in solution.cells
        for line in strip_solutions(cell.source).splitlines()
    }
    exercise_lines = {line.strip() for cell in exercise.cells for line in cell.source.splitlines()}
    leaked = [line for line in solution_lines if line in exercise_lines and line not in outside]
    assert leaked == [], f"solution lines leaked into exercises/{path.name}: {leaked}"
    text = (EXERCISES / path.name).read_text()
    assert BEGIN not in text and END not in text
    assert text.count("raise NotImplementedError(") >= len(
        [c for c in solution.cells if BEGIN in c.source]
    )


@pytest.mark.parametrize("path", SOLUTION_FILES, ids=[p.name for p in SOLUTION_FILES])
def test_solution_and_exercise_are_stored_clean(path):
    for notebook_path in (path, EXERCISES / path.name):
        nb = nbformat.read(notebook_path, as_version=4)
        nbformat.validate(nb)
        assert set(nb.metadata) <= {"kernelspec", "language_info", "course_adv"}
        assert nb.metadata["course_adv"]["exercise"] == path.stem
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, notebook_path.name


def test_generation_is_deterministic(tmp_path):
    first = render_exercises(SOLUTIONS, tmp_path)
    second = render_exercises(SOLUTIONS, tmp_path)
    assert first == second
    for path, text in first.items():
        assert (EXERCISES / path.name).read_text(encoding="utf-8") == text


def test_a_stale_exercise_fails_the_check_until_regenerated(tmp_path, capsys):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    shutil.copytree(SOLUTIONS, solutions)
    args = ["make-exercises", "--solutions", str(solutions), "--exercises", str(exercises)]
    assert main([*args, "--check"]) == 1  # nothing generated yet
    assert "missing" in capsys.readouterr().err
    assert main(args) == 0
    assert main([*args, "--check"]) == 0

    path = solutions / SOLUTION_FILES[0].name
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("A new hint."))
    nbformat.write(nb, path)
    assert main([*args, "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert [p.name for p in write_exercises(solutions, exercises)] == [path.name]
    assert main([*args, "--check"]) == 0

    (exercises / "99_orphan.ipynb").write_text("{}")
    assert main([*args, "--check"]) == 1
    assert "has no solution" in capsys.readouterr().err
    assert main(args) == 0 and not (exercises / "99_orphan.ipynb").exists()


def test_bad_markers_or_paths_are_reported_not_raised(tmp_path, capsys):
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"{BEGIN}\nx = 1")])
    nbformat.write(nb, solutions / "01_bad.ipynb")
    args = ["make-exercises", "--solutions", str(solutions), "--exercises", str(tmp_path / "ex")]
    assert main(args) == 2
    assert "never closed" in capsys.readouterr().err
    assert main(["make-exercises", "--solutions", str(tmp_path / "nowhere")]) == 2


def test_make_exercise_clears_outputs():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"{BEGIN}\nx = 1\n{END}")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="1")]
    nb.cells[0].execution_count = 3
    exercise = make_exercise(nb)
    assert exercise.cells[0].outputs == [] and exercise.cells[0].execution_count is None
    assert exercise.cells[0].source == STUB
    assert nb.cells[0].execution_count == 3, "the solution notebook is left as it was"
