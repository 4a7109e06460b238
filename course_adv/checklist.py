"""The evaluation checklist of Carlini et al. 2019 ("On Evaluating Adversarial Robustness"), as
code: one small function per check, and ``robustness_checklist`` running them in turn.

Every check returns the same record, a ``Check``: its name, ``passed`` (True, False for a flag,
None when skipped), a line of numbers and the values behind them. A flag means the evaluation
is not trustworthy: the model probably masks its gradients, and its robust accuracy is
overestimated (Athalye, Carlini & Wagner 2018). Notebook 08 runs the checks one at a time::

    check = check_more_steps(model, x, y, eps=0.3)
    check.passed, check.detail

The white-box attacks are l-inf PGD with Madry et al.'s step ``2.5 eps / steps`` and a random
start, with the cross-entropy or the CW margin loss, stopping each point at its first fooling
iterate (``freeze_fooled=True``: only the verdict matters). Transferred examples are final
iterates, crafted on ``source``. Accuracy everywhere is robust accuracy: correct under attack,
over all points. Pass one ``cache`` dict to several checks and each attack runs once.
Nothing here seeds the random stream or sets other global state: seed before calling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from . import attacks
from .attacks import Attack
from .evaluation import (
    _html_table,
    output_kind,
    predict,
    random_sign_noise,
    robust_mask,
    zero_gradient_fraction,
)
from .utils import check_data, device_of

__all__ = [
    "CHECKS",
    "Check",
    "ChecklistReport",
    "Tolerances",
    "check_logits",
    "check_monotone_in_eps",
    "check_iterative_vs_single_step",
    "check_high_eps_reaches_chance",
    "check_more_steps",
    "check_more_restarts",
    "check_second_loss",
    "check_whitebox_vs_transfer",
    "check_noise",
    "check_zero_gradients",
    "robustness_checklist",
]

# The names of the checks, in the order the checklist runs them: the one place they live.
CHECKS: dict[str, str] = {
    "logits": "model returns logits",
    "monotone_in_eps": "accuracy non-increasing in eps",
    "iterative_vs_single_step": "iterative no weaker than single-step",
    "high_eps_reaches_chance": "high eps reaches chance",
    "more_steps": "doubling steps changes little",
    "more_restarts": "adding restarts changes little",
    "second_loss": "a second loss changes little",
    "whitebox_vs_transfer": "white-box no weaker than transfer",
    "noise": "random noise no stronger than gradient attacks",
    "zero_gradients": "few zero input gradients",
}

Cache = dict[tuple[str, float], torch.Tensor]  # (attack name, eps) -> per-point robust mask


@dataclass(frozen=True)
class Tolerances:
    """How far a check may miss before it flags (accuracies as fractions in [0, 1]).

    ``order``: slack for comparisons that must hold exactly for a sound evaluation (monotone
    in eps, iterative <= single step, white-box <= transfer, noise >= gradient attacks).
    ``change``: the most that doubling the steps, adding restarts or a second loss may lower
    accuracy. ``chance``: how far above chance ``1 / classes`` accuracy may stay at high eps.
    ``zero_gradients``: the largest share of points with an all-zero input gradient.
    """

    order: float = 0.01
    change: float = 0.03
    chance: float = 0.05
    zero_gradients: float = 0.05


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


# --------------------------------------------------------------------------- attacks


def _pgd(eps: float, steps: int, loss: str = "ce") -> Attack:
    """White-box l-inf PGD with Madry et al.'s step 2.5 eps / steps, for a verdict."""
    return partial(
        attacks.pgd, eps=eps, alpha=2.5 * eps / steps, steps=steps, loss=loss, freeze_fooled=True
    )


def _fgsm(eps: float) -> Attack:
    return partial(attacks.fgsm, eps=eps)


def _mask(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    key: tuple[str, float],
    attack: Attack,
    cache: Cache | None,
    runs: int = 1,
) -> torch.Tensor:
    """Robust mask of ``attack`` (``runs`` runs), computed once per ``key`` when cached."""
    if cache is not None and key in cache:
        return cache[key]
    mask = robust_mask(model, x, y, attack, restarts=runs)
    if cache is not None:
        cache[key] = mask
    return mask


def _pgd_mask(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    cache: Cache | None,
    *,
    loss: str = "ce",
    runs: int = 1,
) -> torch.Tensor:
    """``_mask`` of white-box PGD; the cache key is derived from the attack's settings."""
    name = f"PGD-{steps}" + (" CW" if loss == "cw" else "") + (f" x{runs}" if runs > 1 else "")
    return _mask(model, x, y, (name, eps), _pgd(eps, steps, loss), cache, runs=runs)


def _fgsm_mask(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, cache: Cache | None
) -> torch.Tensor:
    """``_mask`` of white-box FGSM, cached under ``("FGSM", eps)``."""
    return _mask(model, x, y, ("FGSM", eps), _fgsm(eps), cache)


def _acc(mask: torch.Tensor) -> float:
    return mask.float().mean().item()


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _clean(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cache: Cache | None) -> torch.Tensor:
    return _mask(model, x, y, ("clean", 0.0), lambda m, xb, yb: xb, cache)


def _iterative(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, cache: Cache | None
) -> torch.Tensor:
    """Per point: right under PGD with the cross-entropy *and* with the CW loss."""
    ce = _pgd_mask(model, x, y, eps, steps, cache)
    return ce & _pgd_mask(model, x, y, eps, steps, cache, loss="cw")


# --------------------------------------------------------------------------- the checks


def check_logits(model: nn.Module, x: torch.Tensor) -> Check:
    """The model returns logits: probabilities saturate the loss (Carlini & Wagner 2017, sec. 5)."""
    kind = output_kind(model, x)
    hint = "" if kind == "logits" else "; remove the softmax: attacks need logits"
    return Check(CHECKS["logits"], kind == "logits", f"outputs look like {kind}{hint}")


def check_monotone_in_eps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    high_eps: float | None = None,
    steps: int = 40,
    tolerance: float = Tolerances.order,
    cache: Cache | None = None,
) -> Check:
    """Accuracy under PGD does not rise with eps (over 0, eps/3, 2 eps/3, eps, ``high_eps``)."""
    high_eps = _high_eps(eps, high_eps)
    grid = [eps / 3, 2 * eps / 3, eps, high_eps]
    curve = [_acc(_clean(model, x, y, cache))]
    curve += [_acc(_pgd_mask(model, x, y, e, steps, cache)) for e in grid]
    grid = [0.0, *grid]
    rises = [after - before for before, after in zip(curve, curve[1:], strict=False)]
    pairs = list(zip(grid, curve, strict=True))
    return Check(
        CHECKS["monotone_in_eps"],
        max(rises) <= tolerance,
        "PGD accuracy at eps " + ", ".join(f"{e:.3g}: {_pct(a)}" for e, a in pairs),
        {f"eps={e:.4g}": a for e, a in pairs},
    )


def check_iterative_vs_single_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 40,
    tolerance: float = Tolerances.order,
    cache: Cache | None = None,
) -> Check:
    """Iterative attacks (PGD, cross-entropy and CW) are no weaker than single-step FGSM."""
    iterative = _acc(_iterative(model, x, y, eps, steps, cache))
    fgsm = _acc(_fgsm_mask(model, x, y, eps, cache))
    return Check(
        CHECKS["iterative_vs_single_step"],
        iterative <= fgsm + tolerance,
        f"PGD (CE and CW) {_pct(iterative)} vs FGSM {_pct(fgsm)}",
        {"iterative": iterative, "fgsm": fgsm},
    )


def check_high_eps_reaches_chance(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    high_eps: float,
    *,
    steps: int = 40,
    margin: float = Tolerances.chance,
    cache: Cache | None = None,
) -> Check:
    """At a large eps (0.5 covers half the pixel range) PGD brings accuracy down to chance."""
    chance = 1.0 / int(predict(model, x[:1]).shape[1])
    high = _acc(_iterative(model, x, y, high_eps, steps, cache))
    return Check(
        CHECKS["high_eps_reaches_chance"],
        high <= chance + margin,
        f"PGD accuracy at eps={high_eps:g}: {_pct(high)} (chance {_pct(chance)})",
        {"high_eps": high_eps, "accuracy": high, "chance": chance},
    )


def _change(
    name: str, base: tuple[str, torch.Tensor], more: tuple[str, torch.Tensor], tolerance: float
) -> Check:
    """A stronger attack lowers accuracy by at most ``tolerance``, else the base was too weak."""
    (base_name, base_mask), (more_name, more_mask) = base, more
    a, b = _acc(base_mask), _acc(more_mask)
    detail = f"{base_name} {_pct(a)} vs {more_name} {_pct(b)}"
    return Check(CHECKS[name], a - b <= tolerance, detail, {"base": a, "more": b})


def check_more_steps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 40,
    tolerance: float = Tolerances.change,
    cache: Cache | None = None,
) -> Check:
    """Doubling PGD's steps changes accuracy by little: the attack had converged."""
    base = _pgd_mask(model, x, y, eps, steps, cache)
    more = _pgd_mask(model, x, y, eps, 2 * steps, cache)
    return _change("more_steps", (f"PGD-{steps}", base), (f"PGD-{2 * steps}", more), tolerance)


def check_more_restarts(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 40,
    restarts: int = 3,
    tolerance: float = Tolerances.change,
    cache: Cache | None = None,
) -> Check:
    """Running PGD ``restarts`` times from random starts changes accuracy by little."""
    base = _pgd_mask(model, x, y, eps, steps, cache)
    name = f"PGD-{steps} x{restarts}"
    more = _pgd_mask(model, x, y, eps, steps, cache, runs=restarts)
    return _change("more_restarts", (f"PGD-{steps}", base), (name, more), tolerance)


def check_second_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 40,
    tolerance: float = Tolerances.change,
    cache: Cache | None = None,
) -> Check:
    """Adding the CW margin loss to the cross-entropy changes accuracy by little.

    A saturated softmax gives the cross-entropy no gradient where the margin still has one
    (Carlini & Wagner 2017): a big drop means the cross-entropy alone was fooled by masking.
    """
    base = _pgd_mask(model, x, y, eps, steps, cache)
    both = _iterative(model, x, y, eps, steps, cache)
    return _change("second_loss", (f"PGD-{steps}", base), ("PGD with CE and CW", both), tolerance)


def check_whitebox_vs_transfer(
    model: nn.Module,
    source: nn.Module | None,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 40,
    tolerance: float = Tolerances.order,
    cache: Cache | None = None,
) -> Check:
    """White-box FGSM and PGD are no weaker than the same attacks transferred from ``source``.

    The transferred examples are PGD's final iterates (not frozen at their first fooling
    iterate, which would transfer badly); skipped without a source model.
    """
    if source is None:
        return Check(CHECKS["whitebox_vs_transfer"], None, "skipped: pass source=")
    final_pgd = partial(attacks.pgd, eps=eps, alpha=2.5 * eps / steps, steps=steps)
    transfer_fgsm = _transferred(source, _fgsm(eps))
    values = {
        "fgsm": _acc(_fgsm_mask(model, x, y, eps, cache)),
        "pgd": _acc(_iterative(model, x, y, eps, steps, cache)),
        "transfer_fgsm": _acc(_mask(model, x, y, ("transfer FGSM", eps), transfer_fgsm, cache)),
        "transfer_pgd": _acc(
            _mask(
                model, x, y, (f"transfer PGD-{steps}", eps), _transferred(source, final_pgd), cache
            )
        ),
    }
    ok = all(values[k] <= values[f"transfer_{k}"] + tolerance for k in ("fgsm", "pgd"))
    detail = (
        f"FGSM {_pct(values['fgsm'])} vs transferred {_pct(values['transfer_fgsm'])}; "
        f"PGD {_pct(values['pgd'])} vs transferred {_pct(values['transfer_pgd'])}"
    )
    return Check(CHECKS["whitebox_vs_transfer"], ok, detail, values)


def _transferred(source: nn.Module, attack: Attack) -> Attack:
    """An attack that ignores the model under test: it crafts on ``source`` (on its device)."""

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        device = device_of(source)
        return attack(source, x.to(device), y.to(device)).to(x.device)

    return run


def check_noise(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 40,
    draws: int = 3,
    tolerance: float = Tolerances.order,
    cache: Cache | None = None,
) -> Check:
    """Random +-eps sign noise (``draws`` draws) is no stronger than FGSM and PGD.

    If noise breaks more points than the gradient attacks, the gradients lead nowhere.
    """
    noise = partial(random_sign_noise, eps=eps)
    values = {
        "noise": _acc(_mask(model, x, y, (f"noise x{draws}", eps), noise, cache, runs=draws)),
        "fgsm": _acc(_fgsm_mask(model, x, y, eps, cache)),
        "pgd": _acc(_iterative(model, x, y, eps, steps, cache)),
    }
    return Check(
        CHECKS["noise"],
        values["noise"] + tolerance >= max(values["fgsm"], values["pgd"]),
        f"sign noise {_pct(values['noise'])} vs FGSM {_pct(values['fgsm'])}, "
        f"PGD {_pct(values['pgd'])}",
        values,
    )


def check_zero_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    tolerance: float = Tolerances.zero_gradients,
) -> Check:
    """At most ``tolerance`` of the points have an all-zero input gradient (a saturated softmax
    or a step function leaves gradient attacks nothing to follow)."""
    zero = zero_gradient_fraction(model, x, y)
    return Check(
        CHECKS["zero_gradients"],
        zero <= tolerance,
        f"{_pct(zero)} of points have an all-zero input gradient",
        {"zero_gradient_fraction": zero},
    )


# --------------------------------------------------------------------------- the checklist


@dataclass
class ChecklistReport:
    """The result of ``robustness_checklist``: the checks and the accuracies behind them.

    ``passed`` is True when no check is flagged; ``flagged`` names the flagged checks;
    ``accuracy`` maps each attack run at ``eps`` to the robust accuracy under it;
    ``robust_accuracy`` is the per-point worst case over all of them: the share of all points
    that no white-box, transfer or noise attack broke (the clean accuracy if none ran).
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

    def _verdict(self) -> str:
        flagged = f"FLAGGED ({len(self.flagged)} of {len(self.checks)})"
        return (
            f"eps={self.eps:g} on {self.n} points: {'passes' if self.passed else flagged}; "
            f"worst-case robust accuracy {100 * self.robust_accuracy:.1f}%"
        )

    def __str__(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"Robustness checklist (Carlini et al. 2019) at {self._verdict()}"]
        lines += [f"  [{c.status:^7}] {c.name.ljust(width)}  {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = [{"check": c.name, "result": c.status, "numbers": c.detail} for c in self.checks]
        return _html_table(
            rows, ["check", "result", "numbers"], f"Robustness checklist at {self._verdict()}"
        )


def _high_eps(eps: float, high_eps: float | None) -> float:
    high = min(1.0, max(0.5, 2 * eps)) if high_eps is None else high_eps
    if not isinstance(high, int | float) or not eps < high <= 1:
        raise ValueError(f"high_eps must be a number in (eps, 1] = ({eps:g}, 1], got {high_eps!r}")
    return float(high)


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
    tolerances: Tolerances = Tolerances(),
) -> ChecklistReport:
    """Run every check of ``CHECKS`` on ``model`` at ``eps``, in order; see each ``check_*``.

    Carlini et al. 2019, section 7 and appendix. ``steps``: PGD's steps (and the doubled run's
    half); ``restarts``: the runs compared with one (and the noise draws); ``high_eps`` (default
    max(0.5, 2 eps), at most 1): where PGD must reach chance; ``source``: a model to transfer
    attacks from (the transfer check is skipped without one). Every attack runs once on all of
    ``x`` (take the first 1,000 points for the usual evaluation) and its per-point results
    are shared between the checks. Seed torch before calling to repeat the random starts.
    If the model does not return logits, the other checks are skipped.
    """
    check_data(x, y)
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 < eps <= 1:
        raise ValueError(f"eps must be a number in (0, 1] (pixel units), got {eps!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 2:
        raise ValueError(
            f"restarts must be an int >= 2 (the check compares 1 run with more), got {restarts!r}"
        )
    if source is not None and not isinstance(source, nn.Module):
        raise TypeError("source must be an nn.Module (a model to transfer attacks from) or None")
    if not isinstance(tolerances, Tolerances):
        raise TypeError(f"tolerances must be a Tolerances(...), got {type(tolerances).__name__}")
    tic = time.perf_counter()
    eps, high_eps = float(eps), _high_eps(float(eps), high_eps)
    t = tolerances
    cache: Cache = {}
    checks = [check_logits(model, x)]
    if checks[0].passed:
        common = {"steps": steps, "cache": cache}
        checks += [
            check_monotone_in_eps(model, x, y, eps, high_eps=high_eps, tolerance=t.order, **common),
            check_iterative_vs_single_step(model, x, y, eps, tolerance=t.order, **common),
            check_high_eps_reaches_chance(model, x, y, high_eps, margin=t.chance, **common),
            check_more_steps(model, x, y, eps, tolerance=t.change, **common),
            check_more_restarts(model, x, y, eps, restarts=restarts, tolerance=t.change, **common),
            check_second_loss(model, x, y, eps, tolerance=t.change, **common),
            check_whitebox_vs_transfer(model, source, x, y, eps, tolerance=t.order, **common),
            check_noise(model, x, y, eps, draws=restarts, tolerance=t.order, **common),
            check_zero_gradients(model, x, y, tolerance=t.zero_gradients),
        ]
    else:
        skip = "skipped: the model must return logits first"
        checks += [Check(name, None, skip) for key, name in CHECKS.items() if key != "logits"]
    clean = _clean(model, x, y, cache)
    at_eps = {name: mask for (name, e), mask in cache.items() if e == eps}
    worst = clean.clone() if not at_eps else torch.stack(list(at_eps.values())).all(0)
    accuracy = {"clean": _acc(clean)} | {name: _acc(mask) for name, mask in at_eps.items()}
    return ChecklistReport(eps, len(x), checks, accuracy, _acc(worst), time.perf_counter() - tic)
