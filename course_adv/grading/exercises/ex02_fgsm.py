"""Exercise 02 (``02_fgsm.ipynb``): a targeted FGSM step, then the loop that measures its success.

Notebook 02 writes the untargeted FGSM of Goodfellow et al. 2015 (eq. (1)) from scratch, so the
exercise asks for its targeted variant, the "one-step target class method" of Kurakin, Goodfellow
& Bengio 2017 ("Adversarial Machine Learning at Scale", section 2; the lecture's "more efficient
attack"): one step *down* the cross-entropy of a chosen target class ``t``, per row::

    x_adv = clip_[0,1]( x - eps * sign(grad_x L(theta, x, t)) )

``fgsm_targeted(model, x, target, eps)`` is compared pixel by pixel with
``course_adv.attacks.fgsm(model, x, target, eps, targeted=True)`` on the linear model and the
small CNN, in float32 and float64; the diagnoses recognise the untargeted sign (a step up the
loss, away from the target), a missing clip, the model's own prediction used in place of the
target, a step that is not eps, and gradients left in the model's parameters or the model left
in train mode (COURSE.md section 2).

``targeted_success_rate(model, x, target, eps, attack, batch_size)`` is given an attack of the
grader's own as its ``attack`` (not the student's step, so a mistake there costs points once,
where it is; and not the course's FGSM, so the notebook never holds an answer it could reuse)
and must return the share of *all* points the model classifies as their target after the
attack, attacking batches of at most ``batch_size`` points, each point once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

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


# --------------------------------------------------------------------------- cases with targets


@dataclass(frozen=True, kw_only=True)
class TargetCase(DigitCase):
    """A digit case with a target class per digit, drawn by ``seed`` and never the true label."""

    def inputs(self) -> dict[str, Any]:
        inputs = super().inputs()
        y = inputs["y"]
        draw = torch.Generator().manual_seed(2 * self.seed + 1)  # not the generator of the digits
        shift = torch.randint(1, 10, (len(y),), generator=draw)
        return {**inputs, "target": (y + shift) % 10}

    def save_inputs(self, inputs: dict[str, Any], stem: Path) -> None:
        super().save_inputs(inputs, stem)
        np.save(f"{stem}.target.npy", inputs["target"].numpy(), allow_pickle=False)

    def load_inputs(self, stem: Path) -> dict[str, Any]:
        target = np.load(f"{stem}.target.npy", allow_pickle=False)
        return {**super().load_inputs(stem), "target": torch.from_numpy(target).long()}


def _model_facts(model: nn.Module) -> dict[str, bool]:
    """Whether a call left gradients in the model's parameters, or the model in train mode."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return {
        "param_grads": any(bool(g.ne(0).any()) for g in grads),
        "train_mode": any(m.training for m in model.modules()),
    }


MODEL_PROBLEMS = {
    "param_grads": (
        "{name}() left gradients in the model's parameters (loss.backward() writes p.grad). "
        "Hint: an attack differentiates with respect to the input only, torch.autograd.grad."
    ),
    "train_mode": (
        "{name}() left the model in train mode; it was given in eval mode. An attack must "
        "give the model back in the mode it had."
    ),
}


def _model_problems(name: str, got: Outcome) -> list[str]:
    return [text.format(name=name) for key, text in MODEL_PROBLEMS.items() if got.facts.get(key)]


# --------------------------------------------------------------------------- fgsm_targeted


def call_fgsm_targeted(fn: Callable, case: TargetCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(model, x, target, eps)`` on copies of x and target; x's copy comes back as
    ``x_after``, with whether target was changed and what the call left in the model."""
    model, x, target = inputs["model"], inputs["x"].clone(), inputs["target"].clone()
    facts, arrays = tensor_answer(fn(model, x, target, case.eps), x)
    facts["target_changed"] = not torch.equal(target, inputs["target"])
    return {**facts, **_model_facts(model)}, arrays


def reference_fgsm_targeted(case: TargetCase, inputs: dict[str, Any]) -> dict[str, Any]:
    """The course's targeted step (``ref``) and the steps of the typical mistakes: up the loss
    of the target (``ascent``), down or up the loss of the model's own prediction."""
    model, x, target = inputs["model"], inputs["x"], inputs["target"]
    with one_thread():
        with torch.no_grad():
            predicted = model(x).argmax(1)
        return {
            "x": x.numpy(),
            "ref": attacks.fgsm(model, x, target, case.eps, targeted=True).numpy(),
            "ascent": attacks.fgsm(model, x, target, case.eps).numpy(),
            "predicted_descent": attacks.fgsm(model, x, predicted, case.eps, targeted=True).numpy(),
            "predicted_ascent": attacks.fgsm(model, x, predicted, case.eps).numpy(),
        }


def _matches(out: np.ndarray, target: np.ndarray) -> bool:
    return bool(np.mean(~np.isclose(out, target, atol=ATOL)) <= MISMATCH_ALLOWED)


def score_fgsm_targeted(case: TargetCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    """Problems with a targeted FGSM answer (empty when it is right), each with a hint."""
    if got.error is not None:
        return error_feedback("fgsm_targeted", got.error)
    out, x_after = got.arrays.get("out"), got.arrays.get("x_after")
    if got.type != "torch.Tensor" or out is None:
        return [
            f"fgsm_targeted() returned {got.type or 'nothing readable'}; "
            "return a plain torch.Tensor."
        ]
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
            "fgsm_targeted() changed its input x in place. Hint: differentiate with respect "
            "to a fresh copy of x, and never write into x or x.data."
        )
    if got.facts.get("target_changed") is not False:
        problems.append("fgsm_targeted() changed its input target in place.")
    if not np.isfinite(out).all():
        return [*problems, "x_adv contains NaN or infinity."]
    out = out.astype(x.dtype)
    if out.min() < 0 or out.max() > 1:
        fixed = _matches(np.clip(out, 0, 1), ref["ref"])
        problems.append(
            f"x_adv has values outside [0, 1] (min {out.min():.3g}, max {out.max():.3g}). "
            "Hint: pixels live in [0, 1]; clip after the step."
            + (" With that clip your answer would be right." if fixed else "")
        )
    step = np.abs(out - x).max()
    if step > case.eps + ATOL:
        problems.append(
            f"some pixels moved by {step:.3g}, more than eps = {case.eps:g}; "
            "one FGSM step moves every pixel by at most eps."
        )
    if got.facts.get("requires_grad"):
        problems.append("x_adv is still attached to the autograd graph; return it detached.")
    wrong = ~np.isclose(out, ref["ref"], atol=ATOL)
    if wrong.mean() > MISMATCH_ALLOWED and not problems:
        problems.append(diagnose_fgsm_targeted(case, x, out, ref, wrong))
    return problems + _model_problems("fgsm_targeted", got)


def diagnose_fgsm_targeted(
    case: TargetCase, x: np.ndarray, out: np.ndarray, ref: dict[str, Any], wrong: np.ndarray
) -> str:
    """Name the likeliest mistake behind an in-range, in-ball answer that is wrong."""
    if _matches(out, ref["ascent"]):
        return (
            "x_adv steps *up* the loss of the target, x + eps * sign(grad): that is untargeted "
            "FGSM, which pushes x away from the target. A targeted step goes down the loss of "
            "the target class."
        )
    if _matches(out, ref["predicted_descent"]):
        return (
            "x_adv steps down the loss of the model's own prediction (on the digits it gets "
            "right, the true label), which makes the model surer of its answer; take the loss "
            "against target."
        )
    if _matches(out, ref["predicted_ascent"]):
        return (
            "that is untargeted FGSM against the model's own prediction (notebook 02's "
            "y=None); this step must go down the loss of target."
        )
    full = np.isclose(np.abs(ref["ref"] - x), case.eps, atol=ATOL)  # pixels FGSM moves by eps
    if full.any():
        size = float(np.median(np.abs(out - x)[full]))
        if not math.isclose(size, case.eps, abs_tol=ATOL):
            return f"your steps have size {size:.3g}; an FGSM step is exactly eps = {case.eps:g}."
    return (
        f"x_adv differs from clip(x - eps * sign(grad_x L(theta, x, target)), 0, 1) on "
        f"{wrong.mean():.0%} of the pixels. Hint: L is the cross-entropy of the model's logits "
        "against target, differentiated with respect to x."
    )


# --------------------------------------------------------------------------- targeted_success_rate


def toward_target_mean(means: torch.Tensor) -> Callable:
    """The attack the loop is given: with m_c the mean training digit of class c and p the
    model's prediction, ``clip(x + eps * sign(m_t - m_p), 0, 1)``. It needs no gradient,
    answers no exercise, and reaches its target often enough on the cases' linear model to
    tell right loops from wrong ones; a notebook gains nothing by keeping it."""

    def attack(model: nn.Module, x: torch.Tensor, target: torch.Tensor, eps: float):
        if len(target) != len(x):
            raise ValueError(
                f"attack got {len(x)} inputs but {len(target)} targets; "
                "slice target the way you slice x"
            )
        with torch.no_grad():
            predicted = model(x).argmax(1)
        step = torch.sign(means[target] - means[predicted]).to(x.dtype).view_as(x)
        return (x + eps * step).clamp(0, 1).detach()

    return attack


@dataclass(frozen=True, kw_only=True)
class SuccessCase(TargetCase):
    """A target case for the loop: the attack it is given, and the batch size it must keep."""

    batch_size: int = bounded(1, 10**6, integer=True, default=100)

    def describe(self) -> str:
        return f"{super().describe()}, batch_size={self.batch_size}"

    def inputs(self) -> dict[str, Any]:
        means = class_means()
        return {**super().inputs(), "means": means, "attack": toward_target_mean(means)}

    def save_inputs(self, inputs: dict[str, Any], stem: Path) -> None:
        super().save_inputs(inputs, stem)
        np.save(f"{stem}.means.npy", inputs["means"].numpy(), allow_pickle=False)

    def load_inputs(self, stem: Path) -> dict[str, Any]:
        means = torch.from_numpy(np.load(f"{stem}.means.npy", allow_pickle=False))
        return {**super().load_inputs(stem), "means": means, "attack": toward_target_mean(means)}


def call_success_rate(fn: Callable, case: SuccessCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(model, x, target, eps, attack, batch_size)``, counting the batch sizes the attack
    sees."""
    model, attack = inputs["model"], inputs["attack"]
    x, target = inputs["x"].clone(), inputs["target"].clone()
    sizes: list[int] = []

    def counted_attack(model_, x_batch, target_batch, eps_):
        sizes.append(int(len(x_batch)))
        return attack(model_, x_batch, target_batch, eps_)

    result = fn(model, x, target, case.eps, counted_attack, case.batch_size)
    facts = {
        "type": type_name(result),
        "value": scalar(result),
        "batch_sizes": sizes,
        "target_changed": not torch.equal(target, inputs["target"]),
        **_model_facts(model),
    }
    return facts, {"x_after": as_array(x)}


def reference_success_rate(case: SuccessCase, inputs: dict[str, Any]) -> dict[str, Any]:
    """The targeted success rate (classified as the target after the attack, over all points),
    the same on the clean inputs, the share whose prediction the attack changed, and a
    tolerance of one point per near-tie in the logits (float noise may flip those)."""
    model, x, target, attack = inputs["model"], inputs["x"], inputs["target"], inputs["attack"]
    hits, clean, changed, ties = 0, 0, 0, 0
    with one_thread(), torch.no_grad():
        for start in range(0, len(x), case.batch_size):
            xb, tb = x[start : start + case.batch_size], target[start : start + case.batch_size]
            logits, clean_pred = model(attack(model, xb, tb, case.eps)), model(xb).argmax(1)
            hits += int((logits.argmax(1) == tb).sum())
            clean += int((clean_pred == tb).sum())
            changed += int((logits.argmax(1) != clean_pred).sum())
            top2 = logits.topk(2, dim=1).values
            ties += int((top2[:, 0] - top2[:, 1] < 1e-4).sum())
    n = len(x)
    return {
        "x": x.numpy(),
        "ref": hits / n,
        "clean": clean / n,
        "changed": changed / n,
        "tol": (ties + 0.5) / n,
        "n": n,
    }


def score_success_rate(case: SuccessCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    """Problems with a targeted-success-rate answer (empty when it is right)."""
    if got.error is not None:
        return error_feedback("targeted_success_rate", got.error)
    value, n = got.facts.get("value"), ref["n"]
    if value is None or not math.isfinite(value):
        return [f"targeted_success_rate() returned {got.type}; return a float between 0 and 1."]
    problems = []

    def near(goal: float, scale: float = 1.0) -> bool:
        return abs(value - goal) <= ref["tol"] * scale + 1e-9

    if not near(ref["ref"]):
        if near(1 - ref["ref"]):
            problems.append(
                "that looks like the share of points that did *not* reach their target; "
                "return the share that did."
            )
        elif near(100 * ref["ref"], 100):
            problems.append("that looks like a percentage; return the fraction, between 0 and 1.")
        elif near(ref["ref"] * n, n):
            problems.append("that looks like a count; divide by the number of points, len(x).")
        elif near(ref["clean"]) and not math.isclose(ref["clean"], ref["ref"]):
            problems.append(
                f"got {value:.4g}, the share of *clean* inputs classified as their target: "
                "classify the attacked batches, attack(model, x_batch, target_batch, eps)."
            )
        elif near(ref["changed"]):
            problems.append(
                f"got {value:.4g}, the share of points whose prediction the attack changed: "
                "that is untargeted success. A targeted attack succeeds only where the model "
                "now predicts the target."
            )
        else:
            problems.append(
                f"got {value:.4g}, expected {ref['ref']:.4g}. Hint: count the points classified "
                "as their target over all batches, then divide by len(x) (not by the number of "
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
        problems.append("targeted_success_rate() changed its input x in place.")
    if got.facts.get("target_changed"):
        problems.append("targeted_success_rate() changed its input target in place.")
    return problems + _model_problems("targeted_success_rate", got)


# --------------------------------------------------------------------------- the exercise

MODEL_FACTS = {"target_changed": as_bool, "param_grads": as_bool, "train_mode": as_bool}

EXERCISE = Exercise(
    name="02_fgsm",
    functions=(
        GradedFunction(
            name="fgsm_targeted",
            case_type=TargetCase,
            call=call_fgsm_targeted,
            reference=reference_fgsm_targeted,
            score=score_fgsm_targeted,
            facts={"requires_grad": as_bool, **MODEL_FACTS},
            arrays=("out", "x_after"),
            course_answers=(
                "course_adv.attacks.fgsm",
                "course_adv.attacks.bim",
                "course_adv.attacks.pgd",
            ),
        ),
        GradedFunction(
            name="targeted_success_rate",
            case_type=SuccessCase,
            call=call_success_rate,
            reference=reference_success_rate,
            score=score_success_rate,
            facts={"value": as_float, "batch_sizes": as_ints, **MODEL_FACTS},
            arrays=("x_after",),
            course_answers=(
                "course_adv.evaluation.robust_mask",
                "course_adv.evaluation.accuracy_vs_eps",
            ),
        ),
    ),
    cases=(
        TargetCase(function="fgsm_targeted", eps=0.1, seed=0, n=8, points=2, model="cnn"),
        TargetCase(function="fgsm_targeted", eps=0.25, seed=1, n=8, points=2, model="softmax"),
        TargetCase(function="fgsm_targeted", eps=0.05, seed=2, n=4, points=1, model="cnn", dtype="float64"),
        TargetCase(function="fgsm_targeted", eps=0.3, seed=3, n=1, points=1, model="softmax"),
        SuccessCase(function="targeted_success_rate", eps=0.0, seed=4, n=90, points=1, batch_size=32),
        SuccessCase(function="targeted_success_rate", eps=0.2, seed=5, n=100, points=2, batch_size=32),
        SuccessCase(function="targeted_success_rate", eps=0.25, seed=6, n=60, points=1, batch_size=128),
    ),
)  # fmt: skip
