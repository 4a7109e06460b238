"""The grading engine: run a notebook, collect what its functions returned, score, report.

Nothing here knows any exercise: the cases, inputs, references, calls and scores all come from
the exercise's spec (``course_adv.grading.exercises``), found through the registry.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..data import SPLIT_SEED, cache_dir
from .child import describe_error
from .isolation import make_job, read_json, read_npy, remove_tree, run_child
from .registry import (
    all_exercises,
    graded_function,
    hidden_from_env,
    spec_file,
)
from .report import CaseResult, Feedback, GradeReport, display_path
from .sandbox import missing_reason
from .spec import Case, Exercise, GradedFunction, Outcome, clean, verb

__all__ = ["check", "grade_notebook"]

STARTUP_SECONDS = 20.0  # what the hard time limit allows for starting the child (torch imports)
_PREPARING = threading.Lock()


def case_seconds(timeout: float) -> float:
    """The time limit of one graded call: 10% of the cells' time, at least 5 s."""
    return max(5.0, 0.1 * timeout)


def _score(graded: GradedFunction, case: Case, number: int, ref: dict, got: Outcome) -> CaseResult:
    if got.answers_called:
        problems = [
            f"{graded.name}() calls the course's own {', '.join(got.answers_called)}; "
            "it earns nothing for this case: write your own."
        ]
    else:
        problems = graded.score(case, ref, got)
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


def check(function: str, fn: Callable) -> Feedback:
    """Run ``fn`` on the public cases of ``function`` here, in this kernel; return the feedback.

    The same cases and the same scoring as ``course-adv grade``, for instant feedback while
    working on an exercise, e.g. ``check("fgsm_targeted", fgsm_targeted)``.
    """
    exercise, graded = graded_function(function)
    if not callable(fn):
        raise TypeError(f"fn must be your function {function}, got {type(fn).__name__}")
    notes = []
    if str(getattr(fn, "__module__", None)).startswith("course_adv"):
        notes.append(f"{fn.__module__}.{function} is the course's own; write yours.")
    results = []
    with _random_state_kept():  # a seeded notebook prints the same numbers after a check()
        for number, case in _numbered([c for c in exercise.cases if c.function == function]):
            inputs = case.inputs()
            ref = graded.reference(case, inputs)
            try:
                got = graded.outcome(*graded.call(fn, case, inputs))
            except Exception as err:
                got = Outcome(error=describe_error(err))
            results.append(_score(graded, case, number, ref, got))
    return Feedback(function, results, notes)


@contextlib.contextmanager
def _random_state_kept() -> Iterator[None]:
    """Restore the random streams of torch (CPU and CUDA), NumPy and Python afterwards."""
    import random

    import numpy as np
    import torch

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng():
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


# --------------------------------------------------------------------------- grading a notebook


def _which_exercise(path: Path, notebook: Any, known: Iterable[str]) -> str | None:
    metadata = notebook.get("metadata", {}) if isinstance(notebook, dict) else {}
    tagged = metadata.get("course_adv", {}) if isinstance(metadata, dict) else {}
    name = tagged.get("exercise") if isinstance(tagged, dict) else None
    if isinstance(name, str) and name in known:
        return name
    matches = [name for name in known if name in path.stem]
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
    sandbox: bool | None = None,
    slot: int = 0,
) -> GradeReport:
    """Grade one notebook in a separate process; never raises for anything the notebook does.

    ``timeout``: seconds for the notebook's cells, all together (a cell still running when they
    are spent is stopped and the later cells skipped); each graded call then gets 10% of it on
    top (at least 5 s). ``hidden``: extra cases (default: those named by ``COURSE_ADV_HIDDEN_CASES``), run in a
    sandbox of their own whose notes are never shown. ``exercise``: the exercise to grade
    against (default: from the notebook's metadata ``course_adv.exercise``, else its file
    name). ``sandbox``: run in bubblewrap (default: when it is available; without it the report
    says "not sandboxed"). ``slot``: which sandbox user, for notebooks graded at once.
    """
    path = Path(path)
    shown = display_path(path)
    hidden = list(hidden) if hidden is not None else hidden_from_env()
    known = all_exercises()
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        cells, unreadable = _code_cells(notebook), None
    except Exception as err:
        notebook, cells = {}, []
        unreadable = f"not a readable notebook: {describe_error(err)}"
    name = exercise or _which_exercise(path, notebook, known)
    if name not in known:
        return GradeReport(
            shown,
            None,
            error=unreadable
            or f"cannot tell which exercise this is; name it like {sorted(known)[0]}.ipynb "
            "or pass --exercise",
        )
    spec = known[name]
    cases = list(spec.cases) + [c for c in hidden if c.function in spec.function_names]
    numbered = [(spec.function(c.function), number, c) for number, c in _numbered(cases)]
    if unreadable:
        results = [_score(g, c, i, {}, Outcome(error=unreadable)) for g, i, c in numbered]
        return GradeReport(shown, name, results, error=unreadable)
    sandboxed = sandbox if sandbox is not None else missing_reason() is None
    report = GradeReport(shown, name, sandboxed=sandboxed)
    if not sandboxed:
        report.notes.append(f"not sandboxed: {missing_reason() or 'graded with --no-sandbox'}")
    public = [item for item in numbered if not item[2].hidden]
    secret = [item for item in numbered if item[2].hidden]
    run = functools.partial(_run, spec, name, cells, timeout, sandboxed, slot)
    report.results, notes, report.flags = run(public)
    report.notes += notes
    if secret:
        results, _, flags = run(secret)  # the notes of hidden cases stay here
        report.results += results
        report.flags += [flag for flag in flags if flag not in report.flags]
    return report


def _run(
    spec: Exercise,
    name: str,
    cells: list[tuple[int, str]],
    timeout: float,
    sandboxed: bool,
    slot: int,
    numbered: list[tuple[GradedFunction, int, Case]],
) -> tuple[list[CaseResult], list[str], list[str]]:
    """Run the notebook once on some cases; return their results, notes and flags."""
    job = Path(tempfile.mkdtemp(prefix="course-adv-grade-"))
    try:
        make_job(job)
        with _PREPARING:  # torch's thread setting is global: one preparation at a time
            cases = [c for _, _, c in numbered]
            refs = _prepare_job(job, spec, spec_file(name), cells, cases, timeout)
        case_timeout = case_seconds(timeout)
        limits = (STARTUP_SECONDS + 1.25 * timeout, 5.0 + case_timeout * len(numbered))
        timed_out, code, tail = run_child(
            job, limits, sandboxed=sandboxed, slot=slot, read_only=(spec_file(name),)
        )
        out = job / "scratch" / "out"
        notes = _cell_notes(out, timeout)
        if timed_out:
            progress = read_json(out / "progress.json")
            cell = progress.get("cell") if type(progress) is dict else None
            running = type(cell) is int and timed_out == "cells"
            where = f" while running cell {cell}" if running else ""
            limit = limits[0] if timed_out == "cells" else limits[1]
            what = "its cells" if timed_out == "cells" else "the graded calls"
            notes.insert(0, f"the notebook ran past the time limit of {limit:g} s for {what}{where} and was stopped")  # fmt: skip
        elif read_json(out / "cells.json") is None:
            broke = os.path.lexists(out / "cells.json")  # there, but not a readable record
            ended = "broke its record of the cells" if broke else "ended the grading process early"
            notes.insert(
                0,
                f"the notebook {ended} (exit code {code})"
                + (f"; its last error output: {tail}" if tail else ""),
            )
        results, flags = [], []
        for (graded, number, case), (case_id, ref) in zip(numbered, refs, strict=True):
            info = read_json(out / f"{case_id}.json")
            arrays = {k: read_npy(out / f"{case_id}.{k}.npy") for k in graded.arrays}
            got = graded.outcome(info, arrays)
            results.append(_score(graded, case, number, ref, got))
            for answer in got.answers_called:
                flag = f"{graded.name}() calls the course's own {answer}"
                if flag not in flags:
                    flags.append(flag)
        return results, notes, flags
    finally:
        remove_tree(job)


def _prepare_job(
    job: Path,
    spec: Exercise,
    spec_path: Path,
    cells: list[tuple[int, str]],
    cases: list[Case],
    timeout: float,
) -> list[tuple[str, dict]]:
    """Write the job's inputs for the child; return each case's id and reference answer."""
    shared = cache_dir() / "data" / f"mnist5k-seed{SPLIT_SEED}.npz"
    if shared.is_file():  # a private copy of the data cache: the child cannot poison ours
        shutil.copyfile(shared, job / "scratch" / "cache" / "data" / shared.name)
    entries, refs = [], []
    for i, case in enumerate(cases):
        case_id = f"c{i}"
        graded = spec.function(case.function)
        inputs = case.inputs()
        refs.append((case_id, graded.reference(case, inputs)))
        case.save_inputs(inputs, job / "in" / "inputs" / case_id)
        entries.append(
            {
                "id": case_id,
                "spec": str(spec_path),
                "function": graded.name,
                "case": case.settings(),
            }
        )
    job_spec = {
        "cells": [source for _, source in cells],
        "cell_numbers": [number for number, _ in cells],
        "cases": entries,
        "course_answers": sorted({a for f in spec.functions for a in f.course_answers}),
        "cells_budget": float(timeout),
        "case_timeout": case_seconds(timeout),
    }
    (job / "in" / "job.json").write_text(json.dumps(job_spec), encoding="utf-8")
    return refs


def _cell_notes(out: Path, budget: float) -> list[str]:
    """Notes on the cells that raised, and on the cell stopped when the cells' time ran out."""
    info = read_json(out / "cells.json")
    errors = info.get("errors") if type(info) is dict else None
    if type(errors) is not list:
        return []
    notes, skipped = [], []
    for item in errors[:200]:
        if type(item) is not dict or type(item.get("cell")) is not int:
            continue
        cell = item["cell"]
        if item.get("skipped") is True:
            skipped.append(str(cell))
        elif item.get("stopped") is True:
            notes.append(
                f"cell {cell} was still running when the notebook's cells had used their time "
                f"({budget:g} s in all) and was stopped; the cells after it were skipped, and "
                "your functions were graded all the same (make slow exploration cells faster, "
                "or run them on fewer points)"
            )
        elif type(item.get("error")) is str and len(notes) < 20:
            error = clean(item["error"]).replace(f"(cell {cell}, line", "(line")
            notes.append(f"cell {cell} {verb(error)}")
    if skipped and not any("was stopped" in note for note in notes):
        notes.append(f"cells {', '.join(skipped[:20])} were skipped: the time for cells ran out")
    return notes
