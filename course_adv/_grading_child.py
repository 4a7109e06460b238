"""The child side of ``course-adv grade``: run a submission's code, call its functions, save data.

The grader (``course_adv.grading``) runs ``main(JOB_DIR)`` of this module in a fresh,
isolated interpreter (``python -I``), in an empty working folder, with a scrubbed environment
and a wall-clock limit. ``JOB_DIR/job.json`` lists the notebook's code cells and
the cases; each case's inputs (``x``, ``y`` as ``.npy``, the model as a state dict) are loaded
*before* any submitted code runs, with ``allow_pickle=False`` and ``weights_only=True``.

The child then runs the code cells in order (a cell that raises or runs too long is reported
and skipped; IPython magics are dropped; ``course_adv.grading.check`` becomes a no-op), calls
each graded function on each case under a time limit, and writes for every case
``OUT/<id>.json`` (plain facts: the returned type, ``requires_grad``, the accuracy value,
the batch sizes the attack saw) and ``OUT/<id>.<name>.npy`` (the returned array and the input
after the call, saved without pickles).

None of this is trusted: the submission runs in this same process and can rewrite any of it.
The grader reads the files back with exact type checks and compares them with answers it
computed itself, so the worst a hostile submission can do here is fail its own cases.
``call_function`` is shared with the in-process ``check()`` of the exercise notebooks.
"""

from __future__ import annotations

import builtins
import json
import os
import signal
import sys
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAX_MESSAGE = 400


class GradingTimeout(BaseException):
    """Raised (by SIGALRM) when a cell or a graded call runs past its time limit."""


def call_function(
    function: str,
    fn: Callable,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    batch_size: int,
    attack: Callable,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Call a submitted function on one case; return (JSON-able facts, plain numpy arrays).

    The function gets copies of ``x`` and ``y``; the copy of ``x`` is returned after the call
    (``x_after``) so the grader can tell whether it was changed in place.
    """
    x_in, y_in = x.clone(), y.clone()
    if function == "fgsm":
        result = fn(model, x_in, y_in, eps)
        info: dict[str, Any] = {"type": _type_name(result)}
        arrays = {"x_after": _plain(x_in)}
        if isinstance(result, torch.Tensor):
            info["requires_grad"] = bool(result.requires_grad)
            arrays["out"] = _plain(result)
        return info, arrays
    if function == "accuracy_under_attack":
        sizes: list[int] = []

        def counted_attack(model_, x_batch, y_batch, eps_):
            sizes.append(int(len(x_batch)))
            return attack(model_, x_batch, y_batch, eps_)

        result = fn(model, x_in, y_in, eps, counted_attack, batch_size)
        info = {"type": _type_name(result), "value": _number(result), "batch_sizes": sizes}
        return info, {"x_after": _plain(x_in)}
    raise ValueError(f"function {function!r} is not graded")


def _type_name(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def _plain(tensor: torch.Tensor) -> np.ndarray:
    return np.array(tensor.detach().cpu().numpy(), copy=True)


def _number(value: Any) -> float | None:
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.detach().cpu().item())
    return None


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


def _load_case(job_dir: Path, case: dict) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from course_adv.models import build_model

    dtype = getattr(torch, case["dtype"])
    stem = job_dir / "inputs" / case["id"]
    model = build_model(case["model"])
    model.load_state_dict(torch.load(f"{stem}.model.pt", weights_only=True))
    model.to(dtype).eval()
    x = torch.from_numpy(np.load(f"{stem}.x.npy", allow_pickle=False)).to(dtype)
    y = torch.from_numpy(np.load(f"{stem}.y.npy", allow_pickle=False)).long()
    return model, x, y


def _stub_grading_module() -> types.ModuleType:
    stub = types.ModuleType("course_adv.grading")
    stub.check = lambda *args, **kwargs: None  # check() cells cost nothing while grading
    return stub


def _run_case(
    case: dict, namespace: dict, inputs: tuple, attack: Callable, timeout: float, out_dir: Path
) -> dict[str, Any]:
    fn = namespace.get(case["function"])
    if not callable(fn):
        return {"error": "is not defined in the notebook (keep the name the exercise gives it)"}
    model, x, y = inputs
    info, arrays = _limited(
        timeout,
        lambda: call_function(
            case["function"], fn, model, x, y, case["eps"], case["batch_size"], attack
        ),
    )
    for key, array in arrays.items():
        np.save(out_dir / f"{case['id']}.{key}.npy", array, allow_pickle=False)
    return info


def main(job_dir: Path) -> None:
    from course_adv.attacks import fgsm  # the attack the graded loops are given

    job = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    out_dir = job_dir / "out"
    cases = [(case, _load_case(job_dir, case)) for case in job["cases"]]
    sys.modules["course_adv.grading"] = _stub_grading_module()
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    namespace["display"] = lambda *args, **kwargs: None

    errors = []
    for number, cell in zip(job["cell_numbers"], job["cells"], strict=True):
        try:
            code = compile(python_source(cell), f"<cell {number}>", "exec")
            _limited(job["cell_timeout"], lambda code=code: exec(code, namespace))
        except BaseException as err:  # anything a cell does is reported, never fatal
            errors.append({"cell": number, "error": describe_error(err)})
    _write_json(out_dir / "cells.json", {"errors": errors})

    timed_out: set[str] = set()
    for case, inputs in cases:
        if case["function"] in timed_out:
            info = {"error": "was skipped: an earlier case of it ran past its time limit"}
        else:
            try:
                info = _run_case(case, namespace, inputs, fgsm, job["case_timeout"], out_dir)
            except BaseException as err:
                if isinstance(err, GradingTimeout):
                    timed_out.add(case["function"])
                info = {"error": describe_error(err)}
        try:
            _write_json(out_dir / f"{case['id']}.json", info)
        except BaseException:
            pass  # the submission broke the json module: the grader sees no result, a fail
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)  # do not wait for threads the submission may have left running


if __name__ == "__main__":
    main(Path(sys.argv[1]))
