"""The autograder: right answers get full marks, wrong ones lose points with useful feedback,
and hostile submissions neither crash the grader nor earn points they did not compute.

Submissions are built by editing ``solutions/02_fgsm.ipynb`` with nbformat. Each graded
notebook costs one child process (a fresh interpreter importing torch, a few seconds), so most
of them are graded together, once per module, through the command line (``BATCH``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from course_adv import attacks
from course_adv.cli import main
from course_adv.grading import (
    HIDDEN_ENV,
    all_exercises,
    check,
    format_text,
    grade_notebook,
    grade_path,
)
from course_adv.grading.sandbox import missing_reason

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "02_fgsm.ipynb"
EXERCISE = ROOT / "exercises" / "02_fgsm.ipynb"
MAX = all_exercises()["02_fgsm"].max_points
HIDDEN = [
    {"function": "fgsm_targeted", "eps": 0.07, "seed": 11, "n": 6, "points": 2, "model": "cnn"},
    {"function": "targeted_success_rate", "eps": 0.15, "seed": 12, "n": 50, "points": 1,
     "batch_size": 16},
]  # fmt: skip
HIDDEN_MAX = 3


# --------------------------------------------------------------------------- building submissions


def _solution() -> nbformat.NotebookNode:
    return nbformat.read(SOLUTION, as_version=4)


def _find(nb, start: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.source.lstrip().startswith(start))


def _source(start: str) -> str:
    nb = _solution()
    return nb.cells[_find(nb, start)].source


def submission(
    folder: Path,
    name: str,
    step: str | None = None,
    rate: str | None = None,
    extra: tuple[str, ...] = (),
    lean: bool = True,
) -> Path:
    """The solution notebook with its functions replaced (``step``: ``fgsm_targeted``,
    ``rate``: ``targeted_success_rate``) and ``extra`` code cells appended.

    ``lean`` keeps only the imports and the two functions (no training, no check cells), so
    that grading it is quick; the full notebook is graded in the solution test.
    """
    nb = _solution()
    if step is not None:
        nb.cells[_find(nb, "def fgsm_targeted(")].source = textwrap.dedent(step).strip()
    if rate is not None:
        nb.cells[_find(nb, "def targeted_success_rate(")].source = textwrap.dedent(rate).strip()
    if lean:
        keep = {
            _find(nb, "import torch"),
            _find(nb, "def fgsm_targeted("),
            _find(nb, "def targeted_success_rate("),
        }
        nb.cells = [c for i, c in enumerate(nb.cells) if i in keep]
    nb.cells += [nbformat.v4.new_code_cell(textwrap.dedent(code).strip()) for code in extra]
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def _step(body: str) -> str:
    head = "def fgsm_targeted(model, x, target, eps):\n"
    return head + textwrap.indent(textwrap.dedent(body).strip(), "    ")


def _rate(body: str) -> str:
    head = (
        "def targeted_success_rate(model, x, target, eps, attack=fgsm_targeted, batch_size=100):\n"
    )
    return head + textwrap.indent(textwrap.dedent(body).strip(), "    ")


GRAD = """
x_adv = x.clone().detach().requires_grad_(True)
(grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), target), x_adv)
"""
WRONG_SIGN = _step(GRAD + "return (x + eps * grad.sign()).clamp(0, 1).detach()")  # untargeted
NO_CLIP = _step(GRAD + "return (x - eps * grad.sign()).detach()")
WRONG_EPS = _step(GRAD + "return (x - 0.1 * grad.sign()).clamp(0, 1).detach()")
WRONG_DTYPE = _step(GRAD + "return (x - eps * grad.sign()).clamp(0, 1).detach().float()")
IN_PLACE = _step("""
x.requires_grad_(True)
(grad,) = torch.autograd.grad(F.cross_entropy(model(x), target), x)
x.requires_grad_(False)
return x.sub_(eps * grad.sign()).clamp_(0, 1)
""")
BATCH_MEAN = _rate("""
rates = []
for start in range(0, len(x), batch_size):
    xb, tb = x[start : start + batch_size], target[start : start + batch_size]
    with torch.no_grad():
        rates.append((model(attack(model, xb, tb, eps)).argmax(1) == tb).float().mean().item())
return sum(rates) / len(rates)
""")
PERCENT = _rate("""
hits = 0
for start in range(0, len(x), batch_size):
    xb, tb = x[start : start + batch_size], target[start : start + batch_size]
    with torch.no_grad():
        hits += (model(attack(model, xb, tb, eps)).argmax(1) == tb).sum().item()
return 100 * hits / len(x)
""")
CLEAN = _rate("""
with torch.no_grad():
    return (model(x).argmax(1) == target).float().mean().item()
""")
ONE_BATCH = _rate("""
with torch.no_grad():
    return (model(attack(model, x, target, eps)).argmax(1) == target).float().mean().item()
""")
RETURNS_X = _step("return x.clone()")
LOOPS = _step("while True:\n    pass")
MARKER = "pickle-was-loaded"  # a file the pickle below creates if anybody unpickles it

# name: (fgsm_targeted source, targeted_success_rate source, extra cells, points expected,
# feedback expected)
BATCH = {
    "wrong_sign": (WRONG_SIGN, BATCH_MEAN, (), 2, ["steps *up* the loss", "divide by len(x)"]),
    "no_clip": (NO_CLIP, PERCENT, (), 0, ["outside [0, 1]", "would be right", "percentage"]),
    "wrong_eps": (WRONG_EPS, CLEAN, (), 2, ["steps have size 0.1", "never called"]),
    "in_place": (IN_PLACE, ONE_BATCH, (), 1, ["changed its input x in place", "batches of up to"]),
    "wrong_dtype": (
        WRONG_DTYPE,
        None,
        (
            "import sys\nprint('noise on stderr', file=sys.stderr)",
            "1 / 0",
            "def broken(:\n    pass",
            "exit()",
            "hog = bytearray(64 * 2**30)",
            "raise ValueError('\\x1b[2J\\x1b[31mred alert')",
        ),
        MAX - 1,
        ["dtype float32 but x has dtype float64"],
    ),
    "exits": (None, None, ("import os\nos._exit(0)",), 0, []),
    "endless_step": (LOOPS, None, (), 4, ["time limit", "skipped"]),
    "sys_modules": (
        RETURNS_X,
        None,
        (
            """
            import sys, types
            fake = types.ModuleType("course_adv.grading")
            fake.check = lambda *args, **kwargs: "all passed"
            sys.modules["course_adv.grading"] = fake
            sys.modules["course_adv.attacks"].fgsm = lambda model, x, t, eps, **kw: x
            sys.modules["numpy"] = types.ModuleType("numpy")
            sys.modules["json"] = types.ModuleType("json")
            sys.modules.pop("course_adv._grading_child", None)
            """,
        ),
        4,
        [],
    ),
    "always_equal": (
        _step("return x.clone().as_subclass(AlwaysEqual)"),
        _rate("return AnyNumber(0.5)"),
        (
            f"""
            import numpy as np
            import torch

            class AlwaysEqual(torch.Tensor):
                def __eq__(self, other):
                    return True

            class AnyNumber(float):
                def __eq__(self, other):
                    return True

            torch.Tensor.__eq__ = lambda self, other: True
            torch.equal = torch.allclose = lambda *args, **kwargs: True
            np.allclose = np.array_equal = np.isclose = lambda *args, **kwargs: True

            class Payload:
                def __reduce__(self):
                    return (open, ("MARKER_DIR/{MARKER}", "w"))

            real_save = np.save
            np.save = lambda file, arr, allow_pickle=False: real_save(
                file, np.array([Payload()], dtype=object), allow_pickle=True
            )
            """,
        ),
        0,
        [],
    ),
}


def _case_points(submission_json: dict, function: str) -> float:
    return sum(c["points"] for c in submission_json["cases"] if c["function"] == function)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Grade every BATCH submission in one folder through the CLI, with hidden cases and CSV."""
    folder = tmp_path_factory.mktemp("class")
    marker_dir = tmp_path_factory.mktemp("marker")
    for name, (step, rate, extra, _, _) in BATCH.items():
        extra = tuple(e.replace("MARKER_DIR", str(marker_dir)) for e in extra)
        submission(folder, f"{name}_02_fgsm", step, rate, extra)
    hidden = folder.parent / "hidden.json"
    hidden.write_text(json.dumps(HIDDEN))
    table = folder.parent / "grades.csv"
    argv = ["grade", str(folder), "--json", "--csv", str(table), "--hidden", str(hidden)]
    if missing_reason() is not None:  # the sandbox's own tests run in test_grading_sandbox
        argv.append("--no-sandbox")
    started = time.perf_counter()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main([*argv, "--timeout", "20"])
    print(f"graded {len(BATCH)} notebooks in {time.perf_counter() - started:.1f} s")
    report = json.loads(buffer.getvalue())
    by_name = {Path(s["path"]).stem.removesuffix("_02_fgsm"): s for s in report["submissions"]}
    return {"code": code, "report": report, "by_name": by_name, "csv": table, "marker": marker_dir}


# --------------------------------------------------------------------------- full notebooks


def test_solution_scores_full_marks_including_hidden_cases(tmp_path, monkeypatch):
    hidden = tmp_path / "hidden.json"
    hidden.write_text(json.dumps({"cases": HIDDEN}))
    monkeypatch.setenv(HIDDEN_ENV, str(hidden))
    report = grade_notebook(SOLUTION)
    assert report.exercise == "02_fgsm"
    assert report.error is None
    assert [n for n in report.notes if not n.startswith("not sandboxed")] == []
    assert report.max_score == MAX + HIDDEN_MAX
    assert report.score == report.max_score, format_text([report])
    hidden_results = [r for r in report.results if r.hidden]
    assert [r.name for r in hidden_results] == ["hidden case 1", "hidden case 1"]


def test_untouched_exercise_scores_zero_with_feedback():
    report = grade_notebook(EXERCISE, hidden=[])
    assert report.exercise == "02_fgsm"
    assert report.max_score == MAX
    assert report.score == 0
    for result in report.results:
        assert not result.passed
        assert "not written yet" in result.feedback[0]
    text = format_text([report])
    assert text.splitlines()[-1] == f"Total: 0/{MAX:g}"


# --------------------------------------------------------------------------- wrong and hostile


def test_batch_is_graded_with_exit_code_zero(batch):
    assert batch["code"] == 0
    assert set(batch["by_name"]) == set(BATCH)


@pytest.mark.parametrize("name", list(BATCH))
def test_each_submission_scores_what_it_computed(batch, name):
    got = batch["by_name"][name]
    _, _, _, points, messages = BATCH[name]
    assert got["exercise"] == "02_fgsm"
    assert got["max_score"] == MAX + HIDDEN_MAX
    hidden_points = sum(c["points"] for c in got["cases"] if c["hidden"])
    assert got["score"] - hidden_points == points, json.dumps(got, indent=1)
    assert got["score"] < MAX + HIDDEN_MAX, "every submission here has a mistake"
    feedback = " ".join(f for c in got["cases"] for f in c["feedback"]) + " ".join(got["notes"])
    for message in messages:
        assert message in feedback, f"{message!r} not in the feedback of {name}"
    for case in got["cases"]:
        assert case["passed"] == (case["points"] == case["max_points"])
        if case["hidden"]:
            assert case["feedback"] == [] and case["name"].startswith("hidden case")


def test_a_wrong_step_loses_every_step_case_but_keeps_the_loop(batch):
    for name in ("wrong_sign", "in_place", "sys_modules", "endless_step"):
        got = batch["by_name"][name]
        assert _case_points(got, "fgsm_targeted") == 0, name
    for name in ("sys_modules", "endless_step"):  # their loops are right
        assert _case_points(batch["by_name"][name], "targeted_success_rate") == 4 + 1


def test_wrong_dtype_loses_only_the_float64_case_despite_noisy_cells(batch):
    got = batch["by_name"]["wrong_dtype"]
    failed = [c["name"] for c in got["cases"] if not c["passed"]]
    assert len(failed) == 1 and "float64" in failed[0]
    notes = " ".join(got["notes"])
    assert "ZeroDivisionError" in notes and "SyntaxError" in notes and "SystemExit" in notes
    assert "MemoryError" in notes, "the child's memory is capped"
    assert "red alert" in notes and "\x1b" not in notes, "terminal escapes are removed"


def test_a_notebook_that_exits_early_scores_zero_with_a_note(batch):
    got = batch["by_name"]["exits"]
    assert got["score"] == 0
    assert any("ended the grading process early" in note for note in got["notes"])


def test_cheating_objects_and_monkeypatches_earn_nothing(batch):
    got = batch["by_name"]["always_equal"]
    assert got["score"] == 0
    assert not (batch["marker"] / MARKER).exists(), "the grader unpickled a submission's file"


def test_csv_has_one_row_per_notebook(batch):
    with open(batch["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(BATCH)
    assert list(rows[0]) == ["path", "exercise", "fgsm_targeted", "targeted_success_rate", "total", "max", "flags", "sandboxed", "error"]  # fmt: skip
    by_name = {Path(r["path"]).stem.removesuffix("_02_fgsm"): r for r in rows}
    for name, got in batch["by_name"].items():
        row = by_name[name]
        assert float(row["total"]) == got["score"]
        assert float(row["max"]) == MAX + HIDDEN_MAX
        assert float(row["fgsm_targeted"]) + float(row["targeted_success_rate"]) == got["score"]


def test_json_report_shape(batch):
    report = batch["report"]
    assert set(report) == {"submissions", "total", "max"}
    assert report["total"] == sum(s["score"] for s in report["submissions"])
    assert report["max"] == len(BATCH) * (MAX + HIDDEN_MAX)
    case_keys = {"function", "name", "hidden", "passed", "points", "max_points", "feedback"}
    for item in report["submissions"]:
        assert set(item) == {
            "path", "exercise", "score", "max_score", "error", "flags", "sandboxed", "notes", "cases"
        }  # fmt: skip
        assert all(set(case) == case_keys for case in item["cases"])


def _processes_with(marker: str) -> list[str]:
    """Live processes (not zombies) whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z" and str(os.getpid()) != entry.name:
            found.append(cmdline)
    return found


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_endless_loop_ignoring_alarms_is_killed_with_its_children(tmp_path):
    marker = f"600.{os.getpid()}{int(time.time()) % 10000}"  # sleep's argument names the child
    path = submission(
        tmp_path,
        "hangs_02_fgsm",
        extra=(
            f"""
            import signal, subprocess
            child = subprocess.Popen(["sleep", "{marker}"])
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            while True:
                pass
            """,
        ),
    )
    started = time.perf_counter()
    report = grade_notebook(path, timeout=8, hidden=[])
    assert time.perf_counter() - started < 60
    assert report.score == 0
    assert any("time limit" in note and "cell 4" in note for note in report.notes), report.notes
    time.sleep(0.5)
    assert _processes_with(marker) == [], "the submission's child survived"


# --------------------------------------------------------------------------- check() in a kernel


def _solution_functions() -> dict:
    namespace: dict = {}
    exec(_source("import torch").split("\n\n")[0], namespace)  # the imports, not the data
    exec(_source("def fgsm_targeted("), namespace)
    exec(_source("def targeted_success_rate("), namespace)
    return namespace


def test_check_passes_the_solution_and_explains_a_mistake():
    ns = _solution_functions()
    good = check("fgsm_targeted", ns["fgsm_targeted"])
    assert good.passed and good.score == good.max_score == 6
    assert check("targeted_success_rate", ns["targeted_success_rate"]).passed
    exec(WRONG_SIGN, ns)
    bad = check("fgsm_targeted", ns["fgsm_targeted"])
    assert not bad.passed and bad.score == 0
    assert "steps *up* the loss of the target" in repr(bad)


def test_check_reports_exceptions_and_the_course_reference():
    def broken(model, x, target, eps):
        raise NotImplementedError("later")

    feedback = check("fgsm_targeted", broken)
    assert feedback.score == 0 and "not written yet" in repr(feedback)
    assert "the course's own" in repr(check("fgsm_targeted", attacks.fgsm))
    with pytest.raises(ValueError, match="not graded"):
        check("pgd", broken)


def _targeted(model, x, target, eps, *, sign=-1, labels=None, backward=False, train=False):
    """A targeted FGSM step with one thing changed: the mistakes the diagnoses recognise."""
    x_adv = x.clone().detach().requires_grad_(True)
    loss = F.cross_entropy(model(x_adv), target if labels is None else labels(model, x))
    if backward:
        loss.backward()
        grad = x_adv.grad
    else:
        (grad,) = torch.autograd.grad(loss, x_adv)
    if train:
        model.train()
    return (x + sign * eps * grad.sign()).clamp(0, 1).detach()


def _predicted(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def _loop(model, x, target, eps, attack, batch_size, *, score="hit", mutate=False):
    """A targeted-success loop that counts the wrong thing (``score``) or overwrites target."""
    hits = 0
    for start in range(0, len(x), batch_size):
        xb, tb = x[start : start + batch_size], target[start : start + batch_size]
        x_adv = attack(model, xb, tb, eps)
        with torch.no_grad():
            predicted = model(x_adv).argmax(1)
            if score == "changed":
                hits += (predicted != model(xb).argmax(1)).sum().item()
            elif score == "miss":
                hits += (predicted != tb).sum().item()
            else:
                hits += (predicted == tb).sum().item()
    if mutate:
        target.zero_()
    return hits / len(x)


@pytest.mark.parametrize(
    ("function", "wrong", "says"),
    [
        ("fgsm_targeted", lambda *a: _targeted(*a, labels=_predicted), "model's own prediction"),
        ("fgsm_targeted", lambda *a: _targeted(*a, labels=_predicted, sign=1), "y=None"),
        ("fgsm_targeted", lambda *a: _targeted(*a, backward=True), "gradients in the model's"),
        ("fgsm_targeted", lambda *a: _targeted(*a, train=True), "left the model in train mode"),
        ("targeted_success_rate", lambda *a: _loop(*a, score="changed"), "untargeted success"),
        ("targeted_success_rate", lambda *a: _loop(*a, score="miss"), "did *not* reach"),
        ("targeted_success_rate", lambda *a: _loop(*a, mutate=True), "changed its input target"),
    ],
    ids=["predicted-label", "untargeted-on-prediction", "backward", "train-mode", "changed", "miss", "mutates-target"],
)  # fmt: skip
def test_check_names_each_typical_mistake(function, wrong, says):
    """Mistakes the batch above does not make: each loses points with the right diagnosis."""
    result = check(function, wrong)
    assert not result.passed and result.score < result.max_score
    assert says in repr(result), repr(result)


def test_the_reference_step_moves_toward_the_target_as_kurakin_et_al_describe():
    """The reference (attacks.fgsm(..., targeted=True)) raises the target's probability on
    every digit of the linear case, and the untargeted sign, the common mistake, lowers it."""
    exercise = all_exercises()["02_fgsm"]
    case = next(c for c in exercise.cases if c.function == "fgsm_targeted" and c.n > 1 and c.model == "softmax")  # fmt: skip
    inputs = case.inputs()
    model, target = inputs["model"], inputs["target"]
    ref = exercise.function("fgsm_targeted").reference(case, inputs)

    def p_target(images):
        with torch.no_grad():
            probs = model(torch.from_numpy(images)).softmax(1)
        return probs[torch.arange(len(target)), target]

    clean = p_target(ref["x"])
    assert (p_target(ref["ref"]) > clean).all()
    assert (p_target(ref["ascent"]) < clean).all()


def test_check_leaves_the_callers_random_state_and_threads_alone():
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check("fgsm_targeted", _solution_functions()["fgsm_targeted"])
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


# --------------------------------------------------------------------------- the grader's own errors


def test_exit_code_two_when_grading_cannot_run(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "missing.ipynb")]) == 2
    assert main(["grade", str(tmp_path)]) == 2  # an empty folder
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["grade", str(tmp_path / "notes.txt")]) == 2
    anonymous = tmp_path / "homework.ipynb"
    nb = _solution()
    nb.metadata.pop("course_adv")
    nbformat.write(nb, anonymous)
    assert main(["grade", str(anonymous)]) == 2  # which exercise is it?
    bad_hidden = tmp_path / "hidden.json"
    bad_hidden.write_text(
        json.dumps([{"function": "fgsm_targeted", "eps": 2, "seed": 0, "n": 1, "points": 1}])
    )
    assert main(["grade", str(SOLUTION), "--hidden", str(bad_hidden)]) == 2
    assert main(["grade", str(SOLUTION), "--exercise", "99_nothing"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "which exercise" in err and "eps must be" in err


def test_unreadable_notebook_in_a_folder_scores_zero(tmp_path):
    (tmp_path / "broken_02_fgsm.ipynb").write_text("{ not json")
    reports = grade_path(tmp_path, hidden=[])
    assert len(reports) == 1 and reports[0].score == 0 and reports[0].max_score == MAX
    assert "not a readable notebook" in reports[0].error
