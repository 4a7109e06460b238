"""Honest robustness evaluation: accuracy, robust accuracy, curves over epsilon, transfer.

The attacks come in the two call shapes of ``course_adv.attacks``: an ``Attack`` is
``attack(model, x, y) -> x_adv`` (e.g. ``lambda m, x, y: pgd(m, x, y, 0.3, 0.01, 50)``), an
``AttackFamily`` is ``attack(model, x, y, eps) -> x_adv``, for curves over epsilon
(``course_adv.attacks.fgsm`` itself is one).

Robust accuracy (COURSE.md section 2) is the share of *all* points classified correctly under
the attack; with several attack runs (restarts, attacks), correct under every run. A point
counts as broken as soon as one run fools the model, and broken points are not attacked
again. Worst cases over attacks are taken per point, never as the minimum of per-attack
means. White-box verdicts may use ``pgd(..., freeze_fooled=True)`` (an example stops at its
first fooling iterate); whatever is crafted on one model and used on another
(``transfer_matrix``) must use final iterates, the attacks' default.

The checklist of Carlini et al. 2019 lives in ``course_adv.checklist``. Nothing here sets
global state: no seeding, no ``torch.set_flush_denormal`` (notebooks and commands set those).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import Attack, AttackFamily
from .utils import check_data, device_of, eval_mode

__all__ = [
    "predict",
    "accuracy",
    "robust_mask",
    "robust_accuracy",
    "accuracy_vs_eps",
    "EpsCurve",
    "worst_case_accuracy",
    "transfer_matrix",
    "TransferMatrix",
    "zero_gradient_fraction",
    "output_kind",
    "random_sign_noise",
    "transfer_rate",
]


# --------------------------------------------------------------------------- basics


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """The model's logits for ``x`` in eval mode, batched; on ``x``'s device.

    Every submodule's train/eval mode is restored afterwards (``utils.eval_mode``).
    """
    _check_batch_size(batch_size)
    device = device_of(model)
    with eval_mode(model):
        out = [
            model(x[i : i + batch_size].to(device)).to(x.device)
            for i in range(0, len(x), batch_size)
        ]
    return torch.cat(out)


def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000
) -> float:
    """Share of ``x`` the model classifies as ``y`` (eval mode)."""
    check_data(x, y)
    return (predict(model, x, batch_size=batch_size).argmax(1) == y).float().mean().item()


def robust_mask(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack | Sequence[Attack],
    *,
    restarts: int = 1,
    early_exit: bool = True,
    batch_size: int = 500,
) -> torch.Tensor:
    """Per point: True if the model classifies the point correctly under every attack run.

    ``attack`` is one attack ``attack(model, x, y) -> x_adv`` or a list of them; each is run
    ``restarts`` times (useful when it starts at random). With ``early_exit`` (the default)
    each run attacks only the points no earlier run has broken, so evaluation gets faster as
    the model gets weaker; without it every run attacks every point (for deterministic
    attacks the result is the same). Every point is attacked, clean mistakes included: a point
    counts when the model gets it right under attack. Returns a bool tensor on ``x``'s device.
    """
    check_data(x, y)
    _check_batch_size(batch_size)
    if not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 1:
        raise ValueError(f"restarts must be an int >= 1, got {restarts!r}")
    runs = list(attack) if isinstance(attack, Sequence) else [attack]
    if not runs or not all(callable(a) for a in runs):
        raise TypeError("attack must be a callable attack(model, x, y) -> x_adv or a list of them")
    device = device_of(model)
    robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for run in [a for a in runs for _ in range(restarts)]:
        todo = robust.nonzero().flatten() if early_exit else torch.arange(len(x), device=x.device)
        for start in range(0, len(todo), batch_size):
            idx = todo[start : start + batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            correct = predict(model, run(model, xb, yb), batch_size=batch_size).argmax(1) == yb
            robust[idx] &= correct.to(robust.device)
        if early_exit and not robust.any():
            break
    return robust


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack | Sequence[Attack],
    *,
    restarts: int = 1,
    early_exit: bool = True,
    batch_size: int = 500,
) -> float:
    """Robust accuracy: the share of all points classified correctly under every attack run.

    See ``robust_mask`` for ``restarts`` and ``early_exit``. A point is broken if any run
    fooled it; ``pgd(..., freeze_fooled=True)`` returns, per point, an iterate that fools the
    model if any of its iterates did, so it is the fast way to a white-box verdict.
    """
    mask = robust_mask(
        model, x, y, attack, restarts=restarts, early_exit=early_exit, batch_size=batch_size
    )
    return mask.float().mean().item()


# --------------------------------------------------------------------------- tidy results


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _text_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _html_table(rows: list[dict[str, Any]], columns: list[str], caption: str = "") -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_fmt(r.get(c, '')))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class EpsCurve:
    """Accuracy and confidence under one attack family over an epsilon grid.

    ``rows``: one dict per epsilon with ``label``, ``eps``, ``accuracy`` (fraction in [0, 1]),
    ``confidence`` (mean max-softmax on the misclassified adversarial examples, nan if none)
    and ``n`` (points). ``eps``, ``accuracy`` and ``confidence`` give the columns as lists, so
    ``course_adv.plotting.plot_accuracy_vs_eps`` draws an EpsCurve or a list of them.
    """

    label: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def eps(self) -> list[float]:
        return [r["eps"] for r in self.rows]

    @property
    def accuracy(self) -> list[float]:
        return [r["accuracy"] for r in self.rows]

    @property
    def confidence(self) -> list[float]:
        return [r["confidence"] for r in self.rows]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows]

    def __str__(self) -> str:
        return f"{self.label}\n" + _text_table(self.rows, ["eps", "accuracy", "confidence", "n"])

    def _repr_html_(self) -> str:
        return _html_table(self.rows, ["eps", "accuracy", "confidence", "n"], self.label)


def accuracy_vs_eps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack_fn: AttackFamily,
    eps_grid: Sequence[float],
    *,
    label: str | None = None,
    batch_size: int = 500,
) -> EpsCurve:
    """Accuracy on adversarial examples, and their confidence, for each epsilon in the grid.

    ``attack_fn(model, x, y, eps) -> x_adv`` is called with the true labels (wrap it to
    attack the model's predictions instead, ``lambda m, x, y, e: fgsm(m, x, None, e)``).
    Accuracy is robust accuracy: correct under attack over all points. Every point is attacked (as in the accuracy-versus-epsilon figures of Goodfellow et al.
    2015 and Kurakin et al. 2017), so label leaking can show as accuracy above the clean
    one; ``eps = 0`` is the clean accuracy without calling the attack. Confidence is the mean
    max-softmax probability on the misclassified adversarial examples (nan when none are).
    """
    check_data(x, y)
    _check_batch_size(batch_size)
    grid = [float(e) for e in eps_grid]
    if not grid or any(not (0 <= e <= 1) for e in grid):
        raise ValueError(
            f"eps_grid must be a non-empty list of numbers in [0, 1], got {eps_grid!r}"
        )
    device = device_of(model)
    label = label or getattr(attack_fn, "__name__", None) or "attack"
    curve = EpsCurve(str(label))
    for eps in grid:
        correct, conf_sum, wrong = 0, 0.0, 0
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            x_adv = xb if eps == 0 else attack_fn(model, xb, yb, eps)
            probs = F.softmax(predict(model, x_adv, batch_size=batch_size).double(), dim=1)
            top, pred = probs.max(1)
            miss = pred != yb
            correct += int((~miss).sum())
            wrong += int(miss.sum())
            conf_sum += float(top[miss].sum())
        curve.rows.append(
            {
                "label": curve.label,
                "eps": eps,
                "accuracy": correct / len(x),
                "confidence": conf_sum / wrong if wrong else float("nan"),
                "n": len(x),
            }
        )
    return curve


def worst_case_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    named_attacks: Mapping[str, Attack],
    *,
    restarts: int = 1,
    early_exit: bool = True,
    batch_size: int = 500,
) -> dict[str, float]:
    """Robust accuracy under each named attack, and the per-point worst case over all of them.

    Returns ``{"clean": ..., name: ..., "worst case": ...}`` where the worst case is the mean
    over points of the minimum over attacks (a point counts only if no attack broke it),
    which can be far below the minimum of the per-attack accuracies.
    """
    if not isinstance(named_attacks, Mapping) or not named_attacks:
        raise TypeError(
            "named_attacks must be a non-empty dict {name: attack(model, x, y) -> x_adv}"
        )
    result = {"clean": accuracy(model, x, y, batch_size=batch_size)}
    worst = None
    for name, attack in named_attacks.items():
        mask = robust_mask(
            model, x, y, attack, restarts=restarts, early_exit=early_exit, batch_size=batch_size
        )
        result[str(name)] = mask.float().mean().item()
        worst = mask if worst is None else worst & mask
    result["worst case"] = worst.float().mean().item()
    return result


@dataclass
class TransferMatrix:
    """``error[i][j]``: error of target ``j`` on examples crafted on source ``i``.

    A diagonal entry (a model both source and target) is the white-box error.
    """

    sources: list[str]
    targets: list[str]
    error: list[list[float]]

    def as_dicts(self) -> list[dict[str, Any]]:
        """Tidy rows ``{"source", "target", "error"}``."""
        return [
            {"source": s, "target": t, "error": self.error[i][j]}
            for i, s in enumerate(self.sources)
            for j, t in enumerate(self.targets)
        ]

    def _rows(self) -> list[dict[str, Any]]:
        return [
            {"source \\ target": s, **{t: self.error[i][j] for j, t in enumerate(self.targets)}}
            for i, s in enumerate(self.sources)
        ]

    def __str__(self) -> str:
        return "error of target on examples crafted on source\n" + _text_table(
            self._rows(), ["source \\ target", *self.targets]
        )

    def _repr_html_(self) -> str:
        return _html_table(
            self._rows(),
            ["source \\ target", *self.targets],
            "error of target on source's examples",
        )


def _named(
    models: Mapping[str, nn.Module] | Sequence[nn.Module], what: str
) -> dict[str, nn.Module]:
    if isinstance(models, Mapping):
        named = {str(k): v for k, v in models.items()}
    elif isinstance(models, Sequence):
        named = {f"{type(m).__name__}#{i}": m for i, m in enumerate(models)}
    else:
        raise TypeError(f"{what} must be a dict {{name: model}} or a list of models")
    if not named or not all(isinstance(m, nn.Module) for m in named.values()):
        raise TypeError(f"{what} must hold at least one nn.Module")
    return named


def transfer_matrix(
    sources: Mapping[str, nn.Module] | Sequence[nn.Module],
    targets: Mapping[str, nn.Module] | Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    batch_size: int = 500,
) -> TransferMatrix:
    """Transferability (Szegedy et al. 2014; Papernot et al. 2016): craft ``attack`` on each
    source, measure every target's error on those examples (every point counts).

    Use attacks that return their final iterate (the default of ``pgd`` and ``bim``), not
    ``freeze_fooled=True``: an example frozen just past the source's decision boundary
    transfers badly, and the matrix would show iterative attacks weaker than they are.
    """
    check_data(x, y)
    src, tgt = _named(sources, "sources"), _named(targets, "targets")
    errors = []
    for source in src.values():
        device = device_of(source)
        crafted = torch.cat(
            [
                attack(
                    source, x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
                ).to(x.device)
                for i in range(0, len(x), batch_size)
            ]
        )
        errors.append(
            [1.0 - accuracy(target, crafted, y, batch_size=batch_size) for target in tgt.values()]
        )
    return TransferMatrix(list(src), list(tgt), errors)


# --------------------------------------------------------------------------- diagnostics


def zero_gradient_fraction(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500
) -> float:
    """Share of points whose input gradient of the cross-entropy is exactly zero.

    A sign of gradient masking (Athalye et al. 2018; Carlini et al. 2019, section 5): a
    saturated softmax (huge logits) or a non-differentiable step gives gradient attacks
    nothing to follow. Every submodule's mode is restored and no parameter gradient is left.
    """
    check_data(x, y)
    _check_batch_size(batch_size)
    device = device_of(model)
    zero = 0
    with eval_mode(model), torch.enable_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device).detach().requires_grad_(True)
            loss = F.cross_entropy(model(xb), y[i : i + batch_size].to(device), reduction="sum")
            (grad,) = torch.autograd.grad(loss, xb)
            zero += int((grad.flatten(1).abs().amax(1) == 0).sum())
    return zero / len(x)


def output_kind(model: nn.Module, x: torch.Tensor) -> str:
    """``"logits"``, ``"probabilities"`` (rows in [0, 1] summing to 1) or ``"log-probabilities"``.

    Attacks and the cross-entropy expect logits; a softmax inside the model saturates the
    loss and masks gradients (Carlini & Wagner 2017, section 5).
    """
    out = predict(model, x[:256]).double()
    if out.dim() != 2:
        return "other"
    ones = torch.ones(len(out), dtype=out.dtype, device=out.device)
    if out.min() >= 0 and out.max() <= 1 and torch.allclose(out.sum(1), ones, atol=1e-3):
        return "probabilities"
    if out.max() <= 0 and torch.allclose(out.logsumexp(1), ones - 1, atol=1e-3):
        return "log-probabilities"
    return "logits"


def random_sign_noise(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """The random control, an ``AttackFamily``: x + eps * (random +-1 per pixel), clipped.

    Uses torch's global random stream (seed it to repeat a draw); ``model`` and ``y`` are
    ignored, so it can stand wherever an attack does.
    """
    sign = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1
    return (x.detach() + eps * sign).clamp(0, 1)


def transfer_rate(
    source: nn.Module,
    target: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    batch_size: int = 500,
) -> float:
    """Per-example transfer rate: of the source's successful adversarial examples, the share
    that fools the target too (Szegedy et al. 2014; Papernot et al. 2016).

    Counted only on points the source classifies correctly clean and misclassifies after
    ``attack(source, x, y)``: an example that does not fool its own model is no adversarial
    example of it, and counting it would mix the attack's white-box failures into the rate.
    Of those, the rate is the share the target misclassifies (its prediction differs from
    ``y``); the target's own clean mistakes are kept, as in a transfer matrix (pass only the
    points the target gets right to leave them out). nan when the source has no success.
    Use attacks that return final iterates (see ``transfer_matrix``).
    """
    check_data(x, y)
    _check_batch_size(batch_size)
    device = device_of(source)
    x_adv = torch.cat(
        [
            attack(source, x[i : i + batch_size].to(device), y[i : i + batch_size].to(device))
            for i in range(0, len(x), batch_size)
        ]
    ).to(x.device)
    source_right = predict(source, x, batch_size=batch_size).argmax(1) == y
    source_fooled = predict(source, x_adv, batch_size=batch_size).argmax(1) != y
    target_fooled = predict(target, x_adv, batch_size=batch_size).argmax(1) != y
    counted = source_right & source_fooled
    if not counted.any():
        return float("nan")
    return (target_fooled & counted).sum().item() / counted.sum().item()
