"""Exercise 06 (``06_minmax_training.ipynb``): one step of PGD adversarial training.

Madry, Makelov, Schmidt, Tsipras & Vladu 2018, eq. (3), the saddle-point problem::

    min_theta E_(x, y) [ max_{||delta||_inf <= eps} L(theta, x + delta, y) ]

``minmax_step(model, optimizer, x, y, eps, alpha, steps, random_start)`` takes one step of it
on a batch. The inner max is PGD, written by hand, with the model in eval mode: from
``x_0 = x`` (or, with ``random_start``, ``x + U(-eps, eps)`` clipped to [0, 1]), ``steps``
steps ``x_{t+1} = clip_[0,1](Proj_eps(x_t + alpha sign(grad_x L(x_t, y))))``. The outer min is
one optimiser step on ``L(theta, x_adv, y)`` with the model in train mode, from cleared
gradients. It returns that loss as a float and leaves the model in train mode.

The case model has a BatchNorm layer, so the modes change the result: in train mode BatchNorm
normalises with the batch's statistics and updates its running averages, in eval mode it uses
them. The optimiser arrives holding stale gradients, as after an earlier step. The random start
is reproducible: the grader seeds torch's random stream just before the call, and the
reference draws ``torch.empty_like(x).uniform_(-eps, eps)`` first, as
``course_adv.attacks.pgd`` does.

Graded on the update of the parameters (relative to the reference's update, so that float
noise in the attack's sign steps does not count), BatchNorm's running averages, the returned
loss and the model's mode. The diagnoses recognise: the attack run in train mode, the update
run in eval mode, stale gradients, the attack's gradients leaking into the parameters'
``.grad``, no projection onto the eps-ball, no clip to [0, 1], FGSM instead of PGD, a
descending attack, a random start missing or used when not asked, and a clean-loss update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_adv import attacks
from course_adv.grading.digits import TrainingStepCase, fresh_copy, one_thread, parameter_vector
from course_adv.grading.spec import (
    Exercise,
    GradedFunction,
    Outcome,
    as_array,
    as_bool,
    as_float,
    bounded,
    error_feedback,
    scalar,
    type_name,
)

# the update (parameters after - before) agrees with the reference's within this share of
# its size: float noise (threads, a mean instead of a sum) can flip the sign of a gradient
# that is almost exactly 0, and a flipped pixel moves the update by far less than a mistake
RELATIVE_TOL = {"float32": 2e-3, "float64": 1e-6}


def _flag(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(f"must be true or false, got {value!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class MinMaxCase(TrainingStepCase):
    """A BatchNorm MLP (seeded, running averages warmed up on other digits), digits, the PGD
    settings (eps, step alpha, steps, random start) and the SGD step size."""

    alpha: float = bounded(1e-4, 1)
    steps: int = bounded(1, 20, integer=True)
    random_start: bool = field(default=False, metadata={"check": _flag})

    def describe(self) -> str:
        digits = "digit" if self.n == 1 else "digits"
        start = "random start" if self.random_start else "start at x"
        return (
            f"BatchNorm MLP, {self.dtype}, eps={self.eps:g}, {self.steps} steps of "
            f"{self.alpha:g}, {start}, lr={self.lr:g}, {self.n} {digits}"
        )


def _buffers(model: nn.Module) -> np.ndarray:
    """BatchNorm's running mean and variance, flattened into one float64 vector."""
    return torch.cat(
        [b.detach().double().flatten() for b in model.buffers() if b.is_floating_point()]
    ).numpy()


def call_step(fn: Callable, case: MinMaxCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(model, optimizer, x, y, eps, alpha, steps, random_start)`` on a seeded random
    stream (the caller's comes back as it was); the model's state and mode come back."""
    model, optimizer = fresh_copy(inputs, case.lr)
    x = inputs["x"].clone()
    args = (case.eps, case.alpha, case.steps, case.random_start)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        result = fn(model, optimizer, x, inputs["y"].clone(), *args)
    facts = {"type": type_name(result), "loss": scalar(result), "training": bool(model.training)}
    arrays = {"state": parameter_vector(model), "buffers": _buffers(model), "x_after": as_array(x)}
    return facts, arrays


# --------------------------------------------------------------------------- the reference


def _pgd(model, x, y, eps, alpha, steps, *, start, project=True, clip=True, sign=1.0, leak=None):
    """l-inf PGD from ``start`` in the model's current mode, with one thing changed: the
    mistakes the diagnoses recognise. ``leak``: "mean" or "sum" back-propagates each step's
    loss into the parameters' .grad as well (loss.backward() instead of autograd.grad)."""
    x_adv = start.clone()
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction=leak or "sum")
        if leak:
            loss.backward()
            grad = x_adv.grad
        else:
            (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + sign * alpha * grad.sign()
        if project:
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        if clip:
            x_adv = x_adv.clamp(0, 1)
    return x_adv.detach()


def _step(
    inputs,
    case,
    *,
    library=False,
    random_start=None,
    attack_mode="eval",
    update_mode="train",
    zero_grad=True,
    leak=None,
    fgsm=False,
    clean=False,
    **pgd_options,
):
    """The reference step (``library=True``: the inner max by ``course_adv.attacks.pgd``), or
    one of the typical mistakes, on a fresh copy of the case model and optimiser."""
    model, optimizer = fresh_copy(inputs, case.lr)
    x, y = inputs["x"], inputs["y"]
    random_start = case.random_start if random_start is None else random_start
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        if library:
            args = (model, x, y, case.eps, case.alpha, case.steps)
            x_adv = attacks.pgd(*args, random_start=random_start, freeze_fooled=False)
        else:
            start = x
            if random_start:  # the first draw, as attacks.pgd makes it
                start = (x + torch.empty_like(x).uniform_(-case.eps, case.eps)).clamp(0, 1)
            if leak:
                optimizer.zero_grad()  # cleared first, then filled by the attack's backward()
            model.train(attack_mode == "train")
            if fgsm:  # one step of eps from x
                x_adv = _pgd(model, x, y, case.eps, case.eps, 1, start=x)
            else:
                args = (model, x, y, case.eps, case.alpha, case.steps)
                x_adv = _pgd(*args, start=start, leak=leak, **pgd_options)
    model.train(update_mode == "train")
    loss = F.cross_entropy(model(x if clean else x_adv), y)
    if zero_grad and not leak:
        optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {
        "state": parameter_vector(model),
        "buffers": _buffers(model),
        "loss": float(loss.item()),
    }


def reference_step(case: MinMaxCase, inputs: dict[str, Any]) -> dict[str, Any]:
    with one_thread():
        ref = _step(inputs, case, library=True)
        mistakes = {
            "train-mode attack": _step(inputs, case, attack_mode="train"),
            "eval-mode update": _step(inputs, case, update_mode="eval"),
            "stale gradients": _step(inputs, case, zero_grad=False),
            "leak": _step(inputs, case, leak="mean"),
            "leak (sum)": _step(inputs, case, leak="sum"),
            "no projection": _step(inputs, case, project=False),
            "no clip": _step(inputs, case, clip=False),
            "fgsm": _step(inputs, case, fgsm=True),
            "descent": _step(inputs, case, sign=-1.0),
            "random start": _step(inputs, case, random_start=not case.random_start),
            "clean loss": _step(inputs, case, clean=True),
        }
    model, _ = fresh_copy(inputs, case.lr)
    return {
        "x": inputs["x"].numpy(),
        "ref": ref,
        "mistakes": mistakes,
        "before": parameter_vector(model),
    }


def _random_start_message(case: MinMaxCase) -> str:
    if case.random_start:
        return (
            "the attack started at x itself, but random_start=True asks PGD to start from a "
            "random point of the eps-ball: x + U(-eps, eps), clipped to [0, 1] (draw it with "
            "torch.empty_like(x).uniform_(-eps, eps) before anything else random)."
        )
    return (
        "the attack started from a random point, but random_start=False asks PGD to start at "
        "x_0 = x."
    )


MESSAGES = {
    "train-mode attack": "the PGD examples were crafted with the model in train mode (BatchNorm "
    "used the batch's statistics and updated its running averages at every step); run the inner "
    "max in eval mode, then switch back with model.train() for the update.",
    "eval-mode update": "the update ran with the model in eval mode (BatchNorm used its running "
    "averages instead of the batch's statistics): call model.train() after the attack, before "
    "the forward pass you train on.",
    "stale gradients": "the parameters moved by the stale gradients the optimiser already held: "
    "call optimizer.zero_grad() before loss.backward().",
    "leak": "the attack's loss.backward() calls filled the parameters' .grad too, and those "
    "gradients went into the update: take the input gradient with torch.autograd.grad(loss, "
    "x_adv), or call optimizer.zero_grad() after the attack, just before the outer backward().",
    "no projection": "the examples left the eps-ball around x: after every step, clip x_adv to "
    "[x - eps, x + eps] (the projection of PGD), then to [0, 1].",
    "no clip": "the examples left the valid pixel range: after the projection, clip x_adv to "
    "[0, 1].",
    "fgsm": "that is one FGSM step of size eps; the inner max of eq. (3) is PGD: `steps` steps "
    "of size alpha, each projected back onto the eps-ball.",
    "descent": "the attack descends the loss (x - alpha sign(grad)); the inner max ascends it: "
    "x + alpha sign(grad).",
    "clean loss": "the update minimised the loss on the clean x; eq. (3) trains on the "
    "adversarial examples: L(theta, x_adv, y).",
}


def _close(state: np.ndarray, target: np.ndarray, before: np.ndarray, dtype: str) -> bool:
    """The update ``state - before`` equals ``target - before`` within RELATIVE_TOL."""
    size = max(float(np.linalg.norm(target - before)), 1e-12)
    return float(np.linalg.norm(state - target)) <= RELATIVE_TOL[dtype] * size


def score_step(case: MinMaxCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    if got.error is not None:
        return error_feedback("minmax_step", got.error)
    state = got.arrays.get("state")
    if state is None or state.shape != ref["ref"]["state"].shape:
        return ["the model's parameters could not be read back after the step."]
    problems = []
    match = ref["ref"] if _close(state, ref["ref"]["state"], ref["before"], case.dtype) else None
    if match is None:
        for name, mistake in ref["mistakes"].items():
            if _close(state, mistake["state"], ref["before"], case.dtype):
                match = mistake
                key = "leak" if name.startswith("leak") else name
                problems.append(
                    _random_start_message(case) if key == "random start" else MESSAGES[key]
                )
                break
        else:
            unchanged = np.array_equal(state, ref["before"])
            problems.append(
                "the parameters after the step differ from one SGD step of PGD training"
                + (" (they did not change at all: call optimizer.step())" if unchanged else "")
                + ". Hint: PGD in eval mode (start, then steps of alpha sign(grad), each "
                "projected onto the eps-ball and clipped to [0, 1]); then train mode, the loss "
                "on x_adv, zero_grad, backward, step."
                + (
                    " Draw the random start with torch.empty_like(x).uniform_(-eps, eps), before "
                    "anything else random: the grader seeds torch's random stream just before "
                    "the call, and only that draw reproduces its start."
                    if case.random_start
                    else ""
                )
            )
    elif match is ref["ref"]:
        buffers = got.arrays.get("buffers")
        want = ref["ref"]["buffers"]
        if (
            buffers is None
            or buffers.shape != want.shape
            or not np.allclose(buffers, want, rtol=1e-4, atol=1e-6)
        ):
            problems.append(
                "BatchNorm's running averages differ from one training forward pass on x_adv: "
                "run every other forward pass (the attack's, any evaluation) in eval mode."
            )
    loss, want = got.facts.get("loss"), (match or ref["ref"])["loss"]
    if loss is None or abs(loss - want) > 1e-3 * max(1.0, abs(want)):
        problems.append(
            f"the returned loss is {got.type if loss is None else f'{loss:.5g}'}; return the "
            f"value of the adversarial loss you trained on, loss.item() ({want:.5g} here)."
        )
    if got.facts.get("training") is not True:
        problems.append("the model is left in eval mode; leave it in train mode (model.train()).")
    x_after = got.arrays.get("x_after")
    if x_after is None or not np.array_equal(x_after, ref["x"]):
        problems.append("minmax_step() changed its input x in place; work on a copy.")
    return problems


EXERCISE = Exercise(
    name="06_minmax_training",
    functions=(
        GradedFunction(
            name="minmax_step",
            case_type=MinMaxCase,
            call=call_step,
            reference=reference_step,
            score=score_step,
            facts={"loss": as_float, "training": as_bool},
            arrays=("state", "buffers", "x_after"),
            course_answers=(
                "course_adv.attacks.pgd",
                "course_adv.attacks.bim",
                "course_adv.attacks.fgsm",
            ),
        ),
    ),
    cases=(
        MinMaxCase(function="minmax_step", eps=0.3, alpha=0.1, steps=5, seed=0, n=32, points=3),
        MinMaxCase(function="minmax_step", eps=0.1, alpha=0.025, steps=8, random_start=True, seed=1, n=16, points=3),
        MinMaxCase(function="minmax_step", eps=0.2, alpha=0.05, steps=6, random_start=True, seed=2, n=8, points=2, dtype="float64"),
        MinMaxCase(function="minmax_step", eps=0.25, alpha=0.1, steps=4, lr=0.05, seed=3, n=24, points=2),
    ),
)  # fmt: skip
