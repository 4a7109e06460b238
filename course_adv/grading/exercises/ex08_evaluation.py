"""Exercise 08 (``08_evaluating_robustness.ipynb``): one check of the checklist, and the
per-point worst case over attacks, by hand.

Notebook 08 calls ``course_adv.checklist`` and ``course_adv.evaluation`` for both; here the
student writes the bookkeeping behind them.

``monotone_check(eps, accuracy, tolerance) -> (passed, offending)``: Carlini et al. 2019's
"accuracy is non-increasing in eps". Sort the pairs by eps; wherever accuracy *rises* from one
eps to the next larger one by strictly more than ``tolerance``, the larger eps offends.
``passed`` is True when none does; ``offending`` lists them in increasing order (as floats).
The lists must not be changed. Cases use accuracies and tolerances that are multiples of
1/256, so every difference is exact in floating point and a rise of exactly ``tolerance``
(which passes) is a real test of strict against non-strict comparison. The diagnoses
recognise: the pairs compared in the order given (not sorted by eps), the lists sorted in
place (eps without its accuracy), falls flagged instead of rises, the tolerance with the
wrong sign, ``>=`` for ``>``, every accuracy compared with the first (clean) one, or with the
lowest so far, the smaller eps of a pair reported, and ``passed`` inverted.

``per_point_worst_case(masks) -> float``: ``masks`` maps attack names to boolean tensors of
shape (N,), True where the model is right under that attack; return the share of points
right under *every* attack (the mean over points of the minimum over attacks). The
diagnoses recognise: the minimum of the per-attack accuracies, their mean, the union (right
under *some* attack), the last attack only, a count instead of a share, and a percentage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_adv.grading.spec import (
    Case,
    Exercise,
    GradedFunction,
    Outcome,
    as_bool,
    as_float,
    bounded,
    error_feedback,
    one_of,
    scalar,
    type_name,
)

UNIT = 256  # accuracies and tolerances are multiples of 1/256: exact differences
ATOL = 1e-6  # float32 answers are right too; the mistakes differ by 1/5000 or more


# --------------------------------------------------------------------------- monotone_check


@dataclass(frozen=True, kw_only=True)
class CurveCase(Case):
    """A curve of accuracy over ``n_eps`` budgets, built from ``seed``.

    ``kind``: ``"monotone"`` (falls and plateaus only: passes), ``"rises"`` (a few rises above
    the tolerance among small ones below it), ``"exact"`` (a rise of exactly the tolerance,
    which passes, plus falls smaller than the tolerance), ``"creep"`` (rises each within the
    tolerance that add up to more, and one real rise). ``order``: the pairs sorted by eps or
    shuffled. The tolerance is ``tolerance_units / 256``.
    """

    seed: int = bounded(0, 2**31 - 1, integer=True)
    n_eps: int = bounded(3, 30, integer=True)
    tolerance_units: int = bounded(1, 32, integer=True)
    kind: str = one_of("monotone", "rises", "exact", "creep")
    order: str = one_of("sorted", "shuffled", default="sorted")

    @property
    def tolerance(self) -> float:
        return self.tolerance_units / UNIT

    def describe(self) -> str:
        return (
            f"{self.kind} curve, {self.n_eps} eps ({self.order}), "
            f"tolerance {self.tolerance_units}/{UNIT}"
        )

    def _units(self) -> tuple[list[int], list[int]]:
        """(eps in units of 1/100, accuracy in units of 1/256), sorted by eps."""
        rng = np.random.default_rng(self.seed)
        n, tol = self.n_eps, self.tolerance_units
        eps = sorted(rng.choice(np.arange(1, 101), size=n - 1, replace=False).tolist())
        big = max(1, 120 // n)  # keeps the whole curve inside [0, 256]
        deltas = [-int(rng.integers(0, big + 1)) for _ in range(n - 1)]
        spots = rng.permutation(n - 1).tolist()
        if self.kind == "rises":
            for i in spots[: max(1, (n - 1) // 4)]:
                deltas[i] = tol + int(rng.integers(1, 9))
            for i in spots[max(1, (n - 1) // 4) : max(2, (n - 1) // 2)]:
                deltas[i] = int(rng.integers(1, tol + 1))  # rises within the tolerance
        elif self.kind == "exact":
            deltas[spots[0]] = tol
            for i in spots[1 : max(2, (n - 1) // 2)]:
                deltas[i] = -int(rng.integers(1, tol + 1))  # falls within the tolerance
        elif self.kind == "creep":
            start = int(rng.integers(0, max(1, n - 4)))
            for i in range(start, min(start + 3, n - 1)):
                deltas[i] = int(rng.integers(max(1, tol // 2 + 1), tol + 1))
            others = [i for i in spots if not start <= i < start + 3]
            if others:
                deltas[others[0]] = tol + int(rng.integers(1, 9))
        values = np.cumsum([0, *deltas])
        values = values - values.min() + int(rng.integers(0, 20))
        values = np.minimum(values, UNIT)  # never needed at these sizes; a guard
        return [0, *eps], values.astype(int).tolist()

    def inputs(self) -> dict[str, Any]:
        eps, acc = self._units()
        order = list(range(len(eps)))
        if self.order == "shuffled":
            order = np.random.default_rng(self.seed + 1).permutation(len(eps)).tolist()
        return {
            "eps": [eps[i] / 100 for i in order],
            "accuracy": [acc[i] / UNIT for i in order],
            "tolerance": self.tolerance,
        }

    def save_inputs(self, inputs: dict[str, Any], stem: Path) -> None:
        pairs = np.array([inputs["eps"], inputs["accuracy"]], dtype=np.float64)
        np.save(f"{stem}.curve.npy", pairs, allow_pickle=False)

    def load_inputs(self, stem: Path) -> dict[str, Any]:
        pairs = np.load(f"{stem}.curve.npy", allow_pickle=False)
        return {
            "eps": [float(v) for v in pairs[0]],
            "accuracy": [float(v) for v in pairs[1]],
            "tolerance": self.tolerance,
        }


def _as_floats(value: Any) -> list[float] | None:
    if type(value) is list and all(as_float(v) is not None for v in value):
        return [float(v) for v in value]
    return None


def call_monotone(fn: Callable, case: CurveCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(eps, accuracy, tolerance)`` on copies of the lists; whether they changed."""
    eps, acc = list(inputs["eps"]), list(inputs["accuracy"])
    result = fn(eps, acc, inputs["tolerance"])
    facts: dict[str, Any] = {
        "type": type_name(result),
        "changed": eps != inputs["eps"] or acc != inputs["accuracy"],
    }
    if isinstance(result, tuple | list) and len(result) == 2:
        passed, offending = result
        if isinstance(passed, bool | np.bool_) or (
            isinstance(passed, torch.Tensor) and passed.numel() == 1
        ):
            facts["passed"] = bool(passed)
        try:
            facts["offending"] = [float(scalar(v)) for v in offending]
        except (TypeError, ValueError):
            pass
    return facts, {}


def _offending(
    eps: list[float],
    acc: list[float],
    tolerance: float,
    *,
    sort: bool = True,
    sign: int = 1,
    tol_sign: int = 1,
    strict: bool = True,
    against: str = "previous",
    report: str = "larger",
) -> list[float]:
    """The offending eps, and (with the options) those of the typical mistakes."""
    pairs = sorted(zip(eps, acc, strict=True)) if sort else list(zip(eps, acc, strict=True))
    found = []
    for i in range(1, len(pairs)):
        if against == "previous":
            base = pairs[i - 1][1]
        elif against == "first":
            base = pairs[0][1]
        else:  # the lowest so far
            base = min(a for _, a in pairs[:i])
        rise = sign * (pairs[i][1] - base)
        flagged = rise > tol_sign * tolerance if strict else rise >= tol_sign * tolerance
        if flagged:
            found.append(pairs[i][0] if report == "larger" else pairs[i - 1][0])
    return sorted(found) if sort else found


def _in_place_sorted(eps: list[float], acc: list[float], tolerance: float) -> list[float]:
    """``eps.sort()`` on its own: every eps now sits next to another eps's accuracy."""
    return _offending(sorted(eps), acc, tolerance, sort=False)


MONOTONE_MISTAKES: dict[str, tuple[Callable, str]] = {
    "unsorted": (
        lambda e, a, t: _offending(e, a, t, sort=False),
        "the pairs are compared in the order given; sort them by eps first (keep each "
        "accuracy with its eps), then compare each with the next larger eps.",
    ),
    "in_place": (
        _in_place_sorted,
        "eps was sorted on its own, so the accuracies no longer belong to their eps; sort "
        "the (eps, accuracy) pairs together, e.g. sorted(zip(eps, accuracy)).",
    ),
    "falls": (
        lambda e, a, t: _offending(e, a, t, sign=-1),
        "that flags accuracy *falling*, which is what an attack should do; flag where "
        "accuracy at the larger eps is higher than at the smaller one.",
    ),
    "tolerance_sign": (
        lambda e, a, t: _offending(e, a, t, tol_sign=-1),
        "the tolerance is applied the wrong way: a rise is allowed up to +tolerance, so flag "
        "accuracy[next] - accuracy[previous] > tolerance (not > -tolerance).",
    ),
    "non_strict": (
        lambda e, a, t: _offending(e, a, t, strict=False),
        "a rise of exactly the tolerance is flagged; it is allowed: flag only rises strictly "
        "greater than the tolerance (> rather than >=).",
    ),
    "first": (
        lambda e, a, t: _offending(e, a, t, against="first"),
        "each accuracy is compared with the first (clean) one; compare it with the accuracy "
        "at the next smaller eps.",
    ),
    "lowest": (
        lambda e, a, t: _offending(e, a, t, against="lowest"),
        "each accuracy is compared with the lowest one so far; the check compares neighbours: "
        "each eps with the next smaller one.",
    ),
    "smaller": (
        lambda e, a, t: _offending(e, a, t, report="smaller"),
        "the smaller eps of each offending pair is reported; report the larger one, where "
        "accuracy went up.",
    ),
}


def reference_monotone(case: CurveCase, inputs: dict[str, Any]) -> dict[str, Any]:
    args = (inputs["eps"], inputs["accuracy"], inputs["tolerance"])
    return {
        "offending": _offending(*args),
        "eps": list(inputs["eps"]),
        "mistakes": {name: fn(*args) for name, (fn, _) in MONOTONE_MISTAKES.items()},
    }


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(u - v) <= ATOL for u, v in zip(a, b, strict=True))


def score_monotone(case: CurveCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    if got.error is not None:
        return error_feedback("monotone_check", got.error)
    passed, offending = got.facts.get("passed"), got.facts.get("offending")
    if passed is None or offending is None:
        return [
            f"monotone_check() returned {got.type or 'nothing readable'}; return a pair "
            "(passed, offending): a bool and a list of the offending eps."
        ]
    problems = []
    if got.facts.get("changed"):
        problems.append("monotone_check() changed the lists it was given; sort a copy.")
    want = ref["offending"]
    if _same(offending, want):
        if passed != (not want):
            problems.append(
                f"passed is {passed} but {len(want)} eps offend: passed must be True exactly "
                "when the list of offending eps is empty."
            )
        return problems
    if _same(sorted(offending), want):
        return [*problems, "the right eps, in the wrong order: list them in increasing eps."]
    for name, (_, message) in MONOTONE_MISTAKES.items():
        if _same(offending, ref["mistakes"][name]) or _same(
            sorted(offending), sorted(ref["mistakes"][name])
        ):
            return [*problems, message]
    shown = ", ".join(f"{e:g}" for e in want) or "none"
    return [
        *problems,
        f"offending eps {[round(e, 4) for e in offending]}, expected: {shown}. Hint: sort the "
        "pairs by eps; a larger eps offends when its accuracy exceeds the previous one's by "
        "strictly more than the tolerance.",
    ]


# --------------------------------------------------------------------------- per_point_worst_case

ATTACK_NAMES = (
    "FGSM",
    "PGD-40",
    "PGD-40 CW",
    "PGD-80",
    "transfer PGD",
    "noise",
    "Square",
    "APGD-T",
)


@dataclass(frozen=True, kw_only=True)
class MaskCase(Case):
    """Per-point correctness of ``n`` points under ``attacks`` attacks, built from ``seed``.

    Each point has a hardness; each attack breaks it with a probability that falls with the
    hardness and differs between attacks, so attacks break overlapping, different points.
    """

    seed: int = bounded(0, 2**31 - 1, integer=True)
    n: int = bounded(1, 5000, integer=True)
    attacks: int = bounded(1, len(ATTACK_NAMES), integer=True)

    def describe(self) -> str:
        attacks = "attack" if self.attacks == 1 else "attacks"
        return f"{self.attacks} {attacks}, {self.n} points"

    def inputs(self) -> dict[str, Any]:
        rng = np.random.default_rng(self.seed)
        hardness = rng.uniform(0, 1, size=self.n)
        strength = rng.uniform(0.0, 0.3, size=(self.attacks, 1))
        p_right = np.clip(0.25 + 0.85 * hardness[None] - strength, 0, 1)
        right = rng.uniform(0, 1, size=(self.attacks, self.n)) < p_right
        return {
            name: torch.from_numpy(row.copy())
            for name, row in zip(ATTACK_NAMES, right, strict=False)
        }

    def save_inputs(self, inputs: dict[str, Any], stem: Path) -> None:
        matrix = torch.stack(list(inputs.values())).numpy()
        np.save(f"{stem}.masks.npy", matrix, allow_pickle=False)

    def load_inputs(self, stem: Path) -> dict[str, Any]:
        matrix = np.load(f"{stem}.masks.npy", allow_pickle=False)
        return {
            name: torch.from_numpy(row.copy())
            for name, row in zip(ATTACK_NAMES, matrix, strict=False)
        }


def call_worst_case(fn: Callable, case: MaskCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(masks)`` on a copy of the dict and its tensors; whether any tensor changed."""
    masks = {name: mask.clone() for name, mask in inputs.items()}
    result = fn(masks)
    changed = set(masks) != set(inputs) or any(
        not torch.equal(masks[k], inputs[k]) for k in inputs if k in masks
    )
    return {"type": type_name(result), "value": scalar(result), "changed": changed}, {}


def reference_worst_case(case: MaskCase, inputs: dict[str, Any]) -> dict[str, Any]:
    matrix = torch.stack(list(inputs.values())).double()
    means = matrix.mean(1)
    return {
        "ref": matrix.min(0).values.mean().item(),
        "n": matrix.shape[1],
        "mistakes": {
            "min_of_means": means.min().item(),
            "mean_of_means": means.mean().item(),
            "union": matrix.max(0).values.mean().item(),
            "last": means[-1].item(),
        },
    }


WORST_MESSAGES = {
    "min_of_means": "that is the minimum over attacks of the per-attack accuracies; a point "
    "broken by a weaker attack still counts there. Take the minimum over attacks per point "
    "first (right under every attack), then the mean over points.",
    "mean_of_means": "that is the mean of the per-attack accuracies; the worst case asks, per "
    "point, whether *every* attack failed, then averages over points.",
    "union": "that counts points right under *some* attack (a best case); a point is robust "
    "only when it is right under every attack (all, not any).",
    "last": "that is the accuracy under the last attack only; combine all of them, point by point.",
}


def score_worst_case(case: MaskCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    if got.error is not None:
        return error_feedback("per_point_worst_case", got.error)
    value = got.facts.get("value")
    if value is None:
        return [
            f"per_point_worst_case() returned {got.type or 'nothing readable'}; return a number "
            "(a Python float, or a one-element tensor)."
        ]
    problems = []
    if got.facts.get("changed"):
        problems.append("per_point_worst_case() changed the masks it was given.")
    want = ref["ref"]
    if abs(value - want) <= ATOL:
        return problems
    if abs(value - 100 * want) <= 100 * ATOL and want > 0:
        return [*problems, "that is a percentage; return the share, a number in [0, 1]."]
    if abs(value - want * ref["n"]) <= ATOL and ref["n"] > 1:
        return [*problems, "that is the number of robust points; divide by the number of points."]
    for name, message in WORST_MESSAGES.items():
        if abs(value - ref["mistakes"][name]) <= ATOL:
            return [*problems, message]
    return [
        *problems,
        f"got {value:.6g}, expected {want:.6g}. Hint: stack the masks into one (attacks, N) "
        "tensor; a point counts when it is True in every row; return the share of such points.",
    ]


# --------------------------------------------------------------------------- the exercise

EXERCISE = Exercise(
    name="08_evaluating_robustness",
    functions=(
        GradedFunction(
            name="monotone_check",
            case_type=CurveCase,
            call=call_monotone,
            reference=reference_monotone,
            score=score_monotone,
            facts={
                "changed": as_bool,
                "passed": as_bool,
                "offending": _as_floats,
            },
            course_answers=("course_adv.checklist.check_monotone_in_eps",),
        ),
        GradedFunction(
            name="per_point_worst_case",
            case_type=MaskCase,
            call=call_worst_case,
            reference=reference_worst_case,
            score=score_worst_case,
            facts={
                "value": as_float,
                "changed": as_bool,
            },
            course_answers=(
                "course_adv.evaluation.worst_case_accuracy",
                "course_adv.evaluation.robust_mask",
            ),
        ),
    ),
    cases=(
        CurveCase(function="monotone_check", seed=0, n_eps=8, tolerance_units=3, kind="rises", points=2),
        CurveCase(function="monotone_check", seed=1, n_eps=6, tolerance_units=4, kind="monotone", points=1),
        CurveCase(function="monotone_check", seed=2, n_eps=7, tolerance_units=5, kind="exact", points=2),
        CurveCase(function="monotone_check", seed=3, n_eps=9, tolerance_units=4, kind="creep", points=1),
        CurveCase(function="monotone_check", seed=4, n_eps=10, tolerance_units=2, kind="rises", order="shuffled", points=2),
        MaskCase(function="per_point_worst_case", seed=0, n=1000, attacks=4, points=2),
        MaskCase(function="per_point_worst_case", seed=1, n=200, attacks=6, points=2),
        MaskCase(function="per_point_worst_case", seed=2, n=37, attacks=2, points=1),
        MaskCase(function="per_point_worst_case", seed=3, n=500, attacks=1, points=1),
    ),
)  # fmt: skip
