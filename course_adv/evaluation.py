"""Honest robustness evaluation: accuracy, robust accuracy, curves over epsilon, transfer,
and the checklist of Carlini et al. 2019 ("On Evaluating Adversarial Robustness").

Two calling conventions, used everywhere in this file:

- an *attack* is ``attack(model, x, y) -> x_adv`` (e.g.
  ``lambda m, x, y: pgd(m, x, y, 0.3, 0.01, 50)`` or
  ``functools.partial(pgd, eps=0.3, alpha=0.01, steps=50)``);
- an *attack family* is ``attack_fn(model, x, y, eps) -> x_adv``, for curves over epsilon
  (``course_adv.attacks.fgsm`` itself is one).

Robust accuracy (COURSE.md section 2) is the share of *all* points that are classified
correctly clean and under every attack run: a point counts as broken as soon as any run
(restart, attack) fools the model, and broken points are not attacked again. Worst cases over
attacks are taken per point, never as the minimum of per-attack means.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import attacks
from .utils import seed_everything

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
    "robustness_checklist",
    "Check",
    "Report",
]

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
AttackFamily = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]


# --------------------------------------------------------------------------- basics


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _check_xy(x: Any, y: Any) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a float tensor of pixels in [0, 1]")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
        raise TypeError("y must be a 1-D int64 tensor of true labels")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length ({len(x)} != {len(y)})")


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """The model's logits for ``x`` in eval mode, batched; on ``x``'s device.

    The model's train/eval mode is restored afterwards.
    """
    _check_batch_size(batch_size)
    device, was_training = _device_of(model), model.training
    model.eval()
    try:
        out = [
            model(x[i : i + batch_size].to(device)).to(x.device)
            for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out)


def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000
) -> float:
    """Share of ``x`` the model classifies as ``y`` (eval mode)."""
    _check_xy(x, y)
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
    """Per point: True if the model is right on the clean point and under every attack run.

    ``attack`` is one attack ``attack(model, x, y) -> x_adv`` or a list of them; each is run
    ``restarts`` times (useful when it starts at random). With ``early_exit`` (the default)
    each run attacks only the points no earlier run has broken, and clean mistakes are not
    attacked at all, so evaluation gets faster as the model gets weaker. Without it every run
    attacks every point; for deterministic attacks the result is the same. Returns a bool
    tensor on ``x``'s device.
    """
    _check_xy(x, y)
    _check_batch_size(batch_size)
    if not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be an int >= 1, got {restarts!r}")
    runs = list(attack) if isinstance(attack, Sequence) else [attack]
    if not runs or not all(callable(a) for a in runs):
        raise TypeError("attack must be a callable attack(model, x, y) -> x_adv or a list of them")
    torch.set_flush_denormal(True)
    device = _device_of(model)
    robust = predict(model, x, batch_size=batch_size).argmax(1) == y
    for run in [a for a in runs for _ in range(restarts)]:
        todo = robust.nonzero().flatten() if early_exit else torch.arange(len(x), device=x.device)
        for start in range(0, len(todo), batch_size):
            idx = todo[start : start + batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            x_adv = run(model, xb, yb)
            correct = predict(model, x_adv, batch_size=batch_size).argmax(1) == yb
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
    """Robust accuracy: share of all points right clean and under every attack run.

    See ``robust_mask`` for ``restarts`` and ``early_exit``. A point is broken if any run
    fooled it; ``course_adv.attacks.pgd`` already returns, per point, an iterate that fooled
    the model if any of its iterates did.
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
    ``course_adv.plotting.plot_accuracy_vs_eps`` draws an EpsCurve, a list of them, or
    ``{label: curve}`` directly.
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
    Every point is attacked (as in the accuracy-versus-epsilon figures of Goodfellow et al.
    2015 and Kurakin et al. 2017), so label leaking can show as accuracy above the clean
    one; ``eps = 0`` is the clean accuracy without calling the attack. Confidence is the mean
    max-softmax probability on the misclassified adversarial examples (nan when none are).
    """
    _check_xy(x, y)
    _check_batch_size(batch_size)
    grid = [float(e) for e in eps_grid]
    if not grid or any(not (0 <= e <= 1) for e in grid):
        raise ValueError(
            f"eps_grid must be a non-empty list of numbers in [0, 1], got {eps_grid!r}"
        )
    torch.set_flush_denormal(True)
    device = _device_of(model)
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
    """
    _check_xy(x, y)
    src, tgt = _named(sources, "sources"), _named(targets, "targets")
    errors = []
    for source in src.values():
        device = _device_of(source)
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
    nothing to follow. The model's mode is restored and no parameter gradient is left.
    """
    _check_xy(x, y)
    torch.set_flush_denormal(True)
    device, was_training = _device_of(model), model.training
    model.eval()
    zero = 0
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device).detach().requires_grad_(True)
            loss = F.cross_entropy(model(xb), y[i : i + batch_size].to(device), reduction="sum")
            (grad,) = torch.autograd.grad(loss, xb)
            zero += int((grad.flatten(1).abs().amax(1) == 0).sum())
    finally:
        model.train(was_training)
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
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float
) -> torch.Tensor:
    """The random control: x + eps * (random +-1 per pixel), clipped to [0, 1]."""
    sign = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype).mul_(2).sub_(1)
    return (x + eps * sign).clamp_(0, 1)


# --------------------------------------------------------------------------- the checklist


@dataclass
class Check:
    """One item of the checklist: ``passed`` is True, False (flagged) or None (skipped)."""

    name: str
    passed: bool | None
    detail: str
    values: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return {True: "pass", False: "FLAG", None: "skipped"}[self.passed]


@dataclass
class Report:
    """The result of ``robustness_checklist``: the checks and the accuracies behind them.

    ``passed`` is True when no check is flagged; ``flagged`` names the flagged checks;
    ``accuracy`` maps each attack to the accuracy under it; ``robust_accuracy`` is the
    per-point worst case over every white-box and transfer attack run at ``eps``.
    """

    eps: float
    n: int
    checks: list[Check]
    accuracy: dict[str, float]
    robust_accuracy: float
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.flagged

    @property
    def flagged(self) -> list[str]:
        return [c.name for c in self.checks if c.passed is False]

    def __getitem__(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; checks: {[c.name for c in self.checks]}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "n": self.n,
            "passed": self.passed,
            "robust_accuracy": self.robust_accuracy,
            "accuracy": dict(self.accuracy),
            "seconds": self.seconds,
            "checks": [
                {"name": c.name, "passed": c.passed, "detail": c.detail, "values": c.values}
                for c in self.checks
            ],
        }

    def _rows(self) -> list[dict[str, Any]]:
        return [{"check": c.name, "result": c.status, "numbers": c.detail} for c in self.checks]

    def __str__(self) -> str:
        verdict = (
            "passes" if self.passed else f"FLAGGED ({len(self.flagged)} of {len(self.checks)})"
        )
        head = (
            f"Robustness checklist (Carlini et al. 2019) at eps={self.eps:g} on {self.n} points: "
            f"{verdict}; worst-case robust accuracy {100 * self.robust_accuracy:.1f}%"
        )
        width = max(len(c.name) for c in self.checks)
        lines = [head] + [
            f"  [{c.status:^7}] {c.name.ljust(width)}  {c.detail}" for c in self.checks
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        verdict = (
            "passes" if self.passed else f"FLAGGED ({len(self.flagged)} of {len(self.checks)})"
        )
        caption = (
            f"Robustness checklist at eps={self.eps:g} on {self.n} points: {verdict}; "
            f"worst-case robust accuracy {100 * self.robust_accuracy:.1f}%"
        )
        return _html_table(self._rows(), ["check", "result", "numbers"], caption)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def robustness_checklist(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    source: nn.Module | None = None,
    steps: int = 40,
    restarts: int = 3,
    high_eps: float | None = None,
    num_classes: int | None = None,
    tolerance: float = 0.01,
    change_tolerance: float = 0.03,
    chance_margin: float = 0.05,
    zero_grad_tolerance: float = 0.05,
    n: int | None = 1000,
    seed: int = 0,
    batch_size: int = 500,
) -> Report:
    """Run the checklist of Carlini et al. 2019 (section 7 and appendix) on ``model`` at ``eps``.

    Attacks (l-inf, pixel units): FGSM; PGD with ``steps`` steps of 2.5 eps / steps and a
    random start, with the cross-entropy and with the CW margin loss; the same with twice the
    steps and with ``restarts`` restarts; random +-eps sign noise (``restarts`` draws); and,
    given a ``source`` model, FGSM and PGD crafted on it (transfer). Each check is a pass or a
    flag with its numbers (accuracies on the first ``n`` points, seeded):

    1. the model returns logits (not probabilities; those saturate the loss);
    2. accuracy under PGD does not increase with eps (``tolerance``, 1 pp);
    3. iterative attacks are no weaker than single-step ones (PGD <= FGSM + tolerance);
    4. at ``high_eps`` (default max(0.5, 2 eps), at most 1) PGD brings accuracy down to chance
       (<= 1 / num_classes + ``chance_margin``);
    5. doubling the steps changes accuracy by at most ``change_tolerance``;
    6. adding restarts changes accuracy by at most ``change_tolerance``;
    7. white-box attacks are no weaker than transfer from ``source`` (skipped without one);
    8. random noise is no stronger than the gradient attacks;
    9. at most ``zero_grad_tolerance`` of the points have an exactly zero input gradient.

    Any flag means the evaluation is not trustworthy: the model is probably masking gradients
    and its robust accuracy is overestimated.
    """
    _check_xy(x, y)
    if not isinstance(eps, int | float) or not 0 < eps <= 1:
        raise ValueError(f"eps must be a number in (0, 1] (pixel units), got {eps!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not isinstance(restarts, int) or restarts < 2:
        raise ValueError(
            f"restarts must be an int >= 2 (the check compares 1 run with more), got {restarts!r}"
        )
    if source is not None and not isinstance(source, nn.Module):
        raise TypeError("source must be an nn.Module (a model to transfer attacks from) or None")
    tic = time.perf_counter()
    eps = float(eps)
    if high_eps is None:
        high_eps = min(1.0, max(0.5, 2 * eps))
    if not eps < high_eps <= 1:
        raise ValueError(f"high_eps must be in (eps, 1], got {high_eps!r}")
    if n is not None:
        x, y = x[:n], y[:n]
    if num_classes is None:
        num_classes = int(predict(model, x[:1]).shape[1])
    seed_everything(seed)

    def pgd(e: float, k: int = steps, loss: str = "ce") -> Attack:
        return lambda m, xb, yb: attacks.pgd(m, xb, yb, e, 2.5 * e / k, k, loss=loss)

    def fgsm(e: float) -> Attack:
        return lambda m, xb, yb: attacks.fgsm(m, xb, yb, e)

    def mask(attack: Attack | Sequence[Attack], runs: int = 1) -> torch.Tensor:
        return robust_mask(model, x, y, attack, restarts=runs, batch_size=batch_size)

    checks: list[Check] = []
    kind = output_kind(model, x)
    checks.append(
        Check(
            "model returns logits",
            kind == "logits",
            f"outputs look like {kind}"
            + ("" if kind == "logits" else "; remove the softmax: attacks need logits"),
        )
    )
    clean_mask = predict(model, x, batch_size=batch_size).argmax(1) == y
    acc = {"clean": clean_mask.float().mean().item()}
    if kind != "logits":
        skip = "skipped: the model must return logits first"
        names = [
            "accuracy non-increasing in eps",
            "iterative no weaker than single-step",
            "high eps reaches chance",
            "doubling steps changes little",
            "adding restarts changes little",
            "white-box no weaker than transfer",
            "random noise no stronger than gradient attacks",
            "few zero input gradients",
        ]
        checks += [Check(name, None, skip) for name in names]
        return Report(eps, len(x), checks, acc, acc["clean"], time.perf_counter() - tic)

    masks: dict[str, torch.Tensor] = {}
    masks["FGSM"] = mask(fgsm(eps))
    masks[f"PGD-{steps}"] = mask(pgd(eps))
    masks[f"PGD-{steps} CW"] = mask(pgd(eps, loss="cw"))
    masks[f"PGD-{2 * steps}"] = mask(pgd(eps, 2 * steps))
    masks[f"PGD-{steps} x{restarts}"] = mask(pgd(eps), restarts)
    masks["noise"] = mask(lambda m, xb, yb: random_sign_noise(m, xb, yb, eps), restarts)
    if source is not None:
        for name, attack in (("FGSM", fgsm(eps)), (f"PGD-{steps}", pgd(eps))):
            crafted = torch.cat(
                [
                    attack(
                        source,
                        x[i : i + batch_size].to(_device_of(source)),
                        y[i : i + batch_size].to(_device_of(source)),
                    ).to(x.device)
                    for i in range(0, len(x), batch_size)
                ]
            )
            masks[f"transfer {name}"] = clean_mask & (predict(model, crafted).argmax(1) == y)
    acc.update({k: v.float().mean().item() for k, v in masks.items()})
    iterative = masks[f"PGD-{steps}"] & masks[f"PGD-{steps} CW"]
    a_iter = iterative.float().mean().item()
    acc["iterative (CE and CW)"] = a_iter

    # 2. monotone in eps: PGD (cross-entropy) over a grid from 0 to high_eps
    grid = [0.0, eps / 3, 2 * eps / 3, eps, high_eps]
    curve = [acc["clean"]] + [
        acc[f"PGD-{steps}"] if e == eps else mask(pgd(e)).float().mean().item() for e in grid[1:]
    ]
    rises = [curve[i + 1] - curve[i] for i in range(len(curve) - 1)]
    checks.append(
        Check(
            "accuracy non-increasing in eps",
            max(rises) <= tolerance,
            "PGD accuracy at eps "
            + ", ".join(f"{e:.3g}: {_pct(a)}" for e, a in zip(grid, curve, strict=True)),
            {f"eps={e:.4g}": a for e, a in zip(grid, curve, strict=True)},
        )
    )
    # 3. iterative no weaker than single-step
    checks.append(
        Check(
            "iterative no weaker than single-step",
            a_iter <= acc["FGSM"] + tolerance,
            f"PGD (CE and CW) {_pct(a_iter)} vs FGSM {_pct(acc['FGSM'])}",
            {"iterative": a_iter, "fgsm": acc["FGSM"]},
        )
    )
    # 4. high eps reaches chance
    high = min(curve[-1], mask(pgd(high_eps, loss="cw")).float().mean().item())
    chance = 1.0 / num_classes
    checks.append(
        Check(
            "high eps reaches chance",
            high <= chance + chance_margin,
            f"PGD accuracy at eps={high_eps:g}: {_pct(high)} (chance {_pct(chance)})",
            {"high_eps": high_eps, "accuracy": high, "chance": chance},
        )
    )
    # 5. and 6. more steps, more restarts
    base = acc[f"PGD-{steps}"]
    for label, key in (
        ("doubling steps changes little", f"PGD-{2 * steps}"),
        ("adding restarts changes little", f"PGD-{steps} x{restarts}"),
    ):
        checks.append(
            Check(
                label,
                base - acc[key] <= change_tolerance,
                f"PGD-{steps} {_pct(base)} vs {key} {_pct(acc[key])}",
                {"base": base, "more": acc[key]},
            )
        )
    # 7. white-box no weaker than transfer
    if source is None:
        checks.append(Check("white-box no weaker than transfer", None, "skipped: pass source="))
    else:
        tf, tp = acc["transfer FGSM"], acc[f"transfer PGD-{steps}"]
        ok = acc["FGSM"] <= tf + tolerance and a_iter <= tp + tolerance
        checks.append(
            Check(
                "white-box no weaker than transfer",
                ok,
                f"FGSM {_pct(acc['FGSM'])} vs transferred {_pct(tf)}; "
                f"PGD {_pct(a_iter)} vs transferred {_pct(tp)}",
                {"fgsm": acc["FGSM"], "transfer_fgsm": tf, "pgd": a_iter, "transfer_pgd": tp},
            )
        )
    # 8. noise no stronger than gradient attacks
    noise = acc["noise"]
    checks.append(
        Check(
            "random noise no stronger than gradient attacks",
            noise + tolerance >= max(acc["FGSM"], a_iter),
            f"sign noise {_pct(noise)} vs FGSM {_pct(acc['FGSM'])}, PGD {_pct(a_iter)}",
            {"noise": noise, "fgsm": acc["FGSM"], "pgd": a_iter},
        )
    )
    # 9. zero gradients
    zero = zero_gradient_fraction(model, x, y, batch_size=batch_size)
    checks.append(
        Check(
            "few zero input gradients",
            zero <= zero_grad_tolerance,
            f"{_pct(zero)} of points have an all-zero input gradient",
            {"zero_gradient_fraction": zero},
        )
    )
    worst = clean_mask.clone()
    for value in masks.values():
        worst &= value
    return Report(eps, len(x), checks, acc, worst.float().mean().item(), time.perf_counter() - tic)
