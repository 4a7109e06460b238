"""The grading engine apart from any one exercise: an exercise is one spec file, hidden cases
are validated, untrusted results are type-checked, reports keep hidden feedback out.

``test_a_new_exercise_is_one_spec_file`` writes a toy exercise into a temporary folder, points
the registry at it, and grades toy notebooks against it end to end through the child process.
"""

from __future__ import annotations

import csv
import json
import os
import re
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pytest

import course_adv.grading as grading
from course_adv.cli import main as cli_main
from course_adv.grading import (
    CaseResult,
    GradedFunction,
    GradeReport,
    GradingError,
    Outcome,
    batch,
    check,
    engine,
    format_json,
    format_text,
    grade_path,
    load_hidden_cases,
    registry,
    write_csv,
)
from course_adv.grading.child import python_source
from course_adv.grading.digits import DigitCase
from course_adv.grading.integrity import resolve
from course_adv.grading.isolation import read_npy, remove_tree
from course_adv.grading.report import display_path
from course_adv.grading.spec import as_bool, as_float, as_ints

TOY_SPEC = '''
"""Toy exercise 99: double(x) returns 2 * x."""

from dataclasses import dataclass

import numpy as np
import torch

from course_adv.grading.spec import Case, Exercise, GradedFunction, as_array, bounded, type_name


@dataclass(frozen=True, kw_only=True)
class ToyCase(Case):
    n: int = bounded(1, 100, integer=True)

    def describe(self):
        return f"{self.n} numbers"

    def inputs(self):
        return {"x": torch.arange(1, self.n + 1, dtype=torch.float64)}

    def save_inputs(self, inputs, stem):
        np.save(f"{stem}.x.npy", inputs["x"].numpy(), allow_pickle=False)

    def load_inputs(self, stem):
        return {"x": torch.from_numpy(np.load(f"{stem}.x.npy", allow_pickle=False))}


def call(fn, case, inputs):
    result = fn(inputs["x"].clone())
    arrays = {"out": as_array(result)} if isinstance(result, torch.Tensor) else {}
    return {"type": type_name(result)}, arrays


def reference(case, inputs):
    return {"ref": 2 * inputs["x"].numpy()}


def score(case, ref, got):
    if got.error is not None:
        return [f"double() {got.error}"]
    out = got.arrays["out"]
    if out is None or out.shape != ref["ref"].shape:
        return ["return a tensor shaped like x"]
    if np.array_equal(out, ref["ref"] / 2):
        return ["you returned x itself; multiply it by 2"]
    return [] if np.array_equal(out, ref["ref"]) else ["double(x) must be 2 * x"]


EXERCISE = Exercise(
    name="99_toy",
    functions=(GradedFunction("double", ToyCase, call, reference, score, arrays=("out",)),),
    cases=(ToyCase(function="double", n=3, points=1), ToyCase(function="double", n=5, points=2)),
)
'''


def _notebook(path: Path, code: str, exercise: str | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(code).strip())]
    if exercise:
        nb.metadata["course_adv"] = {"exercise": exercise}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def toy_exercise(tmp_path, monkeypatch):
    """The toy spec in a folder of its own, registered next to the course's exercises."""
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "ex99_toy.py").write_text(TOY_SPEC)
    monkeypatch.setattr(registry, "SPEC_FOLDERS", [*registry.SPEC_FOLDERS, specs])
    return specs


def test_a_new_exercise_is_one_spec_file(toy_exercise, tmp_path):
    assert {"02_fgsm", "99_toy"} <= set(grading.all_exercises())
    folder = tmp_path / "class"
    folder.mkdir()
    _notebook(folder / "alice.ipynb", "def double(x):\n    return 2 * x", exercise="99_toy")
    _notebook(folder / "bob_99_toy.ipynb", "def double(x):\n    return x.clone()")
    hidden = tmp_path / "hidden.json"
    hidden.write_text(json.dumps([{"function": "double", "n": 7, "points": 4}]))
    reports = grade_path(folder, hidden=load_hidden_cases(hidden), timeout=30)
    by_name = {Path(r.path).stem: r for r in reports}
    alice, bob = by_name["alice"], by_name["bob_99_toy"]
    assert alice.exercise == bob.exercise == "99_toy"
    assert alice.score == alice.max_score == 1 + 2 + 4, format_text(reports)
    assert bob.score == 0 and bob.max_score == 7
    assert [r.name for r in alice.results] == ["case 1: 3 numbers", "case 2: 5 numbers", "hidden case 1"]  # fmt: skip
    assert bob.results[0].feedback == ["you returned x itself; multiply it by 2"]
    assert bob.results[2].feedback == []  # hidden
    table = tmp_path / "grades.csv"
    write_csv(reports, table)
    with open(table, newline="") as f:
        rows = {Path(row["path"]).stem: row for row in csv.DictReader(f)}
    assert rows["alice"]["double"] == "7" and rows["bob_99_toy"]["double"] == "0"
    assert check("double", lambda x: 2 * x).passed
    assert not check("double", lambda x: x + 1).passed


def test_the_engine_names_no_exercise():
    """Everything exercise-specific lives in the spec files: the engine has no such branches."""
    package = Path(grading.__file__).parent
    names = {f for exercise in grading.all_exercises().values() for f in exercise.function_names}
    pattern = re.compile("|".join(rf"\b{re.escape(name)}\b" for name in names))
    for path in package.glob("*.py"):
        code = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        code = re.sub(r'"""(.|\n)*?"""', "", code)  # docstrings may give examples
        assert not pattern.search(code), f"{path.name} names an exercise's function"


def test_a_spec_whose_case_has_the_wrong_type_is_refused():
    functions = grading.all_exercises()["02_fgsm"].functions
    wrong = DigitCase(function="targeted_success_rate", eps=0.1, seed=0, n=1, points=1)
    with pytest.raises(TypeError, match="must be a SuccessCase"):
        grading.Exercise("02_broken", functions, (wrong,))


@pytest.mark.parametrize(
    "item, message",
    [
        ({"function": "pgd", "eps": 0.1, "seed": 0, "n": 1, "points": 1}, "not graded"),
        ({"function": "fgsm_targeted", "eps": 0.1, "seed": 0, "n": 1}, "missing"),
        ({"function": "fgsm_targeted", "eps": 0.1, "seed": 0, "n": 0, "points": 1}, "n must be"),
        ({"function": "fgsm_targeted", "eps": 0.1, "seed": 0.5, "n": 1, "points": 1}, "seed must be"),
        ({"function": "fgsm_targeted", "eps": 0.1, "seed": 0, "n": 1, "points": 1, "model": "vit"}, "model"),
        ({"function": "fgsm_targeted", "eps": 0.1, "seed": 0, "n": 1, "points": 1, "x": 1}, "unknown"),
        ({"function": "fgsm_targeted", "eps": 0.1, "seed": 0, "n": 1, "points": 1, "batch_size": 8}, "unknown"),
        ({"function": "fgsm", "eps": 0.1, "seed": 0, "n": 1, "points": 1}, "not graded"),
        ({"eps": 0.1}, "function"),
    ],
)  # fmt: skip
def test_hidden_cases_are_validated(tmp_path, item, message):
    path = tmp_path / "hidden.json"
    path.write_text(json.dumps([item]))
    with pytest.raises(GradingError, match=message):
        load_hidden_cases(path)


def test_hidden_cases_get_their_functions_case_type(tmp_path):
    path = tmp_path / "hidden.json"
    items = [
        {"function": "fgsm_targeted", "eps": 0.07, "seed": 11, "n": 6, "points": 2, "model": "cnn"},
        {"function": "targeted_success_rate", "eps": 0.2, "seed": 1, "n": 5, "points": 1,
         "batch_size": 3},
    ]  # fmt: skip
    path.write_text(json.dumps({"cases": items}))
    step_case, loop_case = load_hidden_cases(path)
    assert step_case.hidden and step_case.model == "cnn" and step_case.eps == 0.07
    assert loop_case.batch_size == 3 and loop_case.dtype == "float32"
    assert type(loop_case)(**loop_case.settings()) == loop_case


def test_only_plain_float_arrays_are_read_back(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.ones((2, 3), np.float32))
    assert read_npy(good).dtype == np.float32
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert read_npy(pickled) is None
    ints = tmp_path / "ints.npy"
    np.save(ints, np.arange(3))
    assert read_npy(ints) is None
    link = tmp_path / "link.npy"
    os.symlink(good, link)
    assert read_npy(link) is None
    huge = tmp_path / "huge.npy"  # a header that promises far more data than the file holds
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 10**3)}
        )
    assert read_npy(huge) is None
    assert read_npy(tmp_path / "absent.npy") is None


def test_text_report_puts_totals_last_and_hides_hidden_feedback():
    visible = CaseResult("fgsm_targeted", "case 1: x", False, False, 0.0, 2.0, ["fix this"])
    hidden = CaseResult("fgsm_targeted", "hidden case 1", True, False, 0.0, 1.0, ["secret"])
    reports = [
        GradeReport("a.ipynb", "02_fgsm", [visible, hidden], notes=["cell 3 raised X"]),
        GradeReport("b.ipynb", None, error="cannot tell which exercise this is"),
    ]
    text = format_text(reports)
    assert "fix this" in text and "cell 3 raised X" in text and "not graded" in text
    assert text.splitlines()[-1] == "Total: 0/3"
    data = json.loads(format_json(reports))
    assert data["max"] == 3 and "secret" not in json.dumps(data)


def test_untrusted_facts_are_type_checked():
    graded = GradedFunction(
        "f", grading.Case, call=None, reference=None, score=None,
        facts={"value": as_float, "flag": as_bool, "sizes": as_ints}, arrays=("out",),
    )  # fmt: skip
    facts = {"error": 3, "type": ["torch.Tensor"], "value": 10**400, "flag": "yes", "sizes": [1, "2"]}  # fmt: skip
    nothing = {"value": None, "flag": None, "sizes": None}
    assert graded.outcome(facts, {}) == Outcome(facts=nothing, arrays={"out": None})
    assert graded.outcome({"value": True}, {}).facts["value"] is None  # a bool is no number
    assert graded.outcome({"value": 1}, {}).facts["value"] == 1.0
    assert graded.outcome({"sizes": [3, 4]}, {}).facts["sizes"] == [3, 4]
    assert graded.outcome({"error": "Boom: \x1b[2J"}, {}).error == "Boom:  [2J"
    assert graded.outcome(["not", "a", "dict"], {}).error.startswith("gave no result")
    assert graded.outcome({}, {"out": np.ones(2), "extra": np.ones(1)}).arrays.keys() == {"out"}


def test_every_course_answer_can_be_instrumented():
    for exercise in grading.all_exercises().values():
        for graded in exercise.functions:
            for name in graded.course_answers:
                assert callable(resolve(name)), name


def test_a_folder_is_graded_in_the_sandbox_or_with_no_sandbox(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(batch, "missing_reason", lambda: "bwrap is not installed")
    monkeypatch.setattr(engine, "missing_reason", lambda: "bwrap is not installed")
    _notebook(
        tmp_path / "a_02_fgsm.ipynb", "def fgsm_targeted(model, x, target, eps):\n    return x"
    )
    with pytest.raises(GradingError, match="apt install bubblewrap.*--no-sandbox"):
        grade_path(tmp_path, hidden=[])
    assert cli_main(["grade", str(tmp_path)]) == 2
    assert "--no-sandbox" in capsys.readouterr().err
    (report,) = grade_path(tmp_path, hidden=[], sandbox=False)
    assert not report.sandboxed and report.score == 0
    assert report.notes[0].startswith("not sandboxed: bwrap is not installed")
    assert "not sandboxed" in format_text([report])
    assert json.loads(format_json([report]))["submissions"][0]["sandboxed"] is False


def test_clean_up_survives_deep_and_locked_folders(tmp_path):
    folder = tmp_path / "job"
    deep = folder
    folder.mkdir()
    for _ in range(1500):  # one level at a time: os.makedirs itself recurses
        deep = deep / "d"
        deep.mkdir()
    (deep / "f").write_text("x")
    os.chmod(deep, 0)
    os.symlink("/", folder / "root-link")  # followed, it would delete far too much
    remove_tree(folder)
    assert list(tmp_path.iterdir()) == []


def test_paths_are_printable_in_every_format():
    name = os.fsdecode(b"/class/caf\xe9\n  score: 10\x1b[2K.ipynb")
    assert display_path(name) == "/class/caf\\xe9\\n  score: 10\\x1b[2K.ipynb"


def test_ipython_magics_and_shell_escapes_are_dropped():
    cell = "%matplotlib inline\nx = 1\nif x:\n    !pip install something"
    assert python_source(cell) == "pass\nx = 1\nif x:\n    pass"
