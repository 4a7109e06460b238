"""Every exercise, end to end as an instructor grades a class: each solution notebook scores
full marks and each untouched student copy scores zero with a "not written yet" message.
New exercises are picked up by themselves (one spec file plus one solution notebook)."""

from __future__ import annotations

import shutil
from pathlib import Path

from course_adv.grading import all_exercises, format_text, grade_path

ROOT = Path(__file__).resolve().parents[1]


def test_every_exercise_has_a_solution_and_a_student_copy():
    names = set(all_exercises())
    assert {p.stem for p in (ROOT / "solutions").glob("*.ipynb")} == names
    assert {p.stem for p in (ROOT / "exercises").glob("*.ipynb")} == names


def test_solutions_score_full_marks_and_untouched_exercises_zero(tmp_path):
    exercises = all_exercises()
    for name in exercises:
        shutil.copy(ROOT / "solutions" / f"{name}.ipynb", tmp_path / f"solution_{name}.ipynb")
        shutil.copy(ROOT / "exercises" / f"{name}.ipynb", tmp_path / f"untouched_{name}.ipynb")
    # in the sandbox where bubblewrap is installed (CI installs it; the sandbox has tests of
    # its own), else without: this test is about the exercises, not the isolation
    sandbox = shutil.which("bwrap") is not None
    reports = grade_path(tmp_path, timeout=240, hidden=[], jobs=2, sandbox=sandbox)
    assert len(reports) == 2 * len(exercises)
    for report in reports:
        text = format_text([report])
        assert report.exercise in exercises and report.error is None, text
        assert report.max_score == exercises[report.exercise].max_points > 0, text
        if Path(report.path).name.startswith("solution_"):
            assert report.score == report.max_score, text
        else:
            assert report.score == 0, text
            assert all("not written yet" in r.feedback[0] for r in report.results), text


def test_check_leaves_the_callers_random_streams_alone():
    """check() runs in the student's kernel: a notebook that seeded once must print the same
    numbers whether or not it ran a check() cell in between (the cases build models and
    references, and the student's function may draw random starts)."""
    import random

    import numpy as np
    import torch

    from course_adv.grading import check

    def draws_and_fails(*args, **kwargs):
        torch.rand(3), np.random.rand(3), random.random()
        raise NotImplementedError("not written yet")

    for exercise in all_exercises().values():
        for graded in exercise.functions:
            torch.manual_seed(123), np.random.seed(123), random.seed(123)
            expected = torch.rand(2), np.random.rand(2), random.random()
            torch.manual_seed(123), np.random.seed(123), random.seed(123)
            check(graded.name, draws_and_fails)
            got = torch.rand(2), np.random.rand(2), random.random()
            assert torch.equal(got[0], expected[0]), f"{graded.name}: torch's stream moved"
            assert np.array_equal(got[1], expected[1]), f"{graded.name}: NumPy's stream moved"
            assert got[2] == expected[2], f"{graded.name}: Python's stream moved"
