"""The autograder: ``course-adv grade`` for instructors, ``check()`` for students.

**Cases.** Each exercise (``EXERCISES``) lists the functions a student writes and the public
cases they are graded on: a model (``"cnn"``, a seeded untrained ``SmallCNN``, or
``"softmax"``, a nearest-class-mean linear classifier built from the training digits), ``n``
test digits picked by ``seed``, an ``eps``, a dtype and the points the case is worth. The
reference answers come from ``course_adv.attacks.fgsm`` in the grader's own process. Loops
that take an ``attack`` argument (``accuracy_under_attack``) are given the course's FGSM, so
a mistake in the student's ``fgsm`` costs points once, where it is.
Instructors add hidden cases from a JSON file outside the repository (``--hidden FILE`` or the
environment variable ``COURSE_ADV_HIDDEN_CASES``): a list of objects such as::

    [{"function": "fgsm", "eps": 0.07, "seed": 11, "n": 16, "points": 2, "model": "cnn"},
     {"function": "accuracy_under_attack", "eps": 0.15, "seed": 5, "n": 200, "points": 2,
      "batch_size": 64}]

(``model`` ``"softmax"`` and ``dtype`` ``"float32"`` by default; ``batch_size`` 100). Hidden
cases report only pass or fail.

**Isolation.** A submission is untrusted code. ``grade_notebook`` writes the case inputs as
``.npy`` files and the models as state dicts into a fresh temporary folder, then runs the
notebook's code cells in a separate interpreter (``python -I``, see ``_grading_child``:
empty working folder, scrubbed environment, its own process group, a wall-clock limit after
which the whole group is killed). Only plain data comes back: ``.npy`` files read with
``allow_pickle=False`` after their header is checked, and small JSON files whose every field
is type-checked. Every score is computed here, against answers computed here, so a submission
that exits early, hangs, raises, prints, mutates its inputs, monkeypatches torch or numpy,
tampers with ``sys.modules`` or returns a tensor subclass whose ``==`` always says yes earns
nothing it did not compute. (This is process isolation, not a sandbox: the child runs as the
grading user and can read and write what that user can. Grade a class inside a container or a
throw-away account.)

**Feedback.** Per case: points, pass or fail, and what to fix (shape, dtype, the property that
failed, a hint). ``check(function, fn)`` runs the same public cases in the student's own
kernel and returns the same feedback, for the ``check()`` cells of the exercise notebooks.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import attacks
from ._grading_child import call_function, describe_error
from .data import SPLIT_SEED, cache_dir, load_data
from .evaluation import predict
from .models import build_model

__all__ = [
    "Case",
    "Exercise",
    "EXERCISES",
    "CaseResult",
    "Report",
    "Feedback",
    "check",
    "grade_notebook",
    "grade_path",
    "load_hidden_cases",
    "format_text",
    "format_json",
    "write_csv",
    "GradingError",
    "HIDDEN_ENV",
]

HIDDEN_ENV = "COURSE_ADV_HIDDEN_CASES"
MODELS = ("softmax", "cnn")
DTYPES = ("float32", "float64")
MAX_RESULT_BYTES = 64 * 2**20  # the largest .npy read back from a submission
MAX_JSON_BYTES = 2**20  # the largest .json read back
MAX_LOG_BYTES = 2000  # how much of the submission's stderr a report quotes
CHILD_FILE_BYTES = 256 * 2**20  # no file the child writes (its logs included) grows past this
CHILD_MEMORY_BYTES = 8 * 2**30  # the child's address space: a memory bomb fails, not the machine
ATOL = 1e-5  # a pixel agrees with the reference within this
MISMATCH_ALLOWED = 0.005  # share of pixels that may differ (float noise in near-zero gradients)


class GradingError(Exception):
    """The grader itself cannot run: a bad path, an unknown exercise, a bad hidden-cases file."""


# --------------------------------------------------------------------------- exercises and cases


@dataclass(frozen=True)
class Case:
    """One graded call: ``function`` on ``n`` test digits chosen by ``seed``, with ``eps``."""

    function: str
    eps: float
    seed: int
    n: int
    points: float
    model: str = "softmax"
    dtype: str = "float32"
    batch_size: int = 100
    hidden: bool = False

    def describe(self) -> str:
        model = {"cnn": "small CNN", "softmax": "linear model"}[self.model]
        digits = "digit" if self.n == 1 else "digits"
        text = f"{model}, {self.dtype}, eps={self.eps:g}, {self.n} {digits}"
        if self.function == "accuracy_under_attack":
            text += f", batch_size={self.batch_size}"
        return text


@dataclass(frozen=True)
class Exercise:
    """An exercise notebook: the functions a student writes and their public cases."""

    name: str
    functions: tuple[str, ...]
    cases: tuple[Case, ...]

    @property
    def max_points(self) -> float:
        return sum(case.points for case in self.cases)


EXERCISES: dict[str, Exercise] = {
    "02_fgsm": Exercise(
        name="02_fgsm",
        functions=("fgsm", "accuracy_under_attack"),
        cases=(
            Case("fgsm", eps=0.1, seed=0, n=8, points=2, model="cnn"),
            Case("fgsm", eps=0.25, seed=1, n=8, points=2, model="softmax"),
            Case("fgsm", eps=0.05, seed=2, n=4, points=1, model="cnn", dtype="float64"),
            Case("fgsm", eps=0.3, seed=3, n=1, points=1, model="softmax"),
            Case("accuracy_under_attack", eps=0.0, seed=4, n=100, points=1, batch_size=32),
            Case("accuracy_under_attack", eps=0.1, seed=5, n=100, points=2, batch_size=32),
            Case("accuracy_under_attack", eps=0.05, seed=6, n=60, points=1, batch_size=128),
        ),
    ),
}


def _exercise_of(function: str) -> Exercise:
    for exercise in EXERCISES.values():
        if function in exercise.functions:
            return exercise
    known = sorted(f for e in EXERCISES.values() for f in e.functions)
    raise ValueError(f"function {function!r} is not graded; choose one of {known}")


def load_hidden_cases(path: str | os.PathLike) -> list[Case]:
    """Read hidden cases from a JSON file: a list of case objects (or ``{"cases": [...]}``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise GradingError(f"cannot read hidden cases from {path}: {err}") from None
    if isinstance(data, dict) and set(data) == {"cases"}:
        data = data["cases"]
    if not isinstance(data, list):
        raise GradingError(f"{path}: expected a JSON list of case objects")
    return [_hidden_case(item, f"{path}, case {i + 1}") for i, item in enumerate(data)]


def _hidden_case(item: Any, where: str) -> Case:
    fields = {"function", "eps", "seed", "n", "points", "model", "dtype", "batch_size"}
    if not isinstance(item, dict):
        raise GradingError(f"{where}: expected an object with keys {sorted(fields)}")
    unknown = set(item) - fields
    missing = {"function", "eps", "seed", "n", "points"} - set(item)
    if unknown or missing:
        raise GradingError(f"{where}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")

    def number(key: str, low: float, high: float, integer: bool = False) -> Any:
        value = item[key]
        kinds = (int,) if integer else (int, float)
        if type(value) not in kinds or not low <= value <= high:
            kind = "an integer" if integer else "a number"
            raise GradingError(f"{where}: {key} must be {kind} in [{low:g}, {high:g}]")
        return value

    try:
        _exercise_of(str(item["function"]))
    except ValueError as err:
        raise GradingError(f"{where}: {err}") from None
    for key, choices in (("model", MODELS), ("dtype", DTYPES)):
        if key in item and item[key] not in choices:
            raise GradingError(f"{where}: {key} must be one of {choices}, got {item[key]!r}")
    return Case(
        function=item["function"],
        eps=float(number("eps", 0, 1)),
        seed=number("seed", 0, 2**31 - 1, integer=True),
        n=number("n", 1, 1000, integer=True),
        points=float(number("points", 0, 1000)),
        model=item.get("model", "softmax"),
        dtype=item.get("dtype", "float32"),
        batch_size=number("batch_size", 1, 10**6, integer=True) if "batch_size" in item else 100,
        hidden=True,
    )


def _hidden_from_env() -> list[Case]:
    path = os.environ.get(HIDDEN_ENV, "").strip()
    return load_hidden_cases(path) if path else []


# --------------------------------------------------------------------------- inputs and references


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The class means of the training digits (10 x 784), and the test digits and labels."""
    data = load_data("mnist5k")
    x = data.x_train.flatten(1)
    means = torch.stack([x[data.y_train == c].mean(0) for c in range(10)])
    return means, data.x_test, data.y_test


@contextmanager
def _one_thread() -> Iterator[None]:
    """Tiny reference computations run fastest on one thread (and do not fight the child)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _case_model(case: Case) -> nn.Module:
    """The case's model, in eval mode, in the case's dtype; the same for the same case."""
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG left alone
        torch.manual_seed(case.seed)
        model = build_model(case.model)
    if case.model == "softmax":
        # nearest class mean as a linear model: logit_c = s (m_c . x - |m_c|^2 / 2), scaled by
        # s = 0.5 so the softmax is confident but not saturated (gradients stay well away from 0)
        means = _digits()[0]
        with torch.no_grad():
            model.linear.weight.copy_(0.5 * means)
            model.linear.bias.copy_(-0.25 * (means**2).sum(1))
    return model.to(getattr(torch, case.dtype)).eval()


def case_inputs(case: Case) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, x, y) for a case: ``n`` test digits chosen by ``seed``, in the case's dtype."""
    _, x_test, y_test = _digits()
    generator = torch.Generator().manual_seed(case.seed)
    pick = torch.randperm(len(y_test), generator=generator)[: case.n]
    return _case_model(case), x_test[pick].to(getattr(torch, case.dtype)), y_test[pick].clone()


def _reference(case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """What a correct answer gives on this case, computed here with ``course_adv.attacks``."""
    with _one_thread():
        if case.function == "fgsm":
            return {
                "x": x.numpy(),
                "ref": attacks.fgsm(model, x, y, case.eps).numpy(),
                "descent": attacks.fgsm(model, x, y, case.eps, targeted=True).numpy(),
            }
        # correct under attack over all points, the exercise's definition (and the course's);
        # evaluation.robust_accuracy also asks the clean point to be right, so it is not used
        correct, clean, ties = 0, 0, 0
        for start in range(0, len(x), case.batch_size):
            xb, yb = x[start : start + case.batch_size], y[start : start + case.batch_size]
            logits = predict(model, attacks.fgsm(model, xb, yb, case.eps))
            correct += int((logits.argmax(1) == yb).sum())
            clean += int((predict(model, xb).argmax(1) == yb).sum())
            top2 = logits.topk(2, dim=1).values
            ties += int((top2[:, 0] - top2[:, 1] < 1e-4).sum())  # float noise may flip these
    n = len(x)
    return {"x": x.numpy(), "ref": correct / n, "clean": clean / n, "tol": (ties + 0.5) / n, "n": n}


# --------------------------------------------------------------------------- scoring


@dataclass
class Outcome:
    """What came back from one call of a submitted function, validated to plain types."""

    error: str | None = None
    type: str | None = None
    out: np.ndarray | None = None
    x_after: np.ndarray | None = None
    value: float | None = None
    requires_grad: bool | None = None
    batch_sizes: list[int] | None = None


def _outcome(info: Any, arrays: dict[str, np.ndarray | None]) -> Outcome:
    """Build an Outcome from untrusted facts, keeping only fields of exactly the right type."""
    if type(info) is not dict:
        return Outcome(error="gave no result: the notebook ended or broke the grading process")

    def get(key: str, kinds: tuple[type, ...]) -> Any:
        value = info.get(key)
        if type(value) not in kinds:
            return None
        return _clean(value) if type(value) is str else value

    sizes = info.get("batch_sizes")
    if not (type(sizes) is list and all(type(s) is int for s in sizes)):
        sizes = None
    value = get("value", (int, float))
    if type(value) is int:
        value = float(value) if abs(value) < 2**53 else None  # huge JSON ints overflow floats
    return Outcome(
        error=get("error", (str,)),
        type=get("type", (str,)),
        out=arrays.get("out"),
        x_after=arrays.get("x_after"),
        value=value,
        requires_grad=get("requires_grad", (bool,)),
        batch_sizes=sizes,
    )


def _clean(text: str, limit: int = 400) -> str:
    """Untrusted text made safe to print: no control characters (terminal escapes), short."""
    text = "".join(c if c.isprintable() else " " for c in text[: limit * 2]).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_feedback(function: str, error: str) -> list[str]:
    if "NotImplementedError" in error:
        return [
            f"{function}() is not written yet: replace its `raise NotImplementedError(...)` "
            "line with your code."
        ]
    return [f"{function}() {_verb(error)}"]


def _verb(error: str) -> str:
    """ "raised ValueError: ..." for an exception; a message like "ran past ..." as it is."""
    return f"raised {error}" if re.match(r"[A-Z]\w*(: |$| \()", error) else error


def _score_fgsm(case: Case, ref: dict, got: Outcome) -> list[str]:
    """Problems with an FGSM answer (empty when it is right), each with a hint."""
    if got.error is not None:
        return _error_feedback("fgsm", got.error)
    if got.type != "torch.Tensor" or got.out is None:
        return [f"fgsm() returned {got.type or 'nothing readable'}; return a plain torch.Tensor."]
    x, out = ref["x"], got.out
    if out.shape != x.shape:
        return [
            f"x_adv has shape {tuple(out.shape)} but x has shape {tuple(x.shape)}.",
            "Hint: keep the shape of x (no flattening, no squeezing).",
        ]
    problems = []
    if out.dtype != x.dtype:
        problems.append(
            f"x_adv has dtype {out.dtype} but x has dtype {x.dtype}; return x's dtype "
            "(no .float() or .double(), no torch.tensor(...) copies)."
        )
    if got.x_after is None or got.x_after.shape != x.shape or not np.array_equal(got.x_after, x):
        problems.append(
            "fgsm() changed its input x in place. Hint: work on a copy, "
            "x.clone().detach().requires_grad_(True), and never write into x or x.data."
        )
    if not np.isfinite(out).all():
        return [*problems, "x_adv contains NaN or infinity."]
    out = out.astype(x.dtype)
    if out.min() < 0 or out.max() > 1:
        fixed = np.isclose(np.clip(out, 0, 1), ref["ref"], atol=ATOL).mean()
        hint = (
            " With that clamp your answer would be right." if fixed > 1 - MISMATCH_ALLOWED else ""
        )
        problems.append(
            f"x_adv has values outside [0, 1] (min {out.min():.3g}, max {out.max():.3g}). "
            f"Hint: clamp to [0, 1] after the step, x_adv.clamp(0, 1).{hint}"
        )
    step = np.abs(out - x).max()
    if step > case.eps + ATOL:
        problems.append(
            f"some pixels moved by {step:.3g}, more than eps = {case.eps:g}; "
            "FGSM moves every pixel by at most eps."
        )
    if got.requires_grad:
        problems.append("x_adv is still attached to the autograd graph; return x_adv.detach().")
    wrong = ~np.isclose(out, ref["ref"], atol=ATOL)
    if wrong.mean() > MISMATCH_ALLOWED and not problems:
        problems.append(_diagnose_fgsm(case, x, out, ref, wrong))
    return problems


def _diagnose_fgsm(case: Case, x: np.ndarray, out: np.ndarray, ref: dict, wrong) -> str:
    """Name the likeliest mistake behind an in-range, in-ball FGSM answer that is wrong."""
    if np.isclose(out, ref["descent"], atol=ATOL).mean() > 1 - MISMATCH_ALLOWED:
        return (
            "x_adv steps down the loss (x - eps * sign(grad)); FGSM goes up: x + eps * sign(grad)."
        )
    full = np.isclose(np.abs(ref["ref"] - x), case.eps, atol=ATOL)  # pixels FGSM moves by eps
    if full.any():
        size = float(np.median(np.abs(out - x)[full]))
        if not math.isclose(size, case.eps, abs_tol=ATOL):
            return f"your steps have size {size:.3g}; FGSM steps by exactly eps = {case.eps:g}."
    return (
        f"x_adv differs from clip(x + eps * sign(grad_x L(theta, x, y)), 0, 1) on "
        f"{wrong.mean():.0%} of the pixels. Hint: L is the cross-entropy of the model's logits "
        "against the labels y (F.cross_entropy), differentiated with respect to x."
    )


def _score_accuracy(case: Case, ref: dict, got: Outcome) -> list[str]:
    """Problems with an accuracy-under-attack answer (empty when it is right)."""
    if got.error is not None:
        return _error_feedback("accuracy_under_attack", got.error)
    value, n = got.value, ref["n"]
    if value is None or not math.isfinite(value):
        return [f"accuracy_under_attack() returned {got.type}; return a float between 0 and 1."]
    problems = []

    def near(target: float, scale: float = 1.0) -> bool:
        return abs(value - target) <= ref["tol"] * scale + 1e-9

    if not near(ref["ref"]):
        if near(100 * ref["ref"], 100):
            problems.append("that looks like a percentage; return the fraction, between 0 and 1.")
        elif near(ref["ref"] * n, n):
            problems.append("that looks like a count; divide by the number of points, len(x).")
        elif near(ref["clean"]) and not math.isclose(ref["clean"], ref["ref"]):
            problems.append(
                f"got {value:.4g}, the clean accuracy: classify the attacked inputs "
                "attack(model, x_batch, y_batch, eps), not x."
            )
        elif near(1 - ref["ref"]):
            problems.append("that looks like the error rate; return the accuracy (1 - error).")
        else:
            problems.append(
                f"got {value:.4g}, expected {ref['ref']:.4g}. Hint: count the correct "
                "predictions over all batches, then divide by len(x) (not by the number of "
                "batches, which differ in size)."
            )
    sizes = got.batch_sizes
    if sizes is not None and not sizes:
        problems.append("the attack argument was never called; attack each batch with it.")
    elif sizes:
        if max(sizes) > case.batch_size:
            problems.append(
                f"the attack got batches of up to {max(sizes)} points; "
                f"pass at most batch_size = {case.batch_size} at a time."
            )
        if sum(sizes) != n:
            problems.append(
                f"the attack saw {sum(sizes)} points in all; attack each of the {n} points once."
            )
    if got.x_after is not None and not np.array_equal(got.x_after, ref["x"]):
        problems.append("accuracy_under_attack() changed its input x in place.")
    return problems


@dataclass
class CaseResult:
    """One case's verdict. Hidden cases keep their feedback out of every report."""

    function: str
    name: str
    hidden: bool
    passed: bool
    points: float
    max_points: float
    feedback: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.hidden:
            data["feedback"] = []
        return data


def _score(case: Case, number: int, ref: dict, got: Outcome) -> CaseResult:
    scorer = _score_fgsm if case.function == "fgsm" else _score_accuracy
    problems = scorer(case, ref, got)
    name = f"hidden case {number}" if case.hidden else f"case {number}: {case.describe()}"
    return CaseResult(
        function=case.function,
        name=name,
        hidden=case.hidden,
        passed=not problems,
        points=0.0 if problems else float(case.points),
        max_points=float(case.points),
        feedback=[] if case.hidden else problems,
    )


def _numbered(cases: Sequence[Case]) -> list[tuple[int, Case]]:
    """Number the cases per function and visibility: case 1, 2, ...; hidden case 1, 2, ..."""
    counts: dict[tuple[str, bool], int] = {}
    numbered = []
    for case in cases:
        key = (case.function, case.hidden)
        counts[key] = counts.get(key, 0) + 1
        numbered.append((counts[key], case))
    return numbered


# --------------------------------------------------------------------------- check() in the notebook


@dataclass
class Feedback:
    """What ``check()`` found; shows as a short report in a notebook."""

    function: str
    results: list[CaseResult]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def score(self) -> float:
        return sum(r.points for r in self.results)

    @property
    def max_score(self) -> float:
        return sum(r.max_points for r in self.results)

    def __repr__(self) -> str:
        head = "all public cases pass" if self.passed else "not there yet"
        lines = [f"{self.function}: {head} ({self.score:g}/{self.max_score:g} points)"]
        lines += _result_lines(self.results, indent="", headers=False)
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def check(function: str, fn: Callable) -> Feedback:
    """Run ``fn`` on the public cases of ``function`` here, in this kernel; return the feedback.

    The same cases and the same scoring as ``course-adv grade``, for instant feedback while
    working on an exercise, e.g. ``check("fgsm", fgsm)``.
    """
    exercise = _exercise_of(function)
    if not callable(fn):
        raise TypeError(f"fn must be your function {function}, got {type(fn).__name__}")
    notes = []
    if str(getattr(fn, "__module__", None)).startswith("course_adv"):
        notes.append(f"{fn.__module__}.{function} is the course's own; write yours.")
    results = []
    for number, case in _numbered([c for c in exercise.cases if c.function == function]):
        model, x, y = case_inputs(case)
        ref = _reference(case, model, x, y)
        try:
            info, arrays = call_function(
                function, fn, model, x, y, case.eps, case.batch_size, attacks.fgsm
            )
            got = _outcome(info, dict(arrays))
        except Exception as err:
            got = Outcome(error=describe_error(err))
        results.append(_score(case, number, ref, got))
    return Feedback(function, results, notes)


# --------------------------------------------------------------------------- grading a notebook


@dataclass
class Report:
    """The grade of one submitted notebook."""

    path: str
    exercise: str | None
    results: list[CaseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def score(self) -> float:
        return sum(r.points for r in self.results)

    @property
    def max_score(self) -> float:
        return sum(r.max_points for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "exercise": self.exercise,
            "score": self.score,
            "max_score": self.max_score,
            "error": self.error,
            "notes": list(self.notes),
            "cases": [r.as_dict() for r in self.results],
        }


_USES_REFERENCE = re.compile(
    r"course_adv\s*\.\s*attacks|from\s+course_adv\s+import\s[^\n]*\battacks\b"
)


def _which_exercise(path: Path, notebook: Any) -> str | None:
    metadata = notebook.get("metadata", {}) if isinstance(notebook, dict) else {}
    tagged = metadata.get("course_adv", {}) if isinstance(metadata, dict) else {}
    name = tagged.get("exercise") if isinstance(tagged, dict) else None
    if isinstance(name, str) and name in EXERCISES:
        return name
    matches = [name for name in EXERCISES if name in path.stem]
    return matches[0] if len(matches) == 1 else None


def _code_cells(notebook: Any) -> list[tuple[int, str]]:
    if not isinstance(notebook, dict) or notebook.get("nbformat") != 4:
        raise ValueError("it is not a Jupyter notebook in format 4")
    cells = notebook.get("cells")
    if not isinstance(cells, list):
        raise ValueError("it has no list of cells")
    code = []
    for number, cell in enumerate(cells, start=1):
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            source = cell.get("source", "")
            if isinstance(source, list) and all(isinstance(line, str) for line in source):
                source = "".join(source)
            if not isinstance(source, str):
                raise ValueError(f"cell {number} has no text source")
            code.append((number, source))
    return code


def grade_notebook(
    path: str | os.PathLike,
    *,
    timeout: float = 60.0,
    hidden: Iterable[Case] | None = None,
    exercise: str | None = None,
) -> Report:
    """Grade one notebook in a separate process; never raises for anything the notebook does.

    ``timeout``: wall-clock seconds for the whole run (each cell gets at most 40% of it, each
    graded call 10%); ``hidden``: extra cases (default: those named by ``COURSE_ADV_HIDDEN_CASES``);
    ``exercise``: the exercise to grade against (default: from the notebook's metadata
    ``course_adv.exercise``, else its file name).
    """
    path = Path(path)
    hidden = list(hidden) if hidden is not None else _hidden_from_env()
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        cells, unreadable = _code_cells(notebook), None
    except Exception as err:
        notebook, cells = {}, []
        unreadable = f"not a readable notebook: {describe_error(err)}"
    name = exercise or _which_exercise(path, notebook)
    if name not in EXERCISES:
        return Report(
            str(path),
            None,
            error=unreadable
            or f"cannot tell which exercise this is; name it like {sorted(EXERCISES)[0]}.ipynb "
            "or pass --exercise",
        )
    spec = EXERCISES[name]
    cases = list(spec.cases) + [c for c in hidden if c.function in spec.functions]
    if unreadable:
        results = [_score(c, i, {}, Outcome(error=unreadable)) for i, c in _numbered(cases)]
        return Report(str(path), name, results, error=unreadable)
    report = Report(str(path), name)
    if any(_USES_REFERENCE.search(source) for _, source in cells):
        report.notes.append(
            "the notebook uses course_adv.attacks: is the answer the student's own?"
        )
    with tempfile.TemporaryDirectory(prefix="course-adv-grade-", ignore_cleanup_errors=True) as tmp:
        job = Path(tmp)
        refs = _prepare_job(job, cells, cases, timeout)
        status = _run_child(job, timeout)
        if status:
            report.notes.append(status)
        report.notes += _cell_notes(job)
        for (number, case), (case_id, ref) in zip(_numbered(cases), refs, strict=True):
            info = _read_json(job / "out" / f"{case_id}.json")
            arrays = {k: _read_npy(job / "out" / f"{case_id}.{k}.npy") for k in ("out", "x_after")}
            report.results.append(_score(case, number, ref, _outcome(info, arrays)))
    return report


def _prepare_job(
    job: Path, cells: list[tuple[int, str]], cases: list[Case], timeout: float
) -> list[tuple[str, dict]]:
    """Write the job folder for the child; return each case's id and reference answer."""
    for folder in ("inputs", "out", "work", "home", "cache/data"):
        (job / folder).mkdir(parents=True)
    shared = cache_dir() / "data" / f"mnist5k-seed{SPLIT_SEED}.npz"
    if shared.is_file():  # a private copy of the data cache: the child cannot poison ours
        shutil.copyfile(shared, job / "cache" / "data" / shared.name)
    specs, refs = [], []
    for i, case in enumerate(cases):
        case_id = f"c{i}"
        model, x, y = case_inputs(case)
        ref = _reference(case, model, x, y)
        refs.append((case_id, ref))
        torch.save(model.state_dict(), job / "inputs" / f"{case_id}.model.pt")
        np.save(job / "inputs" / f"{case_id}.x.npy", x.numpy(), allow_pickle=False)
        np.save(job / "inputs" / f"{case_id}.y.npy", y.numpy(), allow_pickle=False)
        specs.append(
            {
                "id": case_id,
                "function": case.function,
                "model": case.model,
                "dtype": case.dtype,
                "eps": case.eps,
                "batch_size": case.batch_size,
            }
        )
    job_spec = {
        "cells": [source for _, source in cells],
        "cell_numbers": [number for number, _ in cells],
        "cases": specs,
        "cell_timeout": max(1.0, 0.4 * timeout),
        "case_timeout": max(1.0, 0.1 * timeout),
    }
    (job / "job.json").write_text(json.dumps(job_spec), encoding="utf-8")
    return refs


def _child_env(job: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(job / "home"),
        "TMPDIR": str(job / "work"),
        "COURSE_ADV_QUICK": "1",
        "COURSE_ADV_CACHE": str(job / "cache"),
        "COURSE_ADV_DEVICE": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "LANG": "C.UTF-8",
    }


def _limit_child() -> None:  # runs in the child between fork and exec
    import resource

    for kind, limit in (
        (resource.RLIMIT_FSIZE, CHILD_FILE_BYTES),
        (resource.RLIMIT_AS, CHILD_MEMORY_BYTES),
    ):
        try:
            resource.setrlimit(kind, (limit, limit))
        except (ValueError, OSError):  # not every platform allows every limit
            pass


def _run_child(job: Path, timeout: float) -> str | None:
    """Run the child on the job folder; return a note when it did not end normally."""
    # -I: no environment variables, user site or current folder on the path; the path gets
    # the folder holding this very course_adv, so the child runs the grader's own harness
    root = str(Path(__file__).resolve().parents[1])
    start = "import sys; sys.path.insert(0, sys.argv[1]); import course_adv._grading_child as c; "
    command = [sys.executable, "-I", "-c", start + "c.main(c.Path(sys.argv[2]))", root, str(job)]
    posix = os.name == "posix"
    with open(job / "stdout.txt", "wb") as out, open(job / "stderr.txt", "wb") as err:
        process = subprocess.Popen(
            command,
            cwd=job / "work",
            env=_child_env(job),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=posix,
            preexec_fn=_limit_child if posix else None,
        )
        try:
            process.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            try:  # the whole group: nothing the submission started outlives grading
                os.killpg(process.pid, signal.SIGKILL) if posix else process.kill()
            except (ProcessLookupError, PermissionError):
                pass
            process.wait()
    if timed_out:
        return f"the notebook ran past the time limit of {timeout:g} s and was stopped"
    if not (job / "out" / "cells.json").exists():
        tail = _tail(job / "stderr.txt")
        return f"the notebook ended the grading process early (exit code {process.returncode})" + (
            f"; its last error output: {tail}" if tail else ""
        )
    return None


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - MAX_LOG_BYTES))
            return _clean(f.read().decode("utf-8", "replace"), MAX_LOG_BYTES)
    except OSError:
        return ""


def _cell_notes(job: Path) -> list[str]:
    info = _read_json(job / "out" / "cells.json")
    errors = info.get("errors") if type(info) is dict else None
    if type(errors) is not list:
        return []
    notes = []
    for item in errors[:20]:
        if type(item) is dict and type(item.get("cell")) is int and type(item.get("error")) is str:
            error = _clean(item["error"]).replace(f"(cell {item['cell']}, line", "(line")
            notes.append(f"cell {item['cell']} {_verb(error)}")
    return notes


def _regular_file(path: Path) -> bool:
    try:
        info = os.lstat(path)  # lstat: a symlink planted by the submission is not followed
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size <= MAX_RESULT_BYTES


def _read_json(path: Path) -> Any:
    if not _regular_file(path) or path.stat().st_size > MAX_JSON_BYTES:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except Exception:  # anything unreadable is no result
        return None


def _read_npy(path: Path) -> np.ndarray | None:
    """A plain float array from a ``.npy`` file, or None: header checked first, no pickles."""
    if not _regular_file(path):
        return None
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return None
            if dtype not in (np.dtype("float32"), np.dtype("float64")) or len(shape) > 8:
                return None
            if math.prod(shape) * dtype.itemsize > MAX_RESULT_BYTES:
                return None
            f.seek(0)
            array = np.lib.format.read_array(f, allow_pickle=False)
    except Exception:
        return None
    return array if type(array) is np.ndarray else None


# --------------------------------------------------------------------------- many notebooks, reports


def find_notebooks(path: str | os.PathLike) -> list[Path]:
    """The notebooks to grade: ``path`` itself, or every ``.ipynb`` under the folder ``path``."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".ipynb":
            raise GradingError(f"{path} is not a notebook (.ipynb)")
        return [path]
    if not path.is_dir():
        raise GradingError(f"{path} does not exist")
    found = sorted(
        p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and p.is_file()
    )
    if not found:
        raise GradingError(f"no notebooks (.ipynb) under {path}")
    return found


def grade_path(
    path: str | os.PathLike,
    *,
    timeout: float = 60.0,
    hidden: Iterable[Case] | None = None,
    exercise: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Report]:
    """Grade a notebook or every notebook in a folder, one after the other."""
    if exercise is not None and exercise not in EXERCISES:
        raise GradingError(f"exercise {exercise!r} is unknown; choose one of {sorted(EXERCISES)}")
    if not (isinstance(timeout, int | float) and timeout > 0):
        raise GradingError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    notebooks = find_notebooks(path)
    hidden = list(hidden) if hidden is not None else _hidden_from_env()
    reports = []
    for notebook in notebooks:
        if progress is not None:
            progress(f"grading {notebook}")
        reports.append(grade_notebook(notebook, timeout=timeout, hidden=hidden, exercise=exercise))
    return reports


def _result_lines(results: Sequence[CaseResult], indent: str, headers: bool = True) -> list[str]:
    lines: list[str] = []
    function, previous = None, None
    for r in results:
        if r.function != function:
            function, previous = r.function, None
            if headers:
                lines.append(f"{indent}{function}()")
        verdict = "PASS" if r.passed else "FAIL"
        lines.append(f"{indent}  {verdict} {r.points:g}/{r.max_points:g}  {r.name}")
        if r.feedback and r.feedback == previous:
            lines.append(f"{indent}        - same as above")
        else:
            lines += [f"{indent}        - {text}" for text in r.feedback]
        previous = r.feedback or previous
    return lines


def format_text(reports: Sequence[Report]) -> str:
    """A report for people: per notebook, per function and case; totals last."""
    lines = []
    for report in reports:
        exercise = f" (exercise {report.exercise})" if report.exercise else ""
        lines.append(f"== {report.path}{exercise}")
        if report.error:
            lines.append(f"  not graded: {report.error}")
        lines += _result_lines(report.results, indent="  ")
        lines += [f"  note: {note}" for note in report.notes]
        lines.append(f"  score: {report.score:g}/{report.max_score:g}")
        lines.append("")
    if len(reports) > 1:
        width = max(len(r.path) for r in reports)
        lines.append("Scores:")
        lines += [f"  {r.path:<{width}}  {r.score:g}/{r.max_score:g}" for r in reports]
    total, maximum = _totals(reports)
    lines.append(f"Total: {total:g}/{maximum:g}")
    return "\n".join(lines)


def _totals(reports: Sequence[Report]) -> tuple[float, float]:
    return sum(r.score for r in reports), sum(r.max_score for r in reports)


def format_json(reports: Sequence[Report]) -> str:
    """A report for machines: ``{"submissions": [...], "total": ..., "max": ...}``."""
    total, maximum = _totals(reports)
    data = {"submissions": [r.as_dict() for r in reports], "total": total, "max": maximum}
    return json.dumps(data, indent=2)


def write_csv(reports: Sequence[Report], path: str | os.PathLike) -> None:
    """One row per notebook: points per function, the total, the maximum, any error."""
    functions = [f for e in EXERCISES.values() for f in e.functions]
    header = ["path", "exercise", *functions, "total", "max", "error"]
    rows = []
    for r in reports:
        per_function = {f: sum(c.points for c in r.results if c.function == f) for f in functions}
        graded = {c.function for c in r.results}
        rows.append(
            [r.path, r.exercise or ""]
            + [f"{per_function[f]:g}" if f in graded else "" for f in functions]
            + [f"{r.score:g}", f"{r.max_score:g}", r.error or ""]
        )
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])


def grade_command(
    path: str,
    *,
    as_json: bool = False,
    csv_file: str | None = None,
    timeout: float = 60.0,
    hidden_file: str | None = None,
    exercise: str | None = None,
) -> int:
    """``course-adv grade``: print the report; 0 whatever the score, 2 if grading cannot run."""
    try:
        hidden = load_hidden_cases(hidden_file) if hidden_file else _hidden_from_env()
        reports = grade_path(
            path,
            timeout=timeout,
            hidden=hidden,
            exercise=exercise,
            progress=lambda text: print(text, file=sys.stderr),
        )
        if len(reports) == 1 and reports[0].exercise is None:
            raise GradingError(f"{path}: {reports[0].error}")
    except GradingError as err:
        print(f"course-adv grade: error: {err}", file=sys.stderr)
        return 2
    print(format_json(reports) if as_json else format_text(reports))
    if csv_file:
        write_csv(reports, csv_file)
    return 0
