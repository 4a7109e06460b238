"""Answer integrity: catch a graded function that calls the course's own implementation.

Before any submitted code runs, the child replaces the *code* of each course function that
answers an exercise (``GradedFunction.course_answers``, such as ``course_adv.attacks.fgsm``)
with a stand-in that records the call and then runs the original code. Because the function
object itself is changed, not a name that points to it, every way of reaching it records the
call: ``from course_adv.attacks import fgsm``, ``course_adv.training.objectives.attacks.fgsm``,
``importlib.import_module("course_adv." + "attacks")``, ``pgd.__globals__["fgsm"]``, a
reference kept from before. The child clears the record before each graded call and reports
what was called during it; the grader gives those cases nothing and flags the notebook.
"""

from __future__ import annotations

import importlib
import types
import warnings
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["resolve", "instrument"]

_MARK = "course-adv-stand-in"


def resolve(dotted: str) -> Callable:
    """The function named ``"package.module.function"``."""
    module, _, name = dotted.rpartition(".")
    function = getattr(importlib.import_module(module), name)
    if not isinstance(function, types.FunctionType) or function.__closure__:
        raise TypeError(f"{dotted} must be a plain module-level function to be instrumented")
    return function


def _stand_in_code(record: Callable[[tuple, dict], Any]) -> types.CodeType:
    """Code that calls ``record(args, kwargs)`` and returns its value, holding ``record`` as a
    constant (so no global name of the function's module can switch it off)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # calling a str constant, replaced below
        template = compile(
            f"def f(*args, **kwargs):\n    return {_MARK!r}(args, kwargs)", "", "exec"
        )
    code = next(c for c in template.co_consts if isinstance(c, types.CodeType))
    return code.replace(co_consts=tuple(record if c == _MARK else c for c in code.co_consts))


def instrument(names: Iterable[str]) -> set[str]:
    """Make every function in ``names`` record its calls; return the set the calls go into.

    A name that does not resolve is passed over here, so grading still runs; the test suite
    checks that every spec's names resolve.
    """
    called: set[str] = set()
    for dotted in names:
        try:
            function = resolve(dotted)
        except (ImportError, AttributeError, TypeError):
            continue
        original = types.FunctionType(
            function.__code__, function.__globals__, function.__name__, function.__defaults__
        )
        original.__kwdefaults__ = function.__kwdefaults__

        def record(args: tuple, kwargs: dict, dotted=dotted, original=original) -> Any:
            called.add(dotted)
            return original(*args, **kwargs)

        function.__code__ = _stand_in_code(record)
    return called
