"""The vocabulary an exercise spec is written in: cases, graded functions, outcomes.

An exercise (one file under ``course_adv/grading/exercises/``) defines ``EXERCISE``, an
:class:`Exercise`: the functions a student writes (:class:`GradedFunction`) and the public
cases they are graded on. A graded function says, for its own kind of case,

- ``call(fn, case, inputs)``: how to call the student's function (in the grading child and in
  ``check()``), returning plain facts (JSON: numbers, strings, lists of ints) and plain float
  arrays;
- ``facts`` and ``arrays``: what may come back, each fact with the validator that keeps it
  only when it has exactly the right type;
- ``reference(case, inputs)``: what a right answer gives, computed in the grader's process;
- ``score(case, reference, outcome)``: what is wrong with an answer (one line per problem, each
  with a hint), empty when it is right;
- ``course_answers``: the course's own functions that compute the same thing
  (``"course_adv.attacks.fgsm"``): a call that reaches one of them earns nothing and is flagged
  (see ``integrity``).

A case is a frozen dataclass derived from :class:`Case`: its fields are the case's settings, and
the ``bounded``/``one_of`` fields say what a hidden case read from JSON may set them to. It
makes its own inputs (``inputs``), writes them for the child (``save_inputs``) and reads them
back there (``load_inputs``, before any submitted code runs). The engine knows nothing else
about an exercise.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "GradingError",
    "Case",
    "GradedFunction",
    "Exercise",
    "Outcome",
    "bounded",
    "one_of",
    "as_float",
    "as_bool",
    "as_ints",
    "as_str",
    "type_name",
    "as_array",
    "scalar",
    "tensor_answer",
    "clean",
    "verb",
    "error_feedback",
]


class GradingError(Exception):
    """The grader itself cannot run: a bad path, an unknown exercise, a bad hidden-cases file."""


# --------------------------------------------------------------------------- cases


def bounded(low: float, high: float, *, integer: bool = False, default: Any = dataclasses.MISSING):
    """A case field whose JSON value must be a number (an integer) in ``[low, high]``."""
    kind = "an integer" if integer else "a number"

    def check(value: Any) -> Any:
        if type(value) not in ((int,) if integer else (int, float)) or not low <= value <= high:
            raise ValueError(f"must be {kind} in [{low:g}, {high:g}]")
        return value if integer else float(value)

    return field(default=default, metadata={"check": check})


def one_of(*choices: str, default: Any = dataclasses.MISSING):
    """A case field whose JSON value must be one of ``choices``."""

    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"must be one of {choices}, got {value!r}")
        return value

    return field(default=default, metadata={"check": check})


@dataclass(frozen=True, kw_only=True)
class Case:
    """One graded call of ``function``, worth ``points``; hidden cases report only pass or fail.

    Subclasses add the settings of their kind of case and implement the four methods below.
    """

    function: str
    points: float = bounded(0, 1000)
    hidden: bool = False

    def describe(self) -> str:
        """The case in a few words, for its name in reports (``"linear model, eps=0.1"``)."""
        raise NotImplementedError

    def inputs(self) -> dict[str, Any]:
        """The case's inputs (models, tensors, helpers), the same for the same case."""
        raise NotImplementedError

    def save_inputs(self, inputs: Mapping[str, Any], stem: Path) -> None:
        """Write ``inputs`` as plain data (no pickles) to files named ``stem.*``."""
        raise NotImplementedError

    def load_inputs(self, stem: Path) -> dict[str, Any]:
        """Read back what ``save_inputs`` wrote (in the child, before any submitted code)."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The fields as JSON, from which ``type(self)(**settings)`` rebuilds the case."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, item: Mapping[str, Any], where: str) -> Case:
        """A hidden case from a JSON object, every field checked; ``where`` prefixes errors."""
        checked = {f.name: f for f in dataclasses.fields(cls) if "check" in f.metadata}
        required = {"function"} | {
            name
            for name, f in checked.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        unknown, missing = set(item) - set(checked) - {"function"}, required - set(item)
        if unknown or missing:
            raise GradingError(
                f"{where}: unknown keys {sorted(unknown)}, missing {sorted(missing)}"
            )
        values = {}
        for name, value in item.items():
            if name == "function":
                continue
            try:
                values[name] = checked[name].metadata["check"](value)
            except ValueError as err:
                raise GradingError(f"{where}: {name} {err}") from None
        return cls(function=item["function"], hidden=True, **values)


# --------------------------------------------------------------------------- what comes back


def as_float(value: Any) -> float | None:
    """A JSON number as a float (not a bool, not an int too big for a float), else None."""
    if type(value) is int:
        return float(value) if abs(value) < 2**53 else None
    return value if type(value) is float else None


def as_bool(value: Any) -> bool | None:
    return value if type(value) is bool else None


def as_ints(value: Any) -> list[int] | None:
    """A JSON list of integers, else None."""
    if type(value) is list and all(type(item) is int for item in value):
        return value
    return None


def as_str(value: Any) -> str | None:
    return clean(value) if type(value) is str else None


@dataclass
class Outcome:
    """What came back from one call of a submitted function, validated to plain types.

    ``facts`` and ``arrays`` hold every name the graded function declares, None where nothing
    usable came back; ``answers_called``, the course's own answers the call reached.
    """

    error: str | None = None
    type: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray | None] = field(default_factory=dict)
    answers_called: list[str] = field(default_factory=list)


def type_name(value: Any) -> str:
    """``"torch.Tensor"``, ``"builtins.float"``: the exact type, subclasses told apart."""
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def as_array(tensor: torch.Tensor) -> np.ndarray:
    """A plain numpy copy of a tensor."""
    return np.array(tensor.detach().cpu().numpy(), copy=True)


def tensor_answer(
    result: Any, x_after: torch.Tensor
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Facts and arrays for a call that should return a tensor: the type returned, whether it
    is still attached to the autograd graph, the array (``out``), and ``x_after``, the copy of
    the input the call was given, so that a change in place shows."""
    facts: dict[str, Any] = {"type": type_name(result)}
    arrays = {"x_after": as_array(x_after)}
    if isinstance(result, torch.Tensor):
        facts["requires_grad"] = bool(result.requires_grad)
        arrays["out"] = as_array(result)
    return facts, arrays


def scalar(value: Any) -> float | None:
    """A returned number (Python, numpy or one-element tensor) as a float; None otherwise."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.detach().cpu().item())
    return None


# --------------------------------------------------------------------------- exercises


Call = Callable[[Callable, Any, dict[str, Any]], tuple[dict[str, Any], dict[str, np.ndarray]]]


@dataclass(frozen=True)
class GradedFunction:
    """A function the student writes, with how to call, check and score it (module docstring)."""

    name: str
    case_type: type[Case]
    call: Call
    reference: Callable[[Any, dict[str, Any]], dict[str, Any]]
    score: Callable[[Any, dict[str, Any], Outcome], list[str]]
    facts: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    arrays: tuple[str, ...] = ()
    course_answers: tuple[str, ...] = ()

    def outcome(self, info: Any, arrays: Mapping[str, np.ndarray | None]) -> Outcome:
        """An Outcome from the child's untrusted facts, keeping only well-typed fields."""
        if type(info) is not dict:
            return Outcome(error="gave no result: the notebook ended or broke the grading process")
        called = info.get("course_answers_called")
        return Outcome(
            error=as_str(info.get("error")),
            type=as_str(info.get("type")),
            facts={key: check(info.get(key)) for key, check in self.facts.items()},
            arrays={key: arrays.get(key) for key in self.arrays},
            answers_called=[n for n in self.course_answers if type(called) is list and n in called],
        )


@dataclass(frozen=True)
class Exercise:
    """An exercise notebook (``NN_name.ipynb``): the functions a student writes, public cases."""

    name: str
    functions: tuple[GradedFunction, ...]
    cases: tuple[Case, ...]

    def __post_init__(self) -> None:
        for case in self.cases:
            kind = self.function(case.function).case_type
            if type(case) is not kind:
                raise TypeError(f"{self.name}: a case of {case.function} must be a {kind.__name__}")

    def function(self, name: str) -> GradedFunction:
        for graded in self.functions:
            if graded.name == name:
                return graded
        raise ValueError(f"{self.name} grades {[f.name for f in self.functions]}, not {name!r}")

    @property
    def function_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.functions)

    @property
    def max_points(self) -> float:
        return sum(case.points for case in self.cases)


# --------------------------------------------------------------------------- feedback text


def clean(text: str, limit: int = 400) -> str:
    """Untrusted text made safe to print: no control characters (terminal escapes), short."""
    text = "".join(c if c.isprintable() else " " for c in text[: limit * 2]).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verb(error: str) -> str:
    """ "raised ValueError: ..." for an exception; a message like "ran past ..." as it is."""
    return f"raised {error}" if re.match(r"[A-Z]\w*(: |$| \()", error) else error


def error_feedback(function: str, error: str) -> list[str]:
    """Feedback for a call that raised or did not run."""
    if "NotImplementedError" in error:
        return [
            f"{function}() is not written yet: replace its `raise NotImplementedError(...)` "
            "line with your code."
        ]
    return [f"{function}() {verb(error)}"]
