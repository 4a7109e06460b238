"""Exercise 04 (``04_iterative_attacks.ipynb``): PGD in the l2 norm.

Notebook 04 writes the l-inf attack (BIM, PGD) from scratch; the exercise asks for the other
norm of Madry et al. 2018 (section 2.1, "projected gradient descent" for any norm ball), from
``x_0 = x`` so that the answer is deterministic::

    x_{t+1} = clip_[0,1]( x + Proj_eps( x_t + alpha * g_t / ||g_t||_2 - x ) ),
    Proj_eps(delta) = delta * min(1, eps / ||delta||_2),

with ``g_t`` the gradient of the (summed) cross-entropy at ``x_t`` and every norm taken per
example. ``pgd_l2(model, x, y, eps, alpha, steps)`` is compared with
``course_adv.attacks.pgd(..., norm="2", random_start=False)``; the diagnoses recognise the
l-inf step, a missing projection or clip, and a norm taken over the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from course_adv import attacks
from course_adv.grading.digits import DigitCase, one_thread
from course_adv.grading.spec import (
    Exercise,
    GradedFunction,
    Outcome,
    as_bool,
    bounded,
    error_feedback,
    tensor_answer,
)

ATOL = 1e-4  # a pixel agrees with the reference within this (a few steps of float noise)
MISMATCH_ALLOWED = 0.005  # share of pixels that may differ


@dataclass(frozen=True, kw_only=True)
class L2Case(DigitCase):
    """Digits, a model, the l2 radius ``eps``, the step ``alpha`` and the number of steps."""

    eps: float = bounded(0, 10)
    alpha: float = bounded(1e-4, 10)
    steps: int = bounded(1, 50, integer=True)

    def describe(self) -> str:
        return f"{super().describe()} (l2), alpha={self.alpha:g}, {self.steps} steps"


def call_pgd_l2(fn: Callable, case: L2Case, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(model, x, y, eps, alpha, steps)`` on copies; x's copy comes back as ``x_after``."""
    x, y = inputs["x"].clone(), inputs["y"].clone()
    result = fn(inputs["model"], x, y, case.eps, case.alpha, case.steps)
    return tensor_answer(result, x)


def _variant(model, x, y, eps, alpha, steps, *, linf=False, project=True, clip=True, batch=False):
    """The l2 PGD loop with one thing changed: the mistakes the diagnoses recognise."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        if linf:
            step = grad.sign()
        elif batch:
            step = grad / grad.norm().clamp_min(1e-12)
        else:
            step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = x_adv.detach() + alpha * step - x
        if project:
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            delta = delta * (eps / norms).clamp(max=1)
        x_adv = (x + delta).clamp(0, 1) if clip else x + delta
    return x_adv.detach()


def reference_pgd_l2(case: L2Case, inputs: dict[str, Any]) -> dict[str, Any]:
    """The course's l2 PGD from x, and the iterates of the typical mistakes."""
    model, x, y = inputs["model"], inputs["x"], inputs["y"]
    args = (model, x, y, case.eps, case.alpha, case.steps)
    with one_thread():
        ref = attacks.pgd(*args, norm="2", random_start=False)
        mistakes = {
            "linf": _variant(*args, linf=True),
            "no_projection": _variant(*args, project=False),
            "batch_norm": _variant(*args, batch=True),
        }
    return {"x": x.numpy(), "ref": ref.numpy(), **{k: v.numpy() for k, v in mistakes.items()}}


def _matches(out: np.ndarray, target: np.ndarray) -> bool:
    return bool(np.mean(~np.isclose(out, target, atol=ATOL)) <= MISMATCH_ALLOWED)


def score_pgd_l2(case: L2Case, ref: dict[str, Any], got: Outcome) -> list[str]:
    """Problems with an l2 PGD answer (empty when it is right), each with a hint."""
    if got.error is not None:
        return error_feedback("pgd_l2", got.error)
    out, x = got.arrays.get("out"), ref["x"]
    if got.type != "torch.Tensor" or out is None:
        return [f"pgd_l2() returned {got.type or 'nothing readable'}; return a torch.Tensor."]
    if out.shape != x.shape:
        return [f"x_adv has shape {tuple(out.shape)}; keep x's shape {tuple(x.shape)}."]
    if not np.isfinite(out).all():
        return ["x_adv contains NaN or infinity."]
    problems = []
    x_after = got.arrays.get("x_after")
    if x_after is None or not np.array_equal(x_after, x):
        problems.append("pgd_l2() changed its input x in place; work on a copy.")
    if got.facts.get("requires_grad"):
        problems.append("x_adv is attached to the autograd graph; return x_adv.detach().")
    if out.dtype != x.dtype:
        problems.append(f"x_adv has dtype {out.dtype}; return x's dtype {x.dtype}.")
    out = out.astype(x.dtype)
    norms = np.linalg.norm((out - x).reshape(len(x), -1), axis=1)
    if out.min() < -ATOL or out.max() > 1 + ATOL:
        problems.append("x_adv leaves [0, 1]: clip x + delta to [0, 1] after the projection.")
    if norms.max() > case.eps + ATOL:
        problems.append(
            f"||x_adv - x||_2 reaches {norms.max():.4g}, more than eps = {case.eps:g}"
            + (
                ": every step must be projected back onto the l2 ball."
                if _matches(out, ref["no_projection"])
                else ". Project delta = x_adv - x: delta * min(1, eps / ||delta||_2), per example."
            )
        )
    if problems or _matches(out, ref["ref"]):
        return problems
    if _matches(out, ref["linf"]):
        return ["that is the l-inf step, alpha * sign(grad); l2 PGD steps along grad / ||grad||_2."]
    if _matches(out, ref["batch_norm"]):
        return [
            "the gradient is divided by the norm of the whole batch; divide each example's "
            "gradient by its own norm (flatten(1), then norm(dim=1))."
        ]
    wrong = np.mean(~np.isclose(out, ref["ref"], atol=ATOL))
    return [
        f"x_adv differs from l2 PGD on {wrong:.0%} of the pixels. Hint: from x_0 = x, each of "
        "the steps is: the gradient of the summed cross-entropy at x_t, a step of length alpha "
        "along it, the projection of x_t - x onto the eps-ball, then the clip to [0, 1]."
    ]


EXERCISE = Exercise(
    name="04_iterative_attacks",
    functions=(
        GradedFunction(
            name="pgd_l2",
            case_type=L2Case,
            call=call_pgd_l2,
            reference=reference_pgd_l2,
            score=score_pgd_l2,
            facts={"requires_grad": as_bool},
            arrays=("out", "x_after"),
            course_answers=(
                "course_adv.attacks.pgd",
                "course_adv.attacks.bim",
                "course_adv.attacks.fgsm",
            ),
        ),
    ),
    cases=(
        L2Case(function="pgd_l2", eps=1.5, alpha=0.5, steps=5, seed=0, n=8, points=3, model="cnn"),
        L2Case(function="pgd_l2", eps=2.0, alpha=0.4, steps=8, seed=1, n=8, points=3),
        L2Case(function="pgd_l2", eps=0.5, alpha=0.3, steps=4, seed=2, n=4, points=2, model="cnn", dtype="float64"),
        L2Case(function="pgd_l2", eps=3.0, alpha=1.0, steps=6, seed=3, n=1, points=2),
    ),
)  # fmt: skip
