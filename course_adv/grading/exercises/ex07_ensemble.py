"""Exercise 07 (``07_ensemble_training.ipynb``): one batch of ensemble adversarial training.

Tramer et al. 2018, "Ensemble Adversarial Training": eq. (2) of Goodfellow et al. with the
adversarial half crafted on a source drawn, per batch, from the model being trained and the
static pre-trained models::

    k ~ U{0, ..., K}   (one draw: torch.randint(K + 1, (), generator=generator))
    x_adv = clip_[0,1]( x + eps sign(grad_x J(source_k, x, y)) )   (source_k in eval mode)
    loss  = alpha J(theta, x, y) + (1 - alpha) J(theta, x_adv, y)   (the model in train mode)

``ensemble_loss(model, static, x, y, eps, alpha, generator)`` returns ``(loss, k)``: the loss
tensor (for the training loop to back-propagate) and the index of the source, 0 for the
model being trained and ``i`` for ``static[i - 1]`` (``EnsembleAdversarial.source_counts``'s
convention). The FGSM half is crafted by hand: ``course_adv.attacks.fgsm`` and the library's
mixed loss earn nothing. The model being trained is a BatchNorm MLP in train mode (where
crafting in train mode changes the result); the static models are a linear model (nearest
class mean) and a small CNN with dropout, both in eval mode.

Graded against ``course_adv.training.EnsembleAdversarial`` run from the same seed (which
source, and the loss, from one forward pass over both halves or from two), on the modes left
behind, the gradients left in any model's ``.grad`` and whether the loss can be
back-propagated. The diagnoses recognise: always crafting on the model being trained, another
source than the one drawn, the source's own predictions as labels, the clean half or alpha
forgotten, crafting with the model in train mode, and gradients leaking into the models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_adv.data import load_data
from course_adv.grading.digits import DigitCase, bn_model, class_means, one_thread
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
from course_adv.models import SmallCNN, SoftmaxRegression
from course_adv.training import EnsembleAdversarial

N_STATIC = 2
STATIC_NAMES = ("static[0], the linear model", "static[1], the small CNN")


def static_models(seed: int) -> list[nn.Module]:
    """Two static models of other architectures: the nearest-class-mean linear model (logit_c
    = 0.5 m_c.x - |m_c|^2 / 4, confident but not saturated) and a seeded CNN with dropout."""
    means = class_means()
    linear = SoftmaxRegression()
    with torch.no_grad():
        linear.linear.weight.copy_(0.5 * means)
        linear.linear.bias.copy_(-0.25 * (means**2).sum(1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        cnn = SmallCNN(width=0.5, dropout=0.5)
    return [linear.eval(), cnn.eval()]


def _warm_up(model: nn.Module, seed: int, steps: int = 40) -> None:
    """A few seeded Adam steps on training digits: the model being trained is part-way
    through training, so its clean and adversarial losses differ clearly."""
    data = load_data("mnist5k")
    generator = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    with one_thread():
        for _ in range(steps):
            idx = torch.randint(len(data.y_train), (64,), generator=generator)
            loss = F.cross_entropy(model(data.x_train[idx].to(dtype)), data.y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.zero_grad(set_to_none=True)


def _as_int(value: Any) -> int | None:
    return value if type(value) is int else None


@dataclass(frozen=True, kw_only=True)
class EnsembleCase(DigitCase):
    """The BatchNorm MLP (seeded, running statistics warmed up, train mode), two static
    models, digits, eps, alpha; ``seed`` also seeds the generator that draws the source."""

    model: str = one_of("bn_mlp", default="bn_mlp")
    alpha: float = bounded(0, 1)

    def describe(self) -> str:
        digits = "digit" if self.n == 1 else "digits"
        return (
            f"BatchNorm MLP and 2 static models, {self.dtype}, eps={self.eps:g}, "
            f"alpha={self.alpha:g}, generator seed {self.seed}, {self.n} {digits}"
        )

    def _models(self) -> tuple[nn.Module, list[nn.Module]]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = bn_model()
        dtype = getattr(torch, self.dtype)
        return model.to(dtype), [m.to(dtype) for m in static_models(self.seed)]

    def inputs(self) -> dict[str, Any]:
        base = DigitCase(
            function=self.function,
            eps=self.eps,
            seed=self.seed,
            n=self.n,
            dtype=self.dtype,
            points=0,
        ).inputs()
        x, y = base["x"], base["y"]
        model, static = self._models()
        _warm_up(model, self.seed)
        with torch.no_grad():  # running statistics that differ from any one batch's
            for m in model.modules():
                if isinstance(m, nn.BatchNorm1d):
                    m.reset_running_stats()
            model(x.flip(0) * 0.5)
        return {"model": model.train(), "static": static, "x": x, "y": y}

    def save_inputs(self, inputs: dict[str, Any], stem: Path) -> None:
        torch.save(inputs["model"].state_dict(), f"{stem}.model.pt")
        for i, m in enumerate(inputs["static"]):
            torch.save(m.state_dict(), f"{stem}.static{i}.pt")
        np.save(f"{stem}.x.npy", inputs["x"].numpy(), allow_pickle=False)
        np.save(f"{stem}.y.npy", inputs["y"].numpy(), allow_pickle=False)

    def load_inputs(self, stem: Path) -> dict[str, Any]:
        model, static = self._models()
        model.load_state_dict(torch.load(f"{stem}.model.pt", weights_only=True))
        for i, m in enumerate(static):
            m.load_state_dict(torch.load(f"{stem}.static{i}.pt", weights_only=True))
        dtype = getattr(torch, self.dtype)
        x = torch.from_numpy(np.load(f"{stem}.x.npy", allow_pickle=False)).to(dtype)
        y = torch.from_numpy(np.load(f"{stem}.y.npy", allow_pickle=False)).long()
        return {"model": model.train(), "static": static, "x": x, "y": y}


def _fresh(case: EnsembleCase, inputs: dict[str, Any]) -> tuple[nn.Module, list[nn.Module]]:
    """Copies of the case's models: the model in train mode, the static models in eval mode."""
    model, static = case._models()
    model.load_state_dict(inputs["model"].state_dict())
    for mine, theirs in zip(static, inputs["static"], strict=True):
        mine.load_state_dict(theirs.state_dict())
    return model.train(), [m.eval() for m in static]


def _leftover(models: list[nn.Module]) -> bool:
    """Whether any parameter of these models holds a non-zero gradient."""
    return any(
        p.grad is not None and bool(p.grad.ne(0).any()) for m in models for p in m.parameters()
    )


def call_ensemble(fn: Callable, case: EnsembleCase, inputs: dict[str, Any]) -> tuple[dict, dict]:
    """``fn(model, static, x, y, eps, alpha, generator)`` -> ``(loss, k)``; then the returned
    loss is back-propagated, as the training loop would."""
    model, static = _fresh(case, inputs)
    x = inputs["x"].clone()
    generator = torch.Generator().manual_seed(case.seed)
    result = fn(model, static, x, inputs["y"].clone(), case.eps, case.alpha, generator)
    pair = isinstance(result, tuple | list) and len(result) == 2
    loss, k = result if pair else (result, None)
    if isinstance(k, torch.Tensor) and k.numel() == 1 and not k.is_floating_point():
        k = k.item()
    facts = {
        "type": type_name(result),
        "pair": pair,
        "source": int(k) if isinstance(k, int | np.integer) and not isinstance(k, bool) else None,
        "loss": scalar(loss),
        "training": bool(model.training),
        "static_modes": all(not m.training for s in static for m in s.modules()),
        "static_grads": _leftover(static),
        "model_grads": _leftover([model]),
        "differentiable": False,
    }
    if isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.requires_grad:
        model.zero_grad(set_to_none=True)
        loss.sum().backward()
        facts["differentiable"] = _leftover([model])
        facts["static_grads"] = facts["static_grads"] or _leftover(static)
    return facts, {"x_after": as_array(x)}


def _loss(
    case: EnsembleCase,
    inputs: dict[str, Any],
    k: int,
    *,
    labels: str = "true",
    craft_mode: str = "eval",
    clean: bool = True,
    swap: bool = False,
    one_pass: bool = False,
) -> float:
    """One batch's ensemble loss on source ``k``, or one of the mistakes the diagnoses name."""
    model, static = _fresh(case, inputs)
    x, y = inputs["x"], inputs["y"]
    source = [model, *static][k]
    source.train(craft_mode == "train")
    x_req = x.clone().requires_grad_(True)
    logits = source(x_req)
    target = y if labels == "true" else logits.argmax(1).detach()
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, target, reduction="sum"), x_req)
    x_adv = (x + case.eps * grad.sign()).clamp(0, 1).detach()
    model.train()
    for m in static:
        m.eval()
    a = 1 - case.alpha if swap else case.alpha
    a = 0.0 if not clean else a
    if one_pass:  # both halves through BatchNorm together, as the library does
        losses = F.cross_entropy(model(torch.cat([x, x_adv])), torch.cat([y, y]), reduction="none")
        loss = a * losses[: len(x)].mean() + (1 - a) * losses[len(x) :].mean()
    else:
        loss = a * F.cross_entropy(model(x), y) + (1 - a) * F.cross_entropy(model(x_adv), y)
    return float(loss.item())


def _both(case, inputs, k, **mistake) -> list[float]:
    """The loss with two forward passes and with one over both halves: either is right."""
    return [_loss(case, inputs, k, **mistake), _loss(case, inputs, k, one_pass=True, **mistake)]


def reference_ensemble(case: EnsembleCase, inputs: dict[str, Any]) -> dict[str, Any]:
    """The library's draw and loss from the same seed, the loss on every source, the mistakes."""
    with one_thread():
        model, static = _fresh(case, inputs)
        objective = EnsembleAdversarial(static, case.eps, case.alpha)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(case.seed)  # the generator's seed: the same first draw
            library = float(objective(model, inputs["x"], inputs["y"], 0.0).item())
        k = objective.source_counts.index(1)
        right = [*_both(case, inputs, k), library]
        sources = {j: _both(case, inputs, j) for j in range(N_STATIC + 1) if j != k}
        mistakes = {
            "predicted labels": _both(case, inputs, k, labels="predicted"),
            "no clean half": _both(case, inputs, k, clean=False),
            "alpha swapped": _both(case, inputs, k, swap=True),
        }
        if k == 0:
            mistakes["train-mode crafting"] = _both(case, inputs, k, craft_mode="train")
    return {"x": inputs["x"].numpy(), "k": k, "right": right, "sources": sources, **mistakes}


def _source_name(j: int) -> str:
    return "the model being trained" if j == 0 else STATIC_NAMES[j - 1]


def _tolerance(case: EnsembleCase) -> float:
    return 1e-9 if case.dtype == "float64" else 1e-4


def _close(value: float, candidates: list[float], tol: float) -> bool:
    return any(abs(value - c) <= tol * max(1.0, abs(c)) for c in candidates)


def _wrong_loss(loss: float, case: EnsembleCase, ref: dict[str, Any]) -> str:
    """Why the loss differs from the reference: the mistake it matches, or a general hint."""
    tol, k = _tolerance(case), ref["k"]
    for j, losses in ref["sources"].items():
        if _close(loss, losses, tol):
            if j == 0:
                return (
                    f"the loss is the one with the FGSM half crafted on the model being trained, "
                    f"but the drawn source was {k} ({_source_name(k)}): crafting always on the "
                    "current model is plain eq. (2), not ensemble training."
                )
            return (
                f"the FGSM half was crafted on {_source_name(j)}, but the drawn source was {k} "
                f"({_source_name(k)}); index the list [model, *static] with the draw."
            )
    messages = {
        "predicted labels": f"the FGSM half was crafted on {_source_name(k)} with that model's own "
        "predictions as labels; craft it with the true labels y (a static model's predictions "
        "are not the labels you train on).",
        "no clean half": "only the adversarial loss was returned; the clean half enters with weight "
        "alpha: alpha * J(x) + (1 - alpha) * J(x_adv).",
        "alpha swapped": "alpha weighs the wrong term: the loss is alpha * J(x) + (1 - alpha) * "
        "J(x_adv).",
        "train-mode crafting": "the FGSM half was crafted with the model being trained in train "
        "mode (BatchNorm used the batch's statistics); craft it in eval mode, then switch back to "
        "train mode for the loss.",
    }
    for name, message in messages.items():
        if name in ref and _close(loss, ref[name], tol):
            return message
    return (
        f"the loss is {loss:.6g}, but one batch of ensemble training gives {ref['right'][0]:.6g} "
        f"here (source {k}, {_source_name(k)}). Hint: draw k, craft FGSM on source k in eval "
        "mode with the true labels, mix alpha * J(x) + (1 - alpha) * J(x_adv) in train mode."
    )


def score_ensemble(case: EnsembleCase, ref: dict[str, Any], got: Outcome) -> list[str]:
    """Problems with an answer (empty when it is right), each with a hint."""
    if got.error is not None:
        return error_feedback("ensemble_loss", got.error)
    if not got.facts.get("pair"):
        return [f"ensemble_loss() returned {got.type}; return a pair (loss, k)."]
    problems = []
    k, source = ref["k"], got.facts.get("source")
    if source != k:
        problems.append(
            f"the returned source index is {source!r}, but the generator's draw "
            f"torch.randint({N_STATIC + 1}, (), generator=generator) gives {k}; return it as an "
            "int, 0 for the model being trained and i for static[i - 1]."
        )
    loss = got.facts.get("loss")
    if loss is None:
        problems.append("the loss could not be read as a number; return the loss tensor.")
    elif not _close(loss, ref["right"], _tolerance(case)):
        problems.append(_wrong_loss(loss, case, ref))
    elif not got.facts.get("differentiable"):
        problems.append(
            "the returned loss does not back-propagate into the model's parameters; return the "
            "loss tensor itself (not loss.item(), not detached)."
        )
    if got.facts.get("static_grads"):
        problems.append(
            "gradients leaked into the static models' .grad: they are never trained. Take the "
            "input gradient with torch.autograd.grad(loss, x_adv), which fills no .grad."
        )
    if got.facts.get("model_grads"):
        problems.append(
            "crafting left a gradient in the model's .grad; a training step that clears the "
            "gradients before the loss would add it to the update. Use torch.autograd.grad."
        )
    if got.facts.get("training") is not True:
        problems.append("the model being trained is left in eval mode; leave it in train mode.")
    if got.facts.get("static_modes") is not True:
        problems.append(
            "a static model was left in train mode; it came in eval mode, leave it so (restore "
            "each source's mode after crafting on it)."
        )
    x_after = got.arrays.get("x_after")
    if x_after is None or not np.array_equal(x_after, ref["x"]):
        problems.append("ensemble_loss() changed its input x in place.")
    return problems


EXERCISE = Exercise(
    name="07_ensemble_training",
    functions=(
        GradedFunction(
            name="ensemble_loss",
            case_type=EnsembleCase,
            call=call_ensemble,
            reference=reference_ensemble,
            score=score_ensemble,
            facts={
                "pair": as_bool,
                "source": _as_int,
                "loss": as_float,
                "training": as_bool,
                "static_modes": as_bool,
                "static_grads": as_bool,
                "model_grads": as_bool,
                "differentiable": as_bool,
            },
            arrays=("x_after",),
            course_answers=(
                "course_adv.attacks.fgsm",
                "course_adv.training.objectives._mixed_loss",
            ),
        ),
    ),
    cases=(
        EnsembleCase(function="ensemble_loss", eps=0.3, alpha=0.4, seed=2, n=32, points=3),
        EnsembleCase(function="ensemble_loss", eps=0.2, alpha=0.3, seed=1, n=16, points=3),
        EnsembleCase(function="ensemble_loss", eps=0.25, alpha=0.7, seed=0, n=8, points=2, dtype="float64"),
        EnsembleCase(function="ensemble_loss", eps=0.1, alpha=0.6, seed=7, n=24, points=2, dtype="float64"),
    ),
)  # fmt: skip
