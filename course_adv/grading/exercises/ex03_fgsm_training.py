"""Exercise 03 (``03_fgsm_training.ipynb``): one optimisation step of eq. (2).

Goodfellow, Shlens & Szegedy 2015, eq. (2)::

    J~(theta, x, y) = alpha J(theta, x, y) + (1 - alpha) J(theta, x + eps sign(grad_x J(theta, x, y)), y)

``fgsm_training_step(model, optimizer, x, y, eps, alpha, labels="true")`` crafts the FGSM
examples with the model in eval mode (the course's convention for every attack), computes the
mixed loss with the model in train mode, clears the old gradients, back-propagates, steps the
optimiser and returns the loss as a float, leaving the model in train mode. ``labels`` says
whom the FGSM half attacks: ``"true"`` crafts it with the true labels y, as eq. (2) does;
``"predicted"`` with the model's own predictions on the clean x, taken in eval mode before the
step (Kurakin, Goodfellow & Bengio 2017, "Adversarial Machine Learning at Scale", section 4.2:
their fix for label leaking; the library's ``attacks.fgsm(model, x, None, eps)`` and
``training.FGSMRegularizer(..., labels="predicted")``). Both losses use the true y.

The case model has a BatchNorm layer, so the modes matter and can be checked exactly: in train
mode BatchNorm normalises with the batch's statistics and updates its running averages; in
eval mode it uses (and keeps) them. The optimiser arrives with stale gradients in ``.grad``,
as after an earlier step.

Graded on the parameters after the step, the returned loss and the model's mode; the
diagnoses recognise a missing ``zero_grad``, an attack crafted in train mode, alpha on the
wrong term, the adversarial loss alone, and the labels: predicted ones where
the case asks for the true ones and the other way round, predictions taken in train mode
(BatchNorm's batch statistics), and predicted labels in the loss as well as in the attack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
    one_of,
    scalar,
    type_name,
)


@dataclass(frozen=True, kw_only=True)
class StepCase(TrainingStepCase):
    """A BatchNorm MLP (seeded, briefly warmed up), digits, eps, alpha, the SGD step size and
    the labels the FGSM half attacks (``"true"`` or ``"predicted"``)."""

    alpha: float = bounded(0, 1)
    labels: str = one_of("true", "predicted", default="true")

    def describe(self) -> str:
        digits = "digit" if self.n == 1 else "digits"
        return (
            f"BatchNorm MLP, {self.dtype}, eps={self.eps:g}, alpha={self.alpha:g}, "
            f"lr={self.lr:g}, labels={self.labels!r}, {self.n} {digits}"
        )


def call_step(fn: Callable, case: StepCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(model, optimizer, x, y, eps, alpha, labels=...)``; the model's state and mode come
    back."""
    model, optimizer = fresh_copy(inputs, case.lr)
    x = inputs["x"].clone()
    result = fn(model, optimizer, x, inputs["y"].clone(), case.eps, case.alpha, labels=case.labels)
    facts = {"type": type_name(result), "loss": scalar(result), "training": bool(model.training)}
    return facts, {"state": parameter_vector(model), "x_after": as_array(x)}


def _predicted(model: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """The model's classes for x: in eval mode (what ``attacks.fgsm`` does for ``y=None``), or
    in train mode, where BatchNorm uses the batch's statistics and updates its running ones."""
    was_training = model.training
    model.train(mode == "train")
    with torch.no_grad():
        classes = model(x).argmax(1)
    model.train(was_training)
    return classes


def _step(
    inputs,
    case,
    *,
    craft,
    zero_grad=True,
    attack_mode="eval",
    swap=False,
    adv_only=False,
    loss_labels="true",
    one_pass=False,
):
    """The reference step, or one of the typical mistakes the diagnoses name. ``craft``: the
    labels the FGSM half attacks, ``"true"``, ``"predicted"`` (the library: ``y=None``, eval
    mode) or ``"train-predicted"`` (predictions taken with the model in train mode)."""
    model, optimizer = fresh_copy(inputs, case.lr)
    x, y = inputs["x"], inputs["y"]
    if attack_mode == "eval":
        if craft == "train-predicted":
            target = _predicted(model, x, "train")
        else:
            target = y if craft == "true" else None
        x_adv = attacks.fgsm(model, x, target, case.eps)  # eval mode inside, then restored
    else:  # crafted in train mode: batch statistics, running averages updated
        target = y if craft == "true" else _predicted(model, x, "train")
        x_req = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_req), target), x_req)
        x_adv = (x + case.eps * grad.sign()).clamp(0, 1).detach()
    if loss_labels == "predicted":
        y = _predicted(inputs["model"], x, "eval")
    a = 1 - case.alpha if swap else case.alpha
    if one_pass:  # clean and adversarial halves through BatchNorm together, as the library does
        losses = F.cross_entropy(model(torch.cat([x, x_adv])), torch.cat([y, y]), reduction="none")
        loss = a * losses[: len(x)].mean() + (1 - a) * losses[len(x) :].mean()
    else:
        loss = F.cross_entropy(model(x_adv), y)
        if not adv_only:
            loss = a * F.cross_entropy(model(x), y) + (1 - a) * loss
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"state": parameter_vector(model), "loss": float(loss.item())}


def reference_step(case: StepCase, inputs: dict[str, Any]) -> dict[str, Any]:
    """One step on eq. (2) with the case's labels (two forward passes, and one over both
    halves), and the steps of the typical mistakes, keyed by their ``MESSAGES``."""
    craft = case.labels
    with one_thread():
        ref = _step(inputs, case, craft=craft)
        one_pass = _step(inputs, case, craft=craft, one_pass=True)
        mistakes = {
            "stale gradients": _step(inputs, case, craft=craft, zero_grad=False),
            "train-mode attack": _step(inputs, case, craft=craft, attack_mode="train"),
            "alpha swapped": _step(inputs, case, craft=craft, swap=True),
            "adversarial only": _step(inputs, case, craft=craft, adv_only=True),
        }
        if craft == "true":
            mistakes["predicted labels"] = _step(inputs, case, craft="predicted")
            # predictions taken in train mode: the same mistake, whichever mode they came from
            mistakes["predicted labels (train mode)"] = _step(inputs, case, craft="train-predicted")
        else:
            mistakes["true labels"] = _step(inputs, case, craft="true")
            mistakes["train-mode predictions"] = _step(inputs, case, craft="train-predicted")
            mistakes["predicted labels in the loss"] = _step(
                inputs, case, craft="predicted", loss_labels="predicted"
            )
    before = parameter_vector(inputs["model"])
    return {
        "x": inputs["x"].numpy(),
        "ref": ref,
        "one_pass": one_pass,
        "mistakes": mistakes,
        "before": before,
    }


MESSAGES = {
    "stale gradients": "the parameters moved by the stale gradients the optimiser already held: "
    "call optimizer.zero_grad() before loss.backward().",
    "train-mode attack": "the FGSM examples were crafted with the model in train mode (BatchNorm "
    "used the batch's statistics and updated its running averages); craft them in eval mode, "
    "e.g. with course_adv.attacks.fgsm, then train in train mode.",
    "alpha swapped": "alpha weighs the wrong term: eq. (2) is alpha * J(x) + (1 - alpha) * J(x_adv).",
    "adversarial only": "only the adversarial loss was minimised; eq. (2) mixes in the clean loss "
    "with weight alpha.",
    "predicted labels": "the FGSM examples attack the model's predictions; with labels='true' "
    "eq. (2) crafts them with y.",
    "predicted labels (train mode)": "the FGSM examples attack the model's predictions (taken "
    "in train mode at that); with labels='true' eq. (2) crafts them with y.",
    "true labels": "the FGSM examples attack the true labels y; with labels='predicted' the "
    "adversarial half uses the model's own predictions on the clean x (Kurakin et al.'s fix for "
    "label leaking), e.g. attacks.fgsm(model, x, None, eps).",
    "train-mode predictions": "the predicted labels were taken with the model in train mode "
    "(BatchNorm used the batch's statistics and updated its running averages); take them in "
    "eval mode, before the step, as attacks.fgsm(model, x, None, eps) does.",
    "predicted labels in the loss": "the predicted labels only choose the direction of the "
    "attack; both halves of the loss still use the true labels y.",
}


def score_step(case: StepCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    if got.error is not None:
        problems = error_feedback("fgsm_training_step", got.error)
        if "TypeError" in got.error and "'labels'" in got.error:
            problems.append(
                "keep the signature fgsm_training_step(model, optimizer, x, y, eps, alpha, "
                'labels="true"): the grader passes labels="true" or labels="predicted".'
            )
        return problems
    state = got.arrays.get("state")
    if state is None or state.shape != ref["ref"]["state"].shape:
        return ["the model's parameters could not be read back after the step."]
    problems = []
    tol = 1e-9 if case.dtype == "float64" else 2e-5
    right = [ref["ref"], ref["one_pass"]]  # two forward passes, or one over both halves
    match = next((r for r in right if np.allclose(state, r["state"], rtol=0, atol=tol)), None)
    if match is None:
        for name, mistake in ref["mistakes"].items():
            if np.allclose(state, mistake["state"], rtol=0, atol=tol):
                problems.append(MESSAGES[name])
                match = mistake  # its loss is the one to compare with: one mistake, one message
                break
        else:
            unchanged = np.array_equal(state, ref["before"])
            problems.append(
                "the parameters after the step differ from one SGD step on eq. (2)"
                + (" (they did not change at all: call optimizer.step())" if unchanged else "")
                + ". Hint: FGSM in eval mode, against the labels that `labels` names, the "
                "mixed loss with the true y in train mode, zero_grad, backward, step."
            )
    loss, want = got.facts.get("loss"), (match or ref["ref"])["loss"]
    if loss is None or abs(loss - want) > 1e3 * tol * max(1.0, abs(loss)):
        problems.append(
            f"the returned loss is {got.type if loss is None else f'{loss:.5g}'}; return the "
            f"value of the mixed loss, loss.item() ({want:.5g} here)."
        )
    if got.facts.get("training") is not True:
        problems.append("the model is left in eval mode; leave it in train mode (model.train()).")
    x_after = got.arrays.get("x_after")
    if x_after is None or not np.array_equal(x_after, ref["x"]):
        problems.append("fgsm_training_step() changed its input x in place.")
    return problems


EXERCISE = Exercise(
    name="03_fgsm_training",
    functions=(
        GradedFunction(
            name="fgsm_training_step",
            case_type=StepCase,
            call=call_step,
            reference=reference_step,
            score=score_step,
            facts={"loss": as_float, "training": as_bool},
            arrays=("state", "x_after"),
            course_answers=("course_adv.training.objectives._mixed_loss",),
        ),
    ),
    cases=(
        StepCase(function="fgsm_training_step", eps=0.3, alpha=0.5, seed=0, n=32, points=2),
        StepCase(function="fgsm_training_step", eps=0.1, alpha=0.3, seed=1, n=16, points=2),
        StepCase(function="fgsm_training_step", eps=0.2, alpha=0.7, seed=2, n=8, points=1, dtype="float64"),
        StepCase(function="fgsm_training_step", eps=0.25, alpha=0.9, lr=0.05, seed=3, n=24, points=1),
        StepCase(function="fgsm_training_step", eps=0.3, alpha=0.5, seed=4, n=32, points=2, labels="predicted"),
        StepCase(function="fgsm_training_step", eps=0.15, alpha=0.4, seed=5, n=16, points=2, labels="predicted", dtype="float64"),
    ),
)  # fmt: skip
