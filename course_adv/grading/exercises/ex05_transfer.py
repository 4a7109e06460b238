"""Exercise 05 (``05_transfer_blackbox.ipynb``): the transfer rate, and one augmentation step.

Notebook 05 calls the library for both; the exercise does the bookkeeping and the step by hand.

``transfer_rate(source, target, x, y, attack)``: craft ``x_adv = attack(source, x, y)``; count
only the points where the attack succeeds on the source (the source is right on ``x`` and
wrong on ``x_adv``: an example that does not fool its own model is no adversarial example of
it); return the share of those the target misclassifies on ``x_adv`` (Papernot et al. 2016).
Graded against ``course_adv.evaluation.transfer_rate``; the diagnoses recognise the plain
error of the target on every point (a transfer-matrix entry), the missing condition on the
source's clean answer or on its being fooled, an extra condition on the target's clean
answer, examples crafted on the target, the complement and a percentage.

``jacobian_augmentation(substitute, x, labels, lam)``: one step of Papernot et al. 2017's
Jacobian-based dataset augmentation (section 4.2)::

    S_{rho+1} = { x + lam * sign(grad_x z_{O(x)}(x)) : x in S_rho }  union  S_rho

with ``z`` the substitute's logits and ``O(x) = labels``, each new point clipped to [0, 1],
returned after the old ones (2N points). Graded against
``course_adv.blackbox.jacobian_augmentation``; the diagnoses recognise the loss gradient
(FGSM's step), the softmax probability, the substitute's own labels, the raw gradient without
its sign, a missing clip, the new points alone and the two halves swapped.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_adv import attacks
from course_adv.blackbox import jacobian_augmentation
from course_adv.data import load_data
from course_adv.evaluation import transfer_rate
from course_adv.grading.digits import MODEL_NAMES, DigitCase, one_thread
from course_adv.grading.spec import (
    Exercise,
    GradedFunction,
    Outcome,
    as_bool,
    as_float,
    bounded,
    error_feedback,
    one_of,
    scalar,
    tensor_answer,
    type_name,
)

ATOL = 1e-5  # a pixel agrees with the reference within this
MISMATCH_ALLOWED = 0.005  # share of pixels that may differ (gradients within float noise of 0)
TARGETS = {"trained": "trained softmax regression", "cnn": "untrained small CNN"}

# --------------------------------------------------------------------------- transfer rate


@functools.lru_cache(maxsize=4)
def _trained_softmax_state(seed: int) -> dict[str, torch.Tensor]:
    """Softmax regression after one seeded epoch of SGD on 2,000 training digits: a target that
    differs from the nearest-class-mean source but agrees with it on most digits."""
    data = load_data("mnist5k")
    x, y = data.x_train[:2000].flatten(1), data.y_train[:2000]
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(seed)
        model = nn.Linear(784, 10)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for idx in torch.randperm(len(y)).split(100):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {f"linear.{k}": v.detach().clone() for k, v in model.state_dict().items()}


@dataclass(frozen=True, kw_only=True)
class TransferCase(DigitCase):
    """Source ``model`` (DigitCase's), a ``target``, digits, and FGSM's ``eps`` as the attack."""

    target: str = one_of("trained", "cnn", default="trained")

    def describe(self) -> str:
        return (
            f"source {MODEL_NAMES[self.model]}, target {TARGETS[self.target]}, {self.dtype}, "
            f"FGSM eps={self.eps:g}, {self.n} digits"
        )

    def _target(self) -> nn.Module:
        kind = "softmax" if self.target == "trained" else "cnn"
        other = DigitCase(
            function=self.function, eps=0, seed=self.seed + 1, n=1, model=kind, points=0
        )
        model = other._model()  # seeded: the source and the target never share weights
        if self.target == "trained":
            model.load_state_dict(_trained_softmax_state(self.seed))
        return model.to(getattr(torch, self.dtype)).eval()

    def inputs(self) -> dict[str, Any]:
        base = super().inputs()
        return {"source": base["model"], "target": self._target(), "x": base["x"], "y": base["y"]}

    def save_inputs(self, inputs: dict[str, Any], stem: Path) -> None:
        super().save_inputs({**inputs, "model": inputs["source"]}, stem)
        torch.save(inputs["target"].state_dict(), f"{stem}.target.pt")

    def load_inputs(self, stem: Path) -> dict[str, Any]:
        base = super().load_inputs(stem)
        target = self._target()
        target.load_state_dict(torch.load(f"{stem}.target.pt", weights_only=True))
        return {"source": base["model"], "target": target, "x": base["x"], "y": base["y"]}


def _fgsm(eps: float) -> Callable:
    def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attacks.fgsm(model, x, y, eps)

    return attack


def call_transfer(fn: Callable, case: TransferCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(source, target, x, y, attack)`` with FGSM at the case's eps; x's copy comes back."""
    x = inputs["x"].clone()
    result = fn(inputs["source"], inputs["target"], x, inputs["y"].clone(), _fgsm(case.eps))
    return {"type": type_name(result), "rate": scalar(result)}, {"x_after": x.numpy()}


def _share(hit: torch.Tensor, counted: torch.Tensor) -> float:
    return (hit & counted).sum().item() / counted.sum().item() if counted.any() else math.nan


def reference_transfer(case: TransferCase, inputs: dict[str, Any]) -> dict[str, Any]:
    """The library's rate, the counts behind it, and the rates of the typical mistakes."""
    source, target, x, y = inputs["source"], inputs["target"], inputs["x"], inputs["y"]
    with one_thread(), torch.no_grad():
        ref = transfer_rate(source, target, x, y, _fgsm(case.eps))
        x_adv = attacks.fgsm(source, x, y, case.eps)
        x_own = attacks.fgsm(target, x, y, case.eps)
        src_right = source(x).argmax(1) == y
        src_fooled = source(x_adv).argmax(1) != y
        tgt_right = target(x).argmax(1) == y
        tgt_fooled = target(x_adv).argmax(1) != y
        everywhere = torch.ones_like(y, dtype=torch.bool)
        counted = src_right & src_fooled
        own = (source(x_own).argmax(1) != y) & src_right
        own_fooled = target(x_own).argmax(1) != y
    mistakes = {
        "every point": _share(tgt_fooled, everywhere),
        "clean only": _share(tgt_fooled, src_right),
        "fooled only": _share(tgt_fooled, src_fooled),
        "target right too": _share(tgt_fooled, counted & tgt_right),
        "crafted on target": _share(own_fooled, own),
        "complement": 1 - ref,
        "percent": 100 * ref,
    }
    return {"x": x.numpy(), "ref": ref, "counted": int(counted.sum()), "mistakes": mistakes}


TRANSFER_MESSAGES = {
    "every point": "that is the target's error on every adversarial example (an entry of the "
    "transfer matrix); count only the points where the attack succeeds on the source.",
    "clean only": "you counted every point the source gets right clean, also those where the "
    "attack fails on the source; an example that does not fool its own model has nothing to "
    "transfer: keep only the points the source gets right on x and wrong on x_adv.",
    "fooled only": "you counted the points where the source is wrong on x_adv, including those "
    "it already got wrong on x; keep only the points the source gets right on x.",
    "target right too": "you also dropped the points the target gets wrong on x; the rate keeps "
    "them (as a transfer matrix does): condition on the source only.",
    "crafted on target": "the examples were crafted on the target: call attack(source, x, y), "
    "the attacker has only the source's gradients.",
    "complement": "that is the share that does not transfer; return the share of the counted "
    "points that the target misclassifies.",
    "percent": "return a fraction in [0, 1], not a percentage.",
}


def score_transfer(case: TransferCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    if got.error is not None:
        return error_feedback("transfer_rate", got.error)
    rate = got.facts.get("rate")
    if rate is None:
        return [f"transfer_rate() returned {got.type or 'nothing readable'}; return a float."]
    problems = []
    x_after = got.arrays.get("x_after")
    if x_after is None or not np.array_equal(x_after, ref["x"]):
        problems.append("transfer_rate() changed its input x in place.")
    tol = 1.01 / max(ref["counted"], 1)  # one point's worth: float noise may flip a verdict
    if abs(rate - ref["ref"]) <= tol:
        return problems
    for name, value in ref["mistakes"].items():
        if not math.isnan(value) and abs(rate - value) <= 1e-6:
            return [*problems, TRANSFER_MESSAGES[name]]
    return [
        *problems,
        f"got {rate:.4g}, expected {ref['ref']:.4g} ({ref['counted']} points counted). Hint: "
        "per point, three verdicts: the source on x, the source on x_adv, the target on x_adv.",
    ]


# --------------------------------------------------------------------------- augmentation


@dataclass(frozen=True, kw_only=True)
class AugmentCase(DigitCase):
    """A substitute, digits with their (oracle's) labels, and the step ``lam``."""

    lam: float = bounded(-1, 1)
    eps: float = bounded(0, 1, default=0.0)  # unused: the step is lam

    def describe(self) -> str:
        digits = "digit" if self.n == 1 else "digits"
        return f"{MODEL_NAMES[self.model]}, {self.dtype}, lam={self.lam:g}, {self.n} {digits}"


def call_augment(fn: Callable, case: AugmentCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(substitute, x, labels, lam)`` on copies; x's copy comes back as ``x_after``."""
    x = inputs["x"].clone()
    result = fn(inputs["model"], x, inputs["y"].clone(), case.lam)
    return tensor_answer(result, x)


def _step(model, x, labels, lam, *, score="logit", sign=True, clip=True):
    """The new points with one thing changed: the mistakes the diagnoses recognise."""
    x_in = x.clone().requires_grad_(True)
    logits = model(x_in)
    if score == "own":
        labels = logits.argmax(1)
    if score == "loss":
        value = F.cross_entropy(logits, labels, reduction="sum")
    elif score == "probability":
        value = logits.softmax(1).gather(1, labels.view(-1, 1)).sum()
    else:
        value = logits.gather(1, labels.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(value, x_in)
    new = x + lam * (grad.sign() if sign else grad)
    return (new.clamp(0, 1) if clip else new).detach()


def reference_augment(case: AugmentCase, inputs: dict[str, Any]) -> dict[str, Any]:
    model, x, y = inputs["model"], inputs["x"], inputs["y"]
    with one_thread():
        ref = jacobian_augmentation(model, x, y, case.lam)
        mistakes = {
            name: torch.cat([x, _step(model, x, y, case.lam, **options)]).numpy()
            for name, options in (
                ("loss", {"score": "loss"}),
                ("probability", {"score": "probability"}),
                ("own", {"score": "own"}),
                ("no sign", {"sign": False}),
                ("no clip", {"clip": False}),
            )
        }
    return {"x": x.numpy(), "ref": ref.numpy(), "mistakes": mistakes}


AUGMENT_MESSAGES = {
    "loss": "that is FGSM's step, along the gradient of the cross-entropy loss; the augmentation "
    "follows the gradient of the substitute's logit for the oracle's label, z_label(x).",
    "probability": "you differentiated the softmax probability of the label; differentiate its "
    "logit (the model's output before the softmax), which does not saturate.",
    "own": "you took the gradient for the substitute's own predicted class; use the oracle's "
    "labels you are given (the substitute learns where the oracle's boundaries are).",
    "no sign": "the step is lam times the sign of the gradient, not the gradient itself.",
    "no clip": "new points leave [0, 1]: clip them, they must stay images.",
}


def _matches(out: np.ndarray, target: np.ndarray) -> bool:
    return bool(np.mean(~np.isclose(out, target, atol=ATOL)) <= MISMATCH_ALLOWED)


def score_augment(case: AugmentCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    if got.error is not None:
        return error_feedback("jacobian_augmentation", got.error)
    out, x, want = got.arrays.get("out"), ref["x"], ref["ref"]
    if got.type != "torch.Tensor" or out is None:
        return [
            f"jacobian_augmentation() returned {got.type or 'nothing readable'}; "
            "return a torch.Tensor."
        ]
    if out.shape == x.shape and _matches(out, want[len(x) :]):
        return ["only the new points came back; return the old ones followed by the new (2N)."]
    if out.shape != want.shape:
        return [
            f"the result has shape {tuple(out.shape)}; return shape {want.shape}: x, then x's steps."
        ]
    problems = []
    x_after = got.arrays.get("x_after")
    if x_after is None or not np.array_equal(x_after, x):
        problems.append("jacobian_augmentation() changed its input x in place; work on a copy.")
    if got.facts.get("requires_grad"):
        problems.append("the result is attached to the autograd graph; return it detached.")
    if not np.isfinite(out).all():
        return [*problems, "the result contains NaN or infinity."]
    if _matches(out, want):
        return problems
    if _matches(out[: len(x)], want[len(x) :]) and _matches(out[len(x) :], x):
        return [*problems, "the two halves are swapped: the old points come first, then the new."]
    if not np.array_equal(out[: len(x)].astype(x.dtype), x):
        return [*problems, "the first N points must be x itself, unchanged (S_rho is kept)."]
    for name, mistake in ref["mistakes"].items():
        if _matches(out, mistake):
            return [*problems, AUGMENT_MESSAGES[name]]
    wrong = np.mean(~np.isclose(out[len(x) :], want[len(x) :], atol=ATOL))
    return [
        *problems,
        f"the new points differ from the reference on {wrong:.0%} of the pixels. Hint: one "
        "gradient per point, of the logit of its label, then a step of lam along its sign.",
    ]


# --------------------------------------------------------------------------- the exercise

EXERCISE = Exercise(
    name="05_transfer_blackbox",
    functions=(
        GradedFunction(
            name="transfer_rate",
            case_type=TransferCase,
            call=call_transfer,
            reference=reference_transfer,
            score=score_transfer,
            facts={"rate": as_float},
            arrays=("x_after",),
            course_answers=(
                "course_adv.evaluation.transfer_rate",
                "course_adv.evaluation.transfer_matrix",
            ),
        ),
        GradedFunction(
            name="jacobian_augmentation",
            case_type=AugmentCase,
            call=call_augment,
            reference=reference_augment,
            score=score_augment,
            facts={"requires_grad": as_bool},
            arrays=("out", "x_after"),
            course_answers=(
                "course_adv.blackbox.jacobian_augmentation",
                "course_adv.blackbox.train_substitute",
            ),
        ),
    ),
    cases=(
        TransferCase(function="transfer_rate", eps=0.1, seed=0, n=200, points=3),
        TransferCase(function="transfer_rate", eps=0.2, seed=1, n=100, points=2, target="cnn"),
        TransferCase(function="transfer_rate", eps=0.05, seed=2, n=150, points=2, dtype="float64"),
        AugmentCase(function="jacobian_augmentation", lam=0.1, seed=3, n=8, points=3, model="cnn"),
        AugmentCase(function="jacobian_augmentation", lam=-0.1, seed=4, n=8, points=2),
        AugmentCase(function="jacobian_augmentation", lam=0.3, seed=5, n=4, points=2, model="cnn", dtype="float64"),
    ),
)  # fmt: skip
