"""Exercise 02 (``02_fgsm.ipynb``): write FGSM, then the accuracy-under-attack loop.

``fgsm(model, x, y, eps)`` is compared pixel by pixel with the course's FGSM (Goodfellow et al.
2015, eq. (1): ``clip(x + eps * sign(grad_x L(theta, x, y)), 0, 1)``), on the linear model and
the small CNN, in float32 and float64. ``accuracy_under_attack(model, x, y, eps, attack,
batch_size)`` is given an attack of the grader's own as its ``attack`` (not the student's
``fgsm``, so a mistake there costs points once, where it is; and not the course's FGSM, so the
notebook never holds an answer it could reuse) and must return robust accuracy: the share of *all*
points classified correctly under the attack (COURSE.md section 2), attacking batches of at
most ``batch_size`` points, each point once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_adv import attacks
from course_adv.grading.digits import DigitCase, class_means, one_thread
from course_adv.grading.spec import (
    Exercise,
    GradedFunction,
    Outcome,
    as_array,
    as_bool,
    as_float,
    as_ints,
    bounded,
    error_feedback,
    scalar,
    tensor_answer,
    type_name,
)

ATOL = 1e-5  # a pixel agrees with the reference within this
MISMATCH_ALLOWED = 0.005  # share of pixels that may differ (float noise in near-zero gradients)


# --------------------------------------------------------------------------- fgsm


def call_fgsm(fn: Callable, case: DigitCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(model, x, y, eps)`` on copies of x and y; x's copy comes back as ``x_after``."""
    x, y = inputs["x"].clone(), inputs["y"].clone()
    return tensor_answer(fn(inputs["model"], x, y, case.eps), x)


def reference_fgsm(case: DigitCase, inputs: dict[str, Any]) -> dict[str, Any]:
    """The course's FGSM (``ref``) and its mirror image, a step down the loss (``descent``)."""
    model, x, y = inputs["model"], inputs["x"], inputs["y"]
    with one_thread():
        return {
            "x": x.numpy(),
            "ref": attacks.fgsm(model, x, y, case.eps).numpy(),
            "descent": attacks.fgsm(model, x, y, case.eps, targeted=True).numpy(),
        }


def score_fgsm(case: DigitCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    """Problems with an FGSM answer (empty when it is right), each with a hint."""
    if got.error is not None:
        return error_feedback("fgsm", got.error)
    out, x_after = got.arrays.get("out"), got.arrays.get("x_after")
    if got.type != "torch.Tensor" or out is None:
        return [f"fgsm() returned {got.type or 'nothing readable'}; return a plain torch.Tensor."]
    x = ref["x"]
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
    if x_after is None or x_after.shape != x.shape or not np.array_equal(x_after, x):
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
    if got.facts.get("requires_grad"):
        problems.append("x_adv is still attached to the autograd graph; return x_adv.detach().")
    wrong = ~np.isclose(out, ref["ref"], atol=ATOL)
    if wrong.mean() > MISMATCH_ALLOWED and not problems:
        problems.append(diagnose_fgsm(case, x, out, ref, wrong))
    return problems


def diagnose_fgsm(
    case: DigitCase, x: np.ndarray, out: np.ndarray, ref: dict[str, Any], wrong: np.ndarray
) -> str:
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


# --------------------------------------------------------------------------- accuracy_under_attack


def toward_nearest_class(means: torch.Tensor) -> Callable:
    """The attack the loop is given: with m_c the mean training digit of class c and t the class
    whose mean is nearest to m_y, ``clip(x + eps * sign(m_t - m_y), 0, 1)``. It needs no
    gradient, answers no exercise, and is strong on the cases' models (on the linear model it
    is the best targeted step); a notebook gains nothing by keeping it."""
    distance = torch.cdist(means, means).fill_diagonal_(float("inf"))
    nearest = distance.argmin(1)

    def attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float):
        step = torch.sign(means[nearest[y]] - means[y]).to(x.dtype).view_as(x)
        return (x + eps * step).clamp(0, 1).detach()

    return attack


@dataclass(frozen=True, kw_only=True)
class AccuracyCase(DigitCase):
    """A digit case for the loop: the attack it is given, and the batch size it must keep."""

    batch_size: int = bounded(1, 10**6, integer=True, default=100)

    def describe(self) -> str:
        return f"{super().describe()}, batch_size={self.batch_size}"

    def inputs(self) -> dict[str, Any]:
        means = class_means()
        return {**super().inputs(), "means": means, "attack": toward_nearest_class(means)}

    def save_inputs(self, inputs: dict[str, Any], stem: Path) -> None:
        super().save_inputs(inputs, stem)
        np.save(f"{stem}.means.npy", inputs["means"].numpy(), allow_pickle=False)

    def load_inputs(self, stem: Path) -> dict[str, Any]:
        means = torch.from_numpy(np.load(f"{stem}.means.npy", allow_pickle=False))
        return {**super().load_inputs(stem), "means": means, "attack": toward_nearest_class(means)}


def call_accuracy(fn: Callable, case: AccuracyCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(model, x, y, eps, attack, batch_size)``, counting the batch sizes the attack sees."""
    x, y, attack = inputs["x"].clone(), inputs["y"].clone(), inputs["attack"]
    sizes: list[int] = []

    def counted_attack(model_, x_batch, y_batch, eps_):
        sizes.append(int(len(x_batch)))
        return attack(model_, x_batch, y_batch, eps_)

    result = fn(inputs["model"], x, y, case.eps, counted_attack, case.batch_size)
    facts = {"type": type_name(result), "value": scalar(result), "batch_sizes": sizes}
    return facts, {"x_after": as_array(x)}


def reference_accuracy(case: AccuracyCase, inputs: dict[str, Any]) -> dict[str, Any]:
    """Robust accuracy (correct under attack over all points), the clean accuracy, and a
    tolerance of one point per near-tie in the logits (float noise may flip those)."""
    model, x, y, attack = inputs["model"], inputs["x"], inputs["y"], inputs["attack"]
    correct, clean, ties = 0, 0, 0
    with one_thread(), torch.no_grad():
        for start in range(0, len(x), case.batch_size):
            xb, yb = x[start : start + case.batch_size], y[start : start + case.batch_size]
            with torch.enable_grad():
                x_adv = attack(model, xb, yb, case.eps)
            logits = model(x_adv)
            correct += int((logits.argmax(1) == yb).sum())
            clean += int((model(xb).argmax(1) == yb).sum())
            top2 = logits.topk(2, dim=1).values
            ties += int((top2[:, 0] - top2[:, 1] < 1e-4).sum())
    n = len(x)
    return {"x": x.numpy(), "ref": correct / n, "clean": clean / n, "tol": (ties + 0.5) / n, "n": n}


def score_accuracy(case: AccuracyCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    """Problems with an accuracy-under-attack answer (empty when it is right)."""
    if got.error is not None:
        return error_feedback("accuracy_under_attack", got.error)
    value, n = got.facts.get("value"), ref["n"]
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
    sizes = got.facts.get("batch_sizes")
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
    x_after = got.arrays.get("x_after")
    if x_after is not None and not np.array_equal(x_after, ref["x"]):
        problems.append("accuracy_under_attack() changed its input x in place.")
    return problems


# --------------------------------------------------------------------------- the exercise

EXERCISE = Exercise(
    name="02_fgsm",
    functions=(
        GradedFunction(
            name="fgsm",
            case_type=DigitCase,
            call=call_fgsm,
            reference=reference_fgsm,
            score=score_fgsm,
            facts={"requires_grad": as_bool},
            arrays=("out", "x_after"),
            course_answers=(
                "course_adv.attacks.fgsm",
                "course_adv.attacks.bim",
                "course_adv.attacks.pgd",
            ),
        ),
        GradedFunction(
            name="accuracy_under_attack",
            case_type=AccuracyCase,
            call=call_accuracy,
            reference=reference_accuracy,
            score=score_accuracy,
            facts={"value": as_float, "batch_sizes": as_ints},
            arrays=("x_after",),
            course_answers=(
                "course_adv.evaluation.robust_mask",
                "course_adv.evaluation.accuracy_vs_eps",
            ),
        ),
    ),
    cases=(
        DigitCase(function="fgsm", eps=0.1, seed=0, n=8, points=2, model="cnn"),
        DigitCase(function="fgsm", eps=0.25, seed=1, n=8, points=2, model="softmax"),
        DigitCase(function="fgsm", eps=0.05, seed=2, n=4, points=1, model="cnn", dtype="float64"),
        DigitCase(function="fgsm", eps=0.3, seed=3, n=1, points=1, model="softmax"),
        AccuracyCase(function="accuracy_under_attack", eps=0.0, seed=4, n=100, points=1, batch_size=32),
        AccuracyCase(function="accuracy_under_attack", eps=0.1, seed=5, n=100, points=2, batch_size=32),
        AccuracyCase(function="accuracy_under_attack", eps=0.05, seed=6, n=60, points=1, batch_size=128),
    ),
)  # fmt: skip
