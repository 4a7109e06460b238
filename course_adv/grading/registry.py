"""Which exercises exist: every spec file that defines ``EXERCISE``, and the hidden cases.

The exercises are discovered, not listed: each ``*.py`` file in a folder of ``SPEC_FOLDERS``
(by default only ``course_adv/grading/exercises/``) that defines ``EXERCISE`` is one exercise.
Adding an exercise is adding its spec file (and its solution notebook); nothing here changes.
A spec is loaded from its file path, so the grading child, which is told the path, runs the
very same spec as the grader.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .spec import Case, Exercise, GradedFunction, GradingError

__all__ = [
    "SPEC_FOLDERS",
    "HIDDEN_ENV",
    "all_exercises",
    "spec_file",
    "load_spec",
    "graded_function",
    "all_function_names",
    "load_hidden_cases",
    "hidden_from_env",
]

BUILTIN = Path(__file__).resolve().parent / "exercises"
SPEC_FOLDERS: list[Path] = [BUILTIN]
HIDDEN_ENV = "COURSE_ADV_HIDDEN_CASES"


def load_spec(path: str | os.PathLike) -> ModuleType:
    """Import the spec file at ``path`` (once per process) and return the module."""
    path = Path(path).resolve()
    builtin = path.parent == BUILTIN
    name = f"{__package__}.exercises.{path.stem}" if builtin else f"course_adv_spec_{path.stem}"
    module = sys.modules.get(name)
    if module is not None and Path(getattr(module, "__file__", "")).resolve() == path:
        return module
    loader = importlib.util.spec_from_file_location(name, path)
    if loader is None or loader.loader is None:
        raise GradingError(f"cannot load the exercise spec {path}")
    module = importlib.util.module_from_spec(loader)
    sys.modules[name] = module
    try:
        loader.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _spec_files() -> dict[str, Path]:
    """Each exercise's name and the spec file that defines it, in the order found."""
    found: dict[str, Path] = {}
    for folder in SPEC_FOLDERS:
        for path in sorted(Path(folder).glob("*.py")):
            exercise = getattr(load_spec(path), "EXERCISE", None)
            if not isinstance(exercise, Exercise):
                continue
            if exercise.name in found:
                raise GradingError(f"exercise {exercise.name} is defined twice: {path}")
            found[exercise.name] = path
    return found


def all_exercises() -> dict[str, Exercise]:
    """Every exercise, by name (``"02_fgsm"``)."""
    return {name: load_spec(path).EXERCISE for name, path in _spec_files().items()}


def spec_file(name: str) -> Path:
    """The spec file of the exercise ``name``."""
    return _spec_files()[name]


def all_function_names() -> list[str]:
    return [f for exercise in all_exercises().values() for f in exercise.function_names]


def graded_function(function: str) -> tuple[Exercise, GradedFunction]:
    """The exercise that grades ``function``, and its spec."""
    for exercise in all_exercises().values():
        if function in exercise.function_names:
            return exercise, exercise.function(function)
    raise ValueError(
        f"function {function!r} is not graded; choose one of {sorted(all_function_names())}"
    )


def load_hidden_cases(path: str | os.PathLike) -> list[Case]:
    """Read hidden cases from a JSON file: a list of case objects (or ``{"cases": [...]}``).

    Each object names its ``function`` and sets the fields of that function's kind of case,
    e.g. ``{"function": "fgsm_targeted", "eps": 0.07, "seed": 11, "n": 16, "points": 2}``.
    """
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
    if not isinstance(item, dict) or "function" not in item:
        raise GradingError(f"{where}: expected an object with a key 'function'")
    try:
        _, graded = graded_function(str(item["function"]))
    except ValueError as err:
        raise GradingError(f"{where}: {err}") from None
    return graded.case_type.from_json(item, where)


def hidden_from_env() -> list[Case]:
    """The hidden cases of the file named by ``COURSE_ADV_HIDDEN_CASES``, if it is set."""
    path = os.environ.get(HIDDEN_ENV, "").strip()
    return load_hidden_cases(path) if path else []
