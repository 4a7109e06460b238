"""The child side of ``course-adv grade``: run a submission's code, call its functions, save data.

The grader runs ``main(JOB_DIR, OUT)`` of this module in a fresh interpreter, in the sandbox
(see ``isolation`` and ``sandbox``). ``JOB_DIR/job.json`` lists the notebook's code cells and
the cases, each with the spec file of its exercise; each case's inputs are loaded by its spec
(``load_inputs``), and the course's own answers are instrumented (``integrity``), *before* any
submitted code runs.

The child then runs the code cells in order within the cells' time budget (a cell that raises
is reported and skipped; the cell running when the budget ends is stopped and the rest are
skipped; IPython magics are dropped; ``course_adv.grading.check`` becomes a no-op). Then it
calls each graded function on each case through its spec's ``call``, each call under a time
limit of its own, and writes for every case ``OUT/<id>.json`` (plain facts, and which course
answers the call reached) and ``OUT/<id>.<name>.npy`` (plain arrays, saved without pickles).

None of this is trusted: the submission runs in this same process and can rewrite any of it.
The grader reads the files back with exact type checks and compares them with answers it
computed itself, so the worst a hostile submission can do here is fail its own cases.
"""

from __future__ import annotations

import builtins
import json
import os
import signal
import sys
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from course_adv.grading.integrity import instrument

MAX_MESSAGE = 400


class GradingTimeout(BaseException):
    """Raised (by SIGALRM) when a cell or a graded call runs past its time limit."""


def describe_error(err: BaseException) -> str:
    """``Type: message`` (shortened), after the notebook cell and line that raised it."""
    if isinstance(err, GradingTimeout):
        return "ran past its time limit (an endless loop?)"
    try:
        text = f"{type(err).__name__}: {err}"
    except Exception:  # a hostile __str__
        text = type(err).__name__
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    if isinstance(err, SyntaxError) and str(err.filename).startswith("<cell "):
        return f"SyntaxError: {err.msg} ({err.filename[1:-1]}, line {err.lineno})"
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.startswith("<cell ")]
    if frames:
        text += f" ({frames[-1].filename[1:-1]}, line {frames[-1].lineno})"
    return text


def python_source(cell: str) -> str:
    """A notebook cell as plain Python: IPython magics and shell escapes become ``pass``."""
    lines = []
    for line in cell.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            line = line[: len(line) - len(stripped)] + "pass"
        lines.append(line)
    return "\n".join(lines)


def _on_alarm(signum, frame):
    raise GradingTimeout()


def _limited(seconds: float, run: Callable[[], Any]) -> Any:
    """``run()`` with a SIGALRM time limit (where the platform has one)."""
    if not hasattr(signal, "setitimer"):
        return run()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return run()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _stub_grading_module() -> types.ModuleType:
    stub = types.ModuleType("course_adv.grading")
    stub.check = lambda *args, **kwargs: None  # check() cells cost nothing while grading
    return stub


def _load_cases(job_dir: Path, job: dict) -> list[tuple[dict, Any, Any, dict]]:
    """Each case's job entry, graded function, case and inputs, loaded from its spec."""
    from course_adv.grading.registry import load_spec

    loaded = []
    for entry in job["cases"]:
        exercise = load_spec(entry["spec"]).EXERCISE
        graded = exercise.function(entry["function"])
        case = graded.case_type(**entry["case"])
        loaded.append((entry, graded, case, case.load_inputs(job_dir / "inputs" / entry["id"])))
    return loaded


def _run_case(
    entry: dict, graded: Any, case: Any, inputs: dict, namespace: dict, timeout: float, out: Path
) -> dict[str, Any]:
    fn = namespace.get(graded.name)
    if not callable(fn):
        return {"error": "is not defined in the notebook (keep the name the exercise gives it)"}
    facts, arrays = _limited(timeout, lambda: graded.call(fn, case, inputs))
    for key, array in arrays.items():
        np.save(out / f"{entry['id']}.{key}.npy", array, allow_pickle=False)
    return facts


def _run_cells(job: dict, namespace: dict, out_dir: Path) -> list[dict[str, Any]]:
    """Run the cells in order within the cells' time budget; report what failed or was
    stopped. Once the budget is spent the remaining cells are skipped (the graded calls that
    follow have a budget of their own)."""
    errors: list[dict[str, Any]] = []
    deadline = time.monotonic() + job["cells_budget"]
    for number, cell in zip(job["cell_numbers"], job["cells"], strict=True):
        left = deadline - time.monotonic()
        if left <= 0:
            errors.append({"cell": number, "skipped": True})
            continue
        _write_json(out_dir / "progress.json", {"cell": number})
        try:
            code = compile(python_source(cell), f"<cell {number}>", "exec")
            _limited(left, lambda code=code: exec(code, namespace))
        except GradingTimeout:
            errors.append({"cell": number, "stopped": True})
        except BaseException as err:  # anything a cell does is reported, never fatal
            errors.append({"cell": number, "error": describe_error(err)})
    return errors


def main(job_dir: Path, out_dir: Path) -> None:
    job = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    cases = _load_cases(job_dir, job)
    called = instrument(job["course_answers"])  # before any submitted code runs
    sys.modules["course_adv.grading"] = _stub_grading_module()
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    namespace["display"] = lambda *args, **kwargs: None

    errors = _run_cells(job, namespace, out_dir)
    _write_json(out_dir / "cells.json", {"errors": errors})

    timed_out: set[str] = set()
    for entry, graded, case, inputs in cases:
        if graded.name in timed_out:
            info = {"error": "was skipped: an earlier case of it ran past its time limit"}
        else:
            called.clear()
            try:
                info = _run_case(
                    entry, graded, case, inputs, namespace, job["case_timeout"], out_dir
                )
            except BaseException as err:
                if isinstance(err, GradingTimeout):
                    timed_out.add(graded.name)
                info = {"error": describe_error(err)}
            info["course_answers_called"] = sorted(called)
        try:
            _write_json(out_dir / f"{entry['id']}.json", info)
        except BaseException:
            pass  # the submission broke the json module: the grader sees no result, a fail
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)  # do not wait for threads the submission may have left running


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
