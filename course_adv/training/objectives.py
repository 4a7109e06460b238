"""The defences of the lecture, each an objective for ``train``: what one batch's loss is.

An objective is called as ``objective(model, x, y, epoch) -> loss`` with the model in train
mode, one batch, and the training time so far in epochs (a float, which is what an eps
warm-up needs). Attacks inside switch the model to eval mode and back, so the loss itself is
computed in train mode. Each objective is a frozen dataclass: its settings are its fields,
checked in ``__post_init__``, and ``describe(objective)`` turns them into the complete,
JSON-able description that checkpoint-cache keys are made of (models by a hash of their
weights, attacks by name).

In the order of the lecture:

- ``Standard``: plain cross-entropy (with a ``dropout`` model, the lecture's baseline);
- ``static_augmentation`` + ``Standard``: the "initial approach", adversarial examples made
  once from a fixed pre-trained model and added to the training data;
- ``FGSMRegularizer``: Goodfellow et al. 2015, eq. (2), the alpha-mixed loss;
- ``UniformNoise``: eq. (2) with random noise in place of FGSM, Goodfellow et al.'s control;
- ``IterativeRegularizer``: eq. (2) with BIM or PGD in place of FGSM;
- ``PGDMinMax``: Madry et al. 2018, eq. (3), with a linear eps warm-up;
- ``FastFGSM``: Wong, Rice & Kolter 2020, FGSM from a random start, with a stop on
  catastrophic overfitting;
- ``EnsembleAdversarial``: Tramer et al. 2018, adversarial examples from the model being
  trained or from static pre-trained models.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import attacks
from ..cache import model_fingerprint
from ..utils import check_data, device_of
from .loop import History, _check_int, _check_number

if TYPE_CHECKING:
    from ..attacks import AttackFamily

__all__ = [
    "describe",
    "Standard",
    "static_augmentation",
    "FGSMRegularizer",
    "UniformNoise",
    "IterativeRegularizer",
    "PGDMinMax",
    "FastFGSM",
    "overfitting_epoch",
    "EnsembleAdversarial",
]

ATTACK_NAMES = ("fgsm", "bim", "pgd")
_LABELS = ("true", "predicted")


# --------------------------------------------------------------------------- describe


def describe(objective: Any) -> dict[str, Any]:
    """The complete, JSON-able description of an objective: the part of a cache key it makes.

    For the objectives here: ``{"objective": name, field: value, ...}`` with every setting;
    a model in a field (the static models of ``EnsembleAdversarial``) appears as its class
    and a SHA-256 of its weights, a function as its module and name. An objective of your
    own is described by its ``config()`` method if it has one, else by its name when it is a
    module-level function. Anything without a stable name (a lambda, a ``functools.partial``,
    a function defined inside another) is refused: two different ones would share a key.
    """
    if dataclasses.is_dataclass(objective) and not isinstance(objective, type):
        config: dict[str, Any] = {"objective": getattr(objective, "name", type(objective).__name__)}
        for f in dataclasses.fields(objective):
            if f.init:
                config[f.name] = _describe_value(getattr(objective, f.name), f.name)
        return config
    method = getattr(objective, "config", None)
    if callable(method):
        return method()
    return {"objective": _describe_value(objective, "objective")}


def _describe_value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, nn.Module):
        return model_fingerprint(value)
    if isinstance(value, list | tuple):
        return [_describe_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    qualname = getattr(value, "__qualname__", None)
    module = getattr(value, "__module__", None)
    if callable(value) and isinstance(qualname, str) and "<" not in qualname and module:
        return f"{module}.{qualname}"
    raise TypeError(
        f"{where} = {value!r} has no stable name, so it cannot be part of a cache key (two "
        "different ones would load the same checkpoint); define it as a module-level function "
        "with def, or pass an attack by name: 'fgsm', 'bim' or 'pgd'"
    )


# --------------------------------------------------------------------------- shared pieces


def _set(obj: Any, name: str, value: Any) -> None:
    """Assign a checked (normalised) value to a field of a frozen dataclass in __post_init__."""
    object.__setattr__(obj, name, value)


def _eps(value: Any, name: str = "eps") -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 1:
        raise ValueError(
            f"{name} must be a number in [0, 1] (pixel units, e.g. 0.3), got {value!r}"
        )
    return float(value)


def _alpha(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 1:
        raise ValueError(f"alpha (the weight of the clean loss) must be in [0, 1], got {value!r}")
    return float(value)


def _labels(value: Any) -> str:
    if value not in _LABELS:
        raise ValueError(
            f"labels must be 'true' (attack the true labels, as in eq. 2) or 'predicted' "
            f"(the model's own predictions, no label leaking), got {value!r}"
        )
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _positive(value: Any, name: str) -> float:
    _check_number(name, value, positive=True)
    return float(value)


def _ramp(eps: float, epoch: float, warmup_epochs: float) -> float:
    """Linear eps warm-up: 0 at the start, ``eps`` after ``warmup_epochs`` epochs."""
    return eps if warmup_epochs <= 0 else eps * min(1.0, epoch / warmup_epochs)


def _resolve_attack(
    attack: str | AttackFamily, steps: int | None = None, step_size: float | None = None
) -> AttackFamily:
    """``"fgsm"``, ``"bim"``, ``"pgd"`` or a callable, as ``attack(model, x, y, eps)``.

    BIM and PGD return their final iterates (Kurakin et al.; Madry et al.): the examples
    are used to train, or on other models, not only to decide whether one model is fooled.
    """
    if attack == "fgsm":
        return attacks.fgsm
    if attack == "bim":

        def bim(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eps: float):
            alpha = None if step_size is None else step_size * eps
            return attacks.bim(model, x, y, eps, alpha, steps, freeze_fooled=False)

        return bim
    if attack == "pgd":
        n = 10 if steps is None else steps
        ratio = 2.5 / n if step_size is None else step_size

        def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eps: float):
            return attacks.pgd(model, x, y, eps, ratio * eps, n, freeze_fooled=False)

        return pgd
    if callable(attack) and not isinstance(attack, str):
        return attack
    raise ValueError(
        f"attack must be one of {ATTACK_NAMES} or a function attack(model, x, y, eps), "
        f"got {attack!r}"
    )


def _mixed_loss(
    model: nn.Module, x: torch.Tensor, x_other: torch.Tensor, y: torch.Tensor, alpha: float
) -> torch.Tensor:
    """alpha * L(x, y) + (1 - alpha) * L(x_other, y), one forward pass over both halves."""
    if alpha == 1.0:
        return F.cross_entropy(model(x), y)
    if alpha == 0.0:
        return F.cross_entropy(model(x_other), y)
    losses = F.cross_entropy(model(torch.cat([x, x_other])), torch.cat([y, y]), reduction="none")
    n = len(x)
    return alpha * losses[:n].mean() + (1 - alpha) * losses[n:].mean()


# --------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class Standard:
    """Plain empirical risk: the mean cross-entropy L(theta, x, y) on clean inputs.

    With a model built with ``dropout > 0`` this is the lecture's dropout baseline.
    """

    name: ClassVar[str] = "standard"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: float):
        return F.cross_entropy(model(x), y)


def static_augmentation(
    source: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    attack: str | AttackFamily = "fgsm",
    labels: str = "true",
    batch_size: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The lecture's "initial approach": adversarial examples made once, added to the data.

    Crafts ``attack`` (``"fgsm"``, ``"bim"``, ``"pgd"`` or a function
    ``attack(model, x, y, eps)``) on the fixed pre-trained ``source`` model and returns the
    clean points followed by their adversarial versions, ``(2N x ..., 2N labels)``, both with
    the true labels. Train on them with ``Standard()``: unlike eq. (2) the examples never
    follow the model being trained (Szegedy et al. 2014; Goodfellow et al. 2015, section 6).
    """
    check_data(x, y)
    eps = _eps(eps)
    attack_fn = _resolve_attack(attack)
    _labels(labels)
    _check_int("batch_size", batch_size, minimum=1)
    device = device_of(source)
    parts = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        parts.append(attack_fn(source, xb, yb if labels == "true" else None, eps).to(x.device))
    return torch.cat([x, torch.cat(parts)]), torch.cat([y, y])


@dataclass(frozen=True)
class FGSMRegularizer:
    """Goodfellow, Shlens & Szegedy 2015, eq. (2): the adversarial objective function

        L~(theta, x, y) = alpha L(theta, x, y) + (1 - alpha) L(theta, x + eps sign(grad_x L), y)

    with fresh FGSM examples for every batch (made in eval mode, from the current weights).
    ``labels="true"`` attacks the true labels, as in the paper; ``labels="predicted"`` attacks
    the model's own predictions, which avoids label leaking (Kurakin et al. 2017, section 4.2):
    with true labels the perturbation itself carries the label, and the model learns to read
    it, scoring higher on FGSM examples than on clean ones. The loss always uses the true y.
    """

    eps: float
    alpha: float = 0.5
    _: KW_ONLY
    labels: str = "true"
    name: ClassVar[str] = "fgsm_regularizer"

    def __post_init__(self) -> None:
        _set(self, "eps", _eps(self.eps))
        _set(self, "alpha", _alpha(self.alpha))
        _labels(self.labels)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: float):
        target = y if self.labels == "true" else None
        x_adv = x if self.eps == 0 else attacks.fgsm(model, x, target, self.eps)
        return _mixed_loss(model, x, x_adv, y, self.alpha)


@dataclass(frozen=True)
class UniformNoise:
    """The control of Goodfellow, Shlens & Szegedy 2015 (section 6): eq. (2) with noise.

        L~(theta, x, y) = alpha L(theta, x, y) + (1 - alpha) L(theta, clip_[0,1](x + r), y),
        r ~ U(-eps, eps) per pixel, drawn afresh for every batch

    Noise of the same size as the FGSM step, but in a random direction: the paper found that
    training on it leaves the model about as easy to fool as before, because a random
    direction is nearly orthogonal to the gradient that the attack follows.
    """

    eps: float
    alpha: float = 0.5
    name: ClassVar[str] = "uniform_noise"

    def __post_init__(self) -> None:
        _set(self, "eps", _eps(self.eps))
        _set(self, "alpha", _alpha(self.alpha))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: float):
        x_noisy = (x + torch.empty_like(x).uniform_(-self.eps, self.eps)).clamp(0, 1)
        return _mixed_loss(model, x, x_noisy, y, self.alpha)


@dataclass(frozen=True)
class IterativeRegularizer:
    """Eq. (2) of Goodfellow et al. 2015 with an iterative attack in place of FGSM.

    The lecture's "incorporating the above ideas in eq. (2)": the adversarial half of the
    loss uses BIM (Kurakin et al. 2016, its default step 1/255 and step count unless given)
    or PGD with a random start (Madry et al. 2018; ``steps`` default 10, step
    ``step_size * eps`` with ``step_size`` default 2.5 / steps), final iterates.
    ``step_size`` is a fraction of eps so that it scales along with eps.
    """

    eps: float
    alpha: float = 0.5
    _: KW_ONLY
    attack: str = "bim"
    steps: int | None = None
    step_size: float | None = None
    labels: str = "true"
    name: ClassVar[str] = "iterative_regularizer"

    def __post_init__(self) -> None:
        _set(self, "eps", _eps(self.eps))
        _set(self, "alpha", _alpha(self.alpha))
        _labels(self.labels)
        if self.attack not in ("bim", "pgd"):
            raise ValueError(f"attack must be 'bim' or 'pgd', got {self.attack!r}")
        if self.steps is not None:
            _check_int("steps", self.steps, minimum=1)
        if self.step_size is not None:
            _set(self, "step_size", _positive(self.step_size, "step_size (a fraction of eps)"))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: float):
        attack = _resolve_attack(self.attack, self.steps, self.step_size)
        target = y if self.labels == "true" else None
        x_adv = x if self.eps == 0 else attack(model, x, target, self.eps)
        return _mixed_loss(model, x, x_adv, y, self.alpha)


@dataclass(frozen=True)
class PGDMinMax:
    """Madry et al. 2018, eq. (3): min over theta of E[max over ||delta||_inf <= eps of L].

        delta* = PGD(x, y, eps)  (the inner max: ``steps`` steps of ``step_size * eps``)
        loss   = L(theta, x + delta*, y)  (the outer min is the training loop)

    As in the paper the inner max starts at random and every example takes all ``steps``;
    the final iterate is trained on (``pgd(..., freeze_fooled=False)``). ``step_size``
    defaults to 2.5 / steps, Madry et al.'s rule of thumb. The loss is the adversarial loss
    alone (no clean term).

    ``warmup_epochs``: eps grows linearly from 0 to ``eps`` over that many epochs (per
    batch, not per epoch). On MNIST at eps = 0.3, PGD training from scratch can sit at a
    constant predictor for many epochs without it (COURSE.md section 6); a ramp is the usual
    cure (e.g. Gowal et al. 2018; Wong et al. 2020 use one too).
    """

    eps: float
    _: KW_ONLY
    steps: int = 10
    step_size: float | None = None
    warmup_epochs: float = 0.0
    random_start: bool = True
    name: ClassVar[str] = "pgd_minmax"

    def __post_init__(self) -> None:
        _set(self, "eps", _eps(self.eps))
        _check_int("steps", self.steps, minimum=1)
        step_size = 2.5 / self.steps if self.step_size is None else self.step_size
        _set(self, "step_size", _positive(step_size, "step_size (a fraction of eps)"))
        _check_number("warmup_epochs", self.warmup_epochs, positive=False)
        _set(self, "warmup_epochs", float(self.warmup_epochs))
        _flag(self.random_start, "random_start")

    def eps_at(self, epoch: float) -> float:
        """Epsilon after ``epoch`` epochs of training (the linear warm-up)."""
        return _ramp(self.eps, epoch, self.warmup_epochs)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: float):
        eps = self.eps_at(epoch)
        if eps <= 0:
            return F.cross_entropy(model(x), y)
        x_adv = attacks.pgd(
            model,
            x,
            y,
            eps,
            self.step_size * eps,
            self.steps,
            random_start=self.random_start,
            freeze_fooled=False,
        )
        return F.cross_entropy(model(x_adv), y)

    def end_epoch(self, model: nn.Module, epoch: int, history: History) -> None:
        history.extra.setdefault("eps", []).append(self.eps_at(epoch + 1))


def overfitting_epoch(check_acc: Sequence[float], drop: float) -> int | None:
    """The first epoch (0-based) whose check accuracy lies more than ``drop`` below the best
    accuracy of the epochs before it, or None.

    Comparing with the best so far, not only with the previous epoch, also catches a
    collapse spread over several epochs (0.53, 0.51, 0.37, 0.20: no single step falls by
    0.2, but 0.20 lies 0.33 below 0.53).
    """
    best = None
    for epoch, acc in enumerate(check_acc):
        if best is not None and acc < best - drop:
            return epoch
        best = acc if best is None else max(best, acc)
    return None


@dataclass(frozen=True)
class FastFGSM:
    """Wong, Rice & Kolter 2020 ("Fast is better than free"), Algorithm 3: FGSM training
    from a random start.

        delta ~ U(-eps, eps);  delta <- clip_eps(delta + a sign(grad_delta L(x + delta)))
        theta <- theta - lr grad_theta L(x + delta, y)

    with step ``a = step_size`` (pixel units, default 1.25 eps, the paper's choice) and
    x + delta kept in [0, 1]. ``random_start=False`` with ``step_size=eps`` is plain FGSM
    training from a zero start, the paper's "zero init" baseline. ``warmup_epochs`` ramps eps
    (and the step with it) linearly from 0, as in ``PGDMinMax``; without one, on the
    4,000-digit default at eps = 0.3, single-step training never gets off the ground.

    The paper's failure mode is *catastrophic overfitting*: within an epoch or a few,
    accuracy under PGD falls to about zero while accuracy under FGSM climbs. After every
    epoch, the model is checked on a fixed batch (the first ``check_size`` training points)
    at the eps of that moment (the warm-up's, not the final one, which a model still in
    warm-up fails anyway): accuracy under PGD (``check_steps`` steps of eps/4 from a random
    start) goes to ``history.extra["check_robust_acc"]``, under FGSM to
    ``["check_fgsm_acc"]``, eps to ``["eps"]``. With ``stop_on_overfitting`` training stops
    when ``overfitting_epoch(check_robust_acc, drop)`` fires (PGD accuracy more than ``drop``
    below the best so far) and the weights of the best epoch come back (the paper's early
    stopping, section 5.3). On the 4,000-digit default at eps = 0.3 (``zoo.RECIPES
    ["fast_fgsm"]``) it fired inside the warm-up on every seed measured, near eps = 0.2:
    the stop avoids a gradient-masked model, it does not make single-step training work.
    """

    eps: float
    _: KW_ONLY
    step_size: float | None = None
    random_start: bool = True
    warmup_epochs: float = 0.0
    stop_on_overfitting: bool = True
    check_size: int = 256
    check_steps: int = 10
    drop: float = 0.2
    name: ClassVar[str] = "fast_fgsm"
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set(self, "eps", _eps(self.eps))
        step_size = 1.25 * self.eps if self.step_size is None else self.step_size
        _set(self, "step_size", _positive(step_size, "step_size (pixel units)"))
        _flag(self.random_start, "random_start")
        _check_number("warmup_epochs", self.warmup_epochs, positive=False)
        _set(self, "warmup_epochs", float(self.warmup_epochs))
        _flag(self.stop_on_overfitting, "stop_on_overfitting")
        _check_int("check_size", self.check_size, minimum=1)
        _check_int("check_steps", self.check_steps, minimum=1)
        if isinstance(self.drop, bool) or not isinstance(self.drop, Real) or not 0 < self.drop <= 1:
            raise ValueError(
                f"drop (a fall in accuracy, a fraction) must be in (0, 1], got {self.drop!r}"
            )
        _set(self, "drop", float(self.drop))

    def eps_at(self, epoch: float) -> float:
        """Epsilon after ``epoch`` epochs of training (the linear warm-up)."""
        return _ramp(self.eps, epoch, self.warmup_epochs)

    def start(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        # a fixed batch, the same for every epoch: the first check_size training points
        self._state.clear()
        self._state.update(check=(x[: self.check_size], y[: self.check_size]), accs=[])

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: float):
        eps = self.eps_at(epoch)
        if eps <= 0:
            return F.cross_entropy(model(x), y)
        start = x
        if self.random_start:  # delta ~ U(-eps, eps), x + delta back into [0, 1]
            start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        step = self.step_size * eps / self.eps
        x_adv = attacks.fgsm(model, start, y, step)  # one signed step, clipped to [0, 1]
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)  # clip delta to [-eps, eps]
        return F.cross_entropy(model(x_adv), y)

    def check_accuracy(self, model: nn.Module, eps: float) -> tuple[float, float]:
        """Accuracy under PGD and under FGSM at ``eps`` on the fixed check batch."""
        if "check" not in self._state:
            raise RuntimeError("call start(model, x, y) (train() does) before check_accuracy")
        xc, yc = self._state["check"]
        if eps <= 0:
            x_pgd = x_fgsm = xc
        else:
            x_pgd = attacks.pgd(model, xc, yc, eps, eps / 4, self.check_steps, freeze_fooled=True)
            x_fgsm = attacks.fgsm(model, xc, yc, eps)
        with torch.no_grad():
            pgd_acc = (model(x_pgd).argmax(1) == yc).float().mean().item()
            fgsm_acc = (model(x_fgsm).argmax(1) == yc).float().mean().item()
        return pgd_acc, fgsm_acc

    def end_epoch(self, model: nn.Module, epoch: int, history: History) -> str | None:
        eps = self.eps_at(epoch + 1)
        pgd_acc, fgsm_acc = self.check_accuracy(model, eps)
        history.extra.setdefault("check_robust_acc", []).append(pgd_acc)
        history.extra.setdefault("check_fgsm_acc", []).append(fgsm_acc)
        history.extra.setdefault("eps", []).append(eps)
        if not self.stop_on_overfitting:
            return None
        accs = history.extra["check_robust_acc"]
        if overfitting_epoch(accs, self.drop) == epoch:
            best_epoch, weights = self._state["best"]
            model.load_state_dict(weights)
            return (
                f"catastrophic overfitting in epoch {epoch + 1}: PGD accuracy on the check batch "
                f"fell to {pgd_acc:.2f} (FGSM {fgsm_acc:.2f}), more than {self.drop} below the "
                f"best, {accs[best_epoch]:.2f} in epoch {best_epoch + 1}, whose weights are restored"
            )
        if "best" not in self._state or pgd_acc >= accs[self._state["best"][0]]:
            self._state["best"] = (epoch, copy.deepcopy(model.state_dict()))
        return None


@dataclass(frozen=True)
class EnsembleAdversarial:
    """Tramer et al. 2018, "Ensemble Adversarial Training" (section 3.2): eq. (2) of
    Goodfellow et al. with the adversarial half crafted, per batch, on a source drawn at
    random from the model being trained and the ``static`` pre-trained models.

    Decoupling the generation of adversarial examples from the parameters being trained
    keeps single-step training from learning to mask its own gradients, and makes the model
    more robust to examples transferred from other models. ``attack`` is ``"fgsm"`` (default),
    ``"bim"``, ``"pgd"`` (final iterates) or a module-level function ``attack(model, x, y,
    eps)``. The static models are never trained; ``source_counts[i]`` counts the batches
    whose source was model ``i`` (0 = the model being trained, ``i >= 1`` = ``static[i - 1]``).
    In a cache key the static models appear as a hash of their weights.
    """

    static: Sequence[nn.Module]
    eps: float
    alpha: float = 0.5
    _: KW_ONLY
    attack: str | AttackFamily = "fgsm"
    labels: str = "true"
    name: ClassVar[str] = "ensemble_adversarial"
    source_counts: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        iterable = hasattr(self.static, "__iter__") and not isinstance(self.static, nn.Module)
        static = tuple(self.static) if iterable else ()
        if not static or not all(isinstance(m, nn.Module) for m in static):
            raise TypeError(
                "static must be a non-empty list of pre-trained nn.Module models, e.g. [model]"
            )
        _set(self, "static", static)
        _set(self, "eps", _eps(self.eps))
        _set(self, "alpha", _alpha(self.alpha))
        _labels(self.labels)
        _resolve_attack(self.attack)  # a bad name fails here, not in the first batch
        self.source_counts[:] = [0] * (len(static) + 1)

    def start(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        for m in self.static:
            m.to(x.device).eval()  # never trained: only their input gradients are used
        self.source_counts[:] = [0] * (len(self.static) + 1)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: float):
        k = int(torch.randint(len(self.static) + 1, ()).item())
        self.source_counts[k] += 1
        source = model if k == 0 else self.static[k - 1]
        target = y if self.labels == "true" else None
        attack = _resolve_attack(self.attack)
        x_adv = x if self.eps == 0 else attack(source, x, target, self.eps)
        return _mixed_loss(model, x, x_adv, y, self.alpha)

    def __repr__(self) -> str:  # the static models by class, not their full printout
        static = ", ".join(type(m).__name__ for m in self.static)
        return (
            f"EnsembleAdversarial(static=[{static}], eps={self.eps}, alpha={self.alpha}, "
            f"attack={self.attack!r}, labels={self.labels!r})"
        )
