"""Exercise 01 (``01_linearity.ipynb``): a linear model's exact worst case for a pair of classes.

For a linear multi-class model with logits ``z = W x + b``, moving a digit of class ``y``
towards a target class ``t`` means raising the gap ``z_t - z_y = (w_t - w_y)^T x + b_t - b_y``.
Within the l-inf ball of radius eps and the pixel box [0, 1] the problem splits pixel by pixel
(Goodfellow, Shlens & Szegedy 2015, section 3), and its exact solution is

    eta = clip(x + eps * sign(w_t - w_y), 0, 1) - x,

which raises the gap by ``(w_t - w_y)^T eta`` (at most ``eps * ||w_t - w_y||_1``, less where
clipping stops a pixel). The student writes

- ``worst_case_perturbation(W, x, y, t, eps)``: eta for a batch, each row with its own pair;
  graded on feasibility (in the ball and the box) and optimality (its gain equals the best
  gain), so any optimal answer passes, ties included;
- ``gap_change(W, eta, y, t)``: the change of ``z_t - z_y`` that eta causes, one per row;
  given the grader's eta, which clipping has shortened, so the unclipped bound
  ``eps * ||w_t - w_y||_1`` is not the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_adv.grading.digits import DigitCase, one_thread
from course_adv.grading.spec import (
    Exercise,
    GradedFunction,
    Outcome,
    as_array,
    as_bool,
    error_feedback,
    one_of,
    tensor_answer,
    type_name,
)

RTOL = 1e-4  # a gain agrees with the best one within this (relative to eps * ||w_t - w_y||_1)


@dataclass(frozen=True, kw_only=True)
class PairCase(DigitCase):
    """Digits, the linear model's weights ``W`` (10 x 784) and a target class ``t != y`` each."""

    model: str = one_of("softmax", default="softmax")

    def inputs(self) -> dict[str, Any]:
        base = super().inputs()
        generator = torch.Generator().manual_seed(self.seed + 1)
        shift = torch.randint(1, 10, base["y"].shape, generator=generator)
        weight = base["model"].linear.weight.detach().clone()
        return {"W": weight, "x": base["x"], "y": base["y"], "t": (base["y"] + shift) % 10}

    def save_inputs(self, inputs: dict[str, Any], stem: Path) -> None:
        for key in ("W", "x", "y", "t"):
            np.save(f"{stem}.{key}.npy", inputs[key].numpy(), allow_pickle=False)

    def load_inputs(self, stem: Path) -> dict[str, Any]:
        arrays = {k: np.load(f"{stem}.{k}.npy", allow_pickle=False) for k in ("W", "x", "y", "t")}
        dtype = getattr(torch, self.dtype)
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        return {
            "W": tensors["W"].to(dtype),
            "x": tensors["x"].to(dtype),
            "y": tensors["y"].long(),
            "t": tensors["t"].long(),
        }


def _directions(inputs: dict[str, Any]) -> torch.Tensor:
    """``w_t - w_y`` per row, in float64 (N x 784)."""
    weight = inputs["W"].double()
    return weight[inputs["t"]] - weight[inputs["y"]]


# --------------------------------------------------------------------------- the perturbation


def call_perturbation(fn: Callable, case: PairCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(W, x, y, t, eps)`` on copies; x's copy comes back as ``x_after``."""
    x = inputs["x"].clone()
    result = fn(inputs["W"].clone(), x, inputs["y"].clone(), inputs["t"].clone(), case.eps)
    return tensor_answer(result, x)


def reference_perturbation(case: PairCase, inputs: dict[str, Any]) -> dict[str, Any]:
    """The best gain per row, with and without the box, and the unclipped bound."""
    x = inputs["x"].double().flatten(1)
    w = _directions(inputs)
    with one_thread():
        eta = (x + case.eps * w.sign()).clamp(0, 1) - x
        return {
            "x": inputs["x"].numpy(),
            "w": w.numpy(),
            "best": (eta * w).sum(1).numpy(),
            "bound": (case.eps * w.abs().sum(1)).numpy(),
        }


def score_perturbation(case: PairCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    """Feasible (ball, box), and as good as the best gain; else the likeliest mistake."""
    if got.error is not None:
        return error_feedback("worst_case_perturbation", got.error)
    out, x = got.arrays.get("out"), ref["x"]
    if got.type != "torch.Tensor" or out is None:
        return [
            f"worst_case_perturbation() returned {got.type or 'nothing readable'}; "
            "return a torch.Tensor eta of x's shape."
        ]
    if out.shape != x.shape:
        return [f"eta has shape {tuple(out.shape)}; return x's shape {tuple(x.shape)}."]
    if not np.isfinite(out).all():
        return ["eta contains NaN or infinity."]
    problems = []
    x_after = got.arrays.get("x_after")
    if x_after is None or not np.array_equal(x_after, x):
        problems.append("worst_case_perturbation() changed its input x in place; work on a copy.")
    if got.facts.get("requires_grad"):
        problems.append("eta is attached to the autograd graph; return eta.detach().")
    eta = out.reshape(len(x), -1).astype(np.float64)
    flat = x.reshape(len(x), -1).astype(np.float64)
    tol = 1e-6 if x.dtype == np.float64 else 1e-5
    gain, best, bound = (eta * ref["w"]).sum(1), ref["best"], ref["bound"]
    if np.abs(eta).max() > case.eps + tol:
        problems.append(
            f"some pixels move by {np.abs(eta).max():.3g}, more than eps = {case.eps:g}: "
            "the perturbation must stay in the l-inf ball."
        )
        return problems
    if (flat + eta).min() < -tol or (flat + eta).max() > 1 + tol:
        unclipped = np.allclose(gain, bound, rtol=RTOL, atol=tol)
        problems.append(
            "x + eta leaves [0, 1]"
            + (" (this is eps * sign(w_t - w_y) without the box)" if unclipped else "")
            + ". Hint: the best feasible step clips x + eps * sign(...) to [0, 1] first, "
            "then subtracts x."
        )
        return problems
    short = gain < best - RTOL * np.maximum(bound, 1e-12)
    if short.any():
        problems.append(_diagnose(case, gain, best, ref, short))
    return problems


def _diagnose(
    case: PairCase, gain: np.ndarray, best: np.ndarray, ref: dict[str, Any], short: np.ndarray
) -> str:
    rows = f"{short.sum()} of {len(short)} rows"
    if np.allclose(gain, -best, rtol=RTOL, atol=1e-6) or (gain < 0).mean() > 0.5:
        return (
            f"eta lowers z_t - z_y on {rows}: it pushes towards y. Move along sign(w_t - w_y), "
            "the row of the target minus the row of the true class."
        )
    return (
        f"eta raises z_t - z_y by less than the best feasible step on {rows} (e.g. "
        f"{gain[short][0]:.4g} instead of {best[short][0]:.4g}). Hint: each pixel moves by eps "
        "in the direction of sign(W[t] - W[y]) for its own row, then x + eta is clipped."
    )


# --------------------------------------------------------------------------- the gap change


@dataclass(frozen=True, kw_only=True)
class GapCase(PairCase):
    """A pair case whose ``eta`` is the grader's worst-case perturbation (clipping included)."""

    def inputs(self) -> dict[str, Any]:
        base = super().inputs()
        w = _directions(base).to(base["x"].dtype).view_as(base["x"])
        eta = (base["x"] + self.eps * w.sign()).clamp(0, 1) - base["x"]
        return {**base, "eta": eta}

    def save_inputs(self, inputs: dict[str, Any], stem: Path) -> None:
        super().save_inputs(inputs, stem)
        np.save(f"{stem}.eta.npy", inputs["eta"].numpy(), allow_pickle=False)

    def load_inputs(self, stem: Path) -> dict[str, Any]:
        eta = torch.from_numpy(np.load(f"{stem}.eta.npy", allow_pickle=False))
        return {**super().load_inputs(stem), "eta": eta.to(getattr(torch, self.dtype))}


def call_gap(fn: Callable, case: GapCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(W, eta, y, t)``: the change of z_t - z_y per row."""
    eta = inputs["eta"].clone()
    result = fn(inputs["W"].clone(), eta, inputs["y"].clone(), inputs["t"].clone())
    facts: dict[str, Any] = {"type": type_name(result)}
    arrays = {"eta_after": as_array(eta)}
    if isinstance(result, torch.Tensor):
        arrays["out"] = as_array(result.double())
    return facts, arrays


def reference_gap(case: GapCase, inputs: dict[str, Any]) -> dict[str, Any]:
    w = _directions(inputs)
    eta = inputs["eta"].double().flatten(1)
    return {
        "eta": inputs["eta"].numpy(),
        "ref": (eta * w).sum(1).numpy(),
        "bound": (case.eps * w.abs().sum(1)).numpy(),
    }


def score_gap(case: GapCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    if got.error is not None:
        return error_feedback("gap_change", got.error)
    out, want = got.arrays.get("out"), ref["ref"]
    if got.type != "torch.Tensor" or out is None:
        return [f"gap_change() returned {got.type or 'nothing readable'}; return a torch.Tensor."]
    if out.shape != want.shape:
        hint = " (one number per row, not their sum)" if out.size == 1 and want.size > 1 else ""
        return [f"the result has shape {tuple(out.shape)}; return shape {want.shape}{hint}."]
    problems = []
    eta_after = got.arrays.get("eta_after")
    if eta_after is None or not np.array_equal(eta_after, ref["eta"]):
        problems.append("gap_change() changed its input eta in place.")
    scale = np.maximum(np.abs(ref["bound"]), 1e-12)
    if not np.isfinite(out).all():
        return [*problems, "the result contains NaN or infinity."]
    if np.all(np.abs(out - want) <= RTOL * scale + 1e-9):
        return problems
    if np.all(np.abs(out + want) <= RTOL * scale + 1e-9):
        problems.append("that is the change of z_y - z_t; the exercise asks for z_t - z_y.")
    elif np.all(np.abs(out - ref["bound"]) <= RTOL * scale + 1e-9):
        problems.append(
            "that is eps * ||w_t - w_y||_1, the change before clipping; compute (w_t - w_y)^T eta "
            "for the eta you are given, where clipping has shortened some steps."
        )
    else:
        problems.append(
            f"row 1: got {out[0]:.5g}, expected {want[0]:.5g}. Hint: the gap z_t - z_y changes by "
            "(W[t] - W[y]) . eta, row by row (the bias cancels)."
        )
    return problems


# --------------------------------------------------------------------------- the exercise

EXERCISE = Exercise(
    name="01_linearity",
    functions=(
        GradedFunction(
            name="worst_case_perturbation",
            case_type=PairCase,
            call=call_perturbation,
            reference=reference_perturbation,
            score=score_perturbation,
            facts={"requires_grad": as_bool},
            arrays=("out", "x_after"),
            course_answers=("course_adv.linearity.linear_worst_case", "course_adv.attacks.fgsm"),
        ),
        GradedFunction(
            name="gap_change",
            case_type=GapCase,
            call=call_gap,
            reference=reference_gap,
            score=score_gap,
            arrays=("out", "eta_after"),
            course_answers=("course_adv.linearity.linear_worst_case",),
        ),
    ),
    cases=(
        PairCase(function="worst_case_perturbation", eps=0.1, seed=0, n=8, points=2),
        PairCase(function="worst_case_perturbation", eps=0.25, seed=1, n=16, points=2),
        PairCase(function="worst_case_perturbation", eps=0.05, seed=2, n=4, points=1, dtype="float64"),
        PairCase(function="worst_case_perturbation", eps=0.3, seed=3, n=1, points=1),
        GapCase(function="gap_change", eps=0.1, seed=4, n=8, points=2),
        GapCase(function="gap_change", eps=0.25, seed=5, n=16, points=1),
        GapCase(function="gap_change", eps=0.05, seed=6, n=4, points=1, dtype="float64"),
    ),
)  # fmt: skip
