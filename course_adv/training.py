"""One training loop, many defences: the objective is the only thing that changes.

``train(model, x, y, objective, epochs=...)`` runs a seeded mini-batch loop (Adam or SGD,
fixed batch shapes, a tqdm progress bar that works in JupyterLab and in a terminal) and
returns a ``History`` of per-epoch loss, clean accuracy and, when asked, accuracy under an
attack on a fixed monitor set.

An *objective* is any callable ``objective(model, x, y, epoch) -> loss``: it gets the model
(in train mode), one batch and the training time so far in epochs (a float: 2.5 is halfway
through the third epoch, which is what an epsilon warm-up needs), and returns the scalar
loss to minimise. Attacks inside an objective switch the model to eval mode and back (see
``course_adv.attacks``), so the loss itself is computed in train mode. An objective may also
define two optional hooks:

- ``start(model, x, y)``: called once before the first batch with the full training data;
- ``end_epoch(model, epoch, history) -> str | None``: called after each epoch's metrics are
  recorded; returning a message stops training early (``History.stop_reason``).

and ``config() -> dict`` (JSON-able), which ``describe(objective)`` returns for checkpoint keys.

The objectives, in the order of the lecture:

- ``Standard``: plain cross-entropy (with a ``dropout`` model, the lecture's baseline);
- ``static_augmentation`` + ``Standard``: the "initial approach", adversarial examples made
  once from a fixed pre-trained model and added to the training data;
- ``FGSMRegularizer``: Goodfellow et al. 2015, eq. (2), the alpha-mixed loss;
- ``IterativeRegularizer``: eq. (2) with BIM or PGD in place of FGSM;
- ``PGDMinMax``: Madry et al. 2018, eq. (3), with a linear epsilon warm-up;
- ``FastFGSM``: Wong, Rice & Kolter 2020, FGSM from a random start, with early stopping on
  catastrophic overfitting;
- ``EnsembleAdversarial``: Tramer et al. 2018, adversarial examples from the model being
  trained or from static pre-trained models.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import attacks
from .utils import get_device, seed_everything

__all__ = [
    "History",
    "train",
    "describe",
    "Standard",
    "static_augmentation",
    "FGSMRegularizer",
    "IterativeRegularizer",
    "PGDMinMax",
    "FastFGSM",
    "EnsembleAdversarial",
]

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]
# attack(model, x, y_or_None, eps) -> x_adv: what the objectives call to make examples
EpsAttack = Callable[[nn.Module, torch.Tensor, torch.Tensor | None, float], torch.Tensor]

_OPTIMIZERS = ("adam", "sgd")
_SCHEDULES = ("constant", "cyclic")
_LABELS = ("true", "predicted")


# --------------------------------------------------------------------------- history


@dataclass
class History:
    """Per-epoch record of a training run; ``as_dict()`` is JSON-able for the checkpoint cache.

    ``loss``: mean training loss of the epoch (the objective's loss). ``clean_acc``: accuracy
    on the monitor set (or, without one, on a fixed sample of up to 1,000 training points; see
    ``clean_acc_on``). ``robust_acc``: accuracy under ``monitor_attack`` on the monitor set
    (None per epoch when no attack was given). ``seconds``: wall time of each epoch.
    ``extra``: per-epoch series an objective adds (e.g. ``eps`` during a warm-up).
    ``stop_reason``: why training stopped early, or None.
    """

    loss: list[float] = field(default_factory=list)
    clean_acc: list[float] = field(default_factory=list)
    robust_acc: list[float | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    extra: dict[str, list[Any]] = field(default_factory=dict)
    clean_acc_on: str = "train"
    stop_reason: str | None = None

    def __len__(self) -> int:
        return len(self.loss)

    @property
    def epochs(self) -> list[int]:
        """Epoch numbers 1..n, for plotting."""
        return list(range(1, len(self.loss) + 1))

    def as_dict(self) -> dict[str, Any]:
        """A plain dict of lists (JSON-able)."""
        return {
            "loss": list(self.loss),
            "clean_acc": list(self.clean_acc),
            "robust_acc": list(self.robust_acc),
            "seconds": list(self.seconds),
            "extra": {k: list(v) for k, v in self.extra.items()},
            "clean_acc_on": self.clean_acc_on,
            "stop_reason": self.stop_reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Rebuild a History from ``as_dict()`` output (e.g. the info a cached model carries)."""
        return cls(
            loss=list(data.get("loss", [])),
            clean_acc=list(data.get("clean_acc", [])),
            robust_acc=list(data.get("robust_acc", [])),
            seconds=list(data.get("seconds", [])),
            extra={k: list(v) for k, v in data.get("extra", {}).items()},
            clean_acc_on=data.get("clean_acc_on", "train"),
            stop_reason=data.get("stop_reason"),
        )

    def __str__(self) -> str:
        lines = [f"{'epoch':>5} {'loss':>8} {'clean':>7} {'robust':>7} {'sec':>6}"]
        for i in range(len(self)):
            rob = self.robust_acc[i]
            rob_text = "-" if rob is None else f"{100 * rob:6.1f}%"
            lines.append(
                f"{i + 1:>5} {self.loss[i]:8.4f} {100 * self.clean_acc[i]:6.1f}% "
                f"{rob_text:>7} {self.seconds[i]:6.1f}"
            )
        if self.stop_reason:
            lines.append(f"stopped early: {self.stop_reason}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- the loop


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    objective: Objective,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    device: torch.device | str | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    lr_schedule: str = "constant",
    monitor: tuple[torch.Tensor, torch.Tensor] | None = None,
    monitor_attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> History:
    """Train ``model`` in place on ``(x, y)`` by minimising ``objective``; return its History.

    ``x``: N x C x H x W pixels in [0, 1]; ``y``: N int64 labels. Each epoch visits a seeded
    random permutation in batches of exactly ``batch_size`` (the last partial batch is
    dropped, so every step has the same shape). ``seed`` fixes the initial shuffles, the
    attacks' random starts and everything else random, so the same seed gives the same
    weights on the same machine. The model is moved to ``device`` (default
    ``course_adv.utils.get_device()``) and left in eval mode.

    ``optimizer``: ``"adam"`` or ``"sgd"`` (momentum 0.9). ``lr_schedule``: ``"constant"``, or
    ``"cyclic"`` (linear from 0 up to ``lr`` at 40% of training and back down to 0, the
    one-cycle schedule of Wong et al. 2020). ``monitor``: an ``(x, y)`` pair evaluated after
    every epoch; ``monitor_attack(model, x, y) -> x_adv`` adds robust accuracy on it (for
    example ``lambda m, x, y: pgd(m, x, y, 0.3, 0.01, 20)``). ``progress`` shows a tqdm bar.
    """
    _check_data(x, y, "x", "y")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not (isinstance(lr, int | float) and lr > 0):
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= len(x):
        raise ValueError(
            f"batch_size must be an int between 1 and the number of training points ({len(x)}), "
            f"got {batch_size!r}"
        )
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    if lr_schedule not in _SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {_SCHEDULES}, got {lr_schedule!r}")
    if not callable(objective):
        raise TypeError(
            "objective must be callable as objective(model, x, y, epoch) -> loss, e.g. Standard()"
        )
    if monitor is not None:
        if not (isinstance(monitor, tuple | list) and len(monitor) == 2):
            raise TypeError("monitor must be an (x, y) pair of tensors, or None")
        _check_data(monitor[0], monitor[1], "monitor[0]", "monitor[1]")
    if monitor_attack is not None and monitor is None:
        raise ValueError("monitor_attack needs a monitor set: pass monitor=(x_test, y_test)")

    from .evaluation import accuracy, robust_accuracy  # evaluation imports nothing from here

    torch.set_flush_denormal(True)  # underflowing gradients otherwise slow the CPU 10x
    generator = seed_everything(seed)
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    x, y = x.to(device), y.to(device)
    if monitor is not None:
        eval_x, eval_y = monitor[0].to(device), monitor[1].to(device)
        clean_on = "monitor"
    else:
        pick = torch.randperm(len(x), generator=generator)[:1000].to(device)
        eval_x, eval_y = x[pick], y[pick]
        clean_on = "train"
    history = History(clean_acc_on=clean_on)

    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)

    start = getattr(objective, "start", None)
    if start is not None:
        start(model, x, y)
    end_epoch = getattr(objective, "end_epoch", None)

    n_batches = len(x) // batch_size
    total = epochs * n_batches
    step = 0
    bar = tqdm(total=total, desc=desc or _name(objective), disable=not progress, leave=True)
    try:
        for epoch in range(epochs):
            tic = time.perf_counter()
            model.train()
            order = torch.randperm(len(x), generator=generator).to(device)
            running = torch.zeros((), device=device)
            for i in range(n_batches):
                if lr_schedule == "cyclic":
                    for group in opt.param_groups:
                        group["lr"] = lr * _triangle((step + 0.5) / total)
                idx = order[i * batch_size : (i + 1) * batch_size]
                loss = objective(model, x[idx], y[idx], epoch + i / n_batches)
                if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
                    raise TypeError(
                        f"objective {_name(objective)} must return a scalar loss tensor, "
                        f"got {type(loss).__name__}"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                running += loss.detach()
                step += 1
                bar.update(1)
            model.eval()
            history.loss.append(float(running) / n_batches)
            history.clean_acc.append(accuracy(model, eval_x, eval_y))
            if monitor_attack is not None:
                history.robust_acc.append(robust_accuracy(model, eval_x, eval_y, monitor_attack))
            else:
                history.robust_acc.append(None)
            history.seconds.append(time.perf_counter() - tic)
            postfix = {"loss": f"{history.loss[-1]:.3f}", "acc": f"{history.clean_acc[-1]:.3f}"}
            if history.robust_acc[-1] is not None:
                postfix["rob"] = f"{history.robust_acc[-1]:.3f}"
            bar.set_postfix(postfix, refresh=False)
            if end_epoch is not None:
                reason = end_epoch(model, epoch, history)
                if reason:
                    history.stop_reason = str(reason)
                    break
    finally:
        bar.close()
    model.eval()
    return history


def _triangle(t: float) -> float:
    """Wong et al. 2020's cyclic schedule: 0 -> 1 at t = 0.4 -> 0 at t = 1."""
    return t / 0.4 if t < 0.4 else max(0.0, (1 - t) / 0.6)


def _check_data(x: Any, y: Any, xname: str, yname: str) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{xname} must be a float tensor of pixels in [0, 1]")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
        raise TypeError(f"{yname} must be a 1-D int64 tensor of class labels")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{xname} and {yname} must be non-empty and of equal length")


def _name(objective: Any) -> str:
    return getattr(objective, "name", None) or getattr(objective, "__name__", None) or "train"


def describe(objective: Any) -> dict[str, Any]:
    """A JSON-able description of an objective (for checkpoint-cache configs)."""
    config = getattr(objective, "config", None)
    if callable(config):
        return config()
    return {"objective": _name(objective)}


# --------------------------------------------------------------------------- helpers


def _check_eps(eps: float, name: str = "eps") -> float:
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 <= eps <= 1:
        raise ValueError(f"{name} must be a number in [0, 1] (pixel units), got {eps!r}")
    return float(eps)


def _check_warmup(warmup_epochs: float) -> float:
    if not isinstance(warmup_epochs, int | float) or not warmup_epochs >= 0:
        raise ValueError(f"warmup_epochs must be a number >= 0, got {warmup_epochs!r}")
    return float(warmup_epochs)


def _ramp(eps: float, epoch: float, warmup_epochs: float) -> float:
    """Linear epsilon warm-up: 0 at the start, ``eps`` after ``warmup_epochs`` epochs."""
    return eps if warmup_epochs <= 0 else eps * min(1.0, epoch / warmup_epochs)


def _check_alpha(alpha: float) -> float:
    if not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha (the weight of the clean loss) must be in [0, 1], got {alpha!r}")
    return float(alpha)


def _check_labels(labels: str) -> str:
    if labels not in _LABELS:
        raise ValueError(
            f"labels must be 'true' (attack the true labels, as in eq. 2) or 'predicted' "
            f"(the model's own predictions, no label leaking), got {labels!r}"
        )
    return labels


def _attack_name(attack: Any) -> str:
    return attack if isinstance(attack, str) else getattr(attack, "__name__", repr(attack))


def _mixed_loss(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, alpha: float
) -> torch.Tensor:
    """alpha * L(x, y) + (1 - alpha) * L(x_adv, y), one forward pass over both halves."""
    if alpha == 1.0:
        return F.cross_entropy(model(x), y)
    if alpha == 0.0:
        return F.cross_entropy(model(x_adv), y)
    losses = F.cross_entropy(model(torch.cat([x, x_adv])), torch.cat([y, y]), reduction="none")
    n = len(x)
    return alpha * losses[:n].mean() + (1 - alpha) * losses[n:].mean()


# --------------------------------------------------------------------------- objectives


class Standard:
    """Plain empirical risk: the mean cross-entropy L(theta, x, y) on clean inputs.

    With a model built with ``dropout > 0`` this is the lecture's dropout baseline.
    """

    name = "standard"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: float):
        return F.cross_entropy(model(x), y)

    def config(self) -> dict[str, Any]:
        return {"objective": self.name}

    def __repr__(self) -> str:
        return "Standard()"


def static_augmentation(
    source: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    attack: str | EpsAttack = "fgsm",
    labels: str = "true",
    batch_size: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The lecture's "initial approach": adversarial examples made once, added to the data.

    Crafts ``attack`` (``"fgsm"``, ``"bim"``, ``"pgd"`` or a callable
    ``attack(model, x, y, eps)``) on the fixed pre-trained ``source`` model and returns the
    clean points followed by their adversarial versions, ``(2N x ..., 2N labels)``, both with
    the true labels. Train on them with ``Standard()``: unlike eq. (2) the examples never
    follow the model being trained (Szegedy et al. 2014; Goodfellow et al. 2015, section 6).
    """
    eps = _check_eps(eps)
    attack_fn = _resolve_attack(attack)
    _check_labels(labels)
    device = next(source.parameters()).device
    parts = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        adv = attack_fn(source, xb, yb if labels == "true" else None, eps)
        parts.append(adv.to(x.device))
    return torch.cat([x, torch.cat(parts)]), torch.cat([y, y])


def _resolve_attack(attack: str | EpsAttack, steps: int | None = None, step_size=None) -> EpsAttack:
    """Turn ``"fgsm"``, ``"bim"``, ``"pgd"`` or a callable into ``attack(model, x, y, eps)``."""
    if callable(attack):
        return attack
    if attack == "fgsm":
        return lambda m, x, y, eps: attacks.fgsm(m, x, y, eps)
    if attack == "bim":
        return lambda m, x, y, eps: attacks.bim(
            m, x, y, eps, alpha=None if step_size is None else step_size * eps, steps=steps
        )
    if attack == "pgd":
        n = 10 if steps is None else steps
        ratio = 2.5 / n if step_size is None else step_size
        return lambda m, x, y, eps: attacks.pgd(m, x, y, eps, ratio * eps, n, random_start=True)
    raise ValueError(
        "attack must be 'fgsm', 'bim', 'pgd' or a callable attack(model, x, y, eps), "
        f"got {attack!r}"
    )


class FGSMRegularizer:
    """Goodfellow, Shlens & Szegedy 2015, eq. (2): the adversarial objective function

        L~(theta, x, y) = alpha L(theta, x, y) + (1 - alpha) L(theta, x + eps sign(grad_x L), y)

    with fresh FGSM examples for every batch (made in eval mode, from the current weights).
    ``labels="true"`` attacks the true labels, as in the paper; ``labels="predicted"`` attacks
    the model's own predictions, which avoids label leaking (Kurakin et al. 2017, section 4.2):
    with true labels the perturbation itself carries the label, and the model learns to read
    it, scoring higher on FGSM examples than on clean ones. The loss always uses the true y.
    """

    name = "fgsm_regularizer"

    def __init__(self, eps: float, alpha: float = 0.5, *, labels: str = "true") -> None:
        self.eps = _check_eps(eps)
        self.alpha = _check_alpha(alpha)
        self.labels = _check_labels(labels)

    def _adversarial(self, model, x, y):
        return attacks.fgsm(model, x, y if self.labels == "true" else None, self.eps)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: float):
        x_adv = x if self.eps == 0 else self._adversarial(model, x, y)
        return _mixed_loss(model, x, x_adv, y, self.alpha)

    def config(self) -> dict[str, Any]:
        return {"objective": self.name, "eps": self.eps, "alpha": self.alpha, "labels": self.labels}

    def __repr__(self) -> str:
        return f"FGSMRegularizer(eps={self.eps}, alpha={self.alpha}, labels={self.labels!r})"


class IterativeRegularizer(FGSMRegularizer):
    """Eq. (2) of Goodfellow et al. 2015 with an iterative attack in place of FGSM.

    The lecture's "incorporating the above ideas in eq. (2)": the adversarial half of the
    loss uses BIM (Kurakin et al. 2016, its default step 1/255 and step count unless given)
    or PGD with a random start (Madry et al. 2018; ``steps`` default 10, step
    ``step_size * eps`` with ``step_size`` default 2.5 / steps). ``step_size`` is a fraction
    of eps so that it scales along with eps.
    """

    name = "iterative_regularizer"

    def __init__(
        self,
        eps: float,
        alpha: float = 0.5,
        *,
        attack: str = "bim",
        steps: int | None = None,
        step_size: float | None = None,
        labels: str = "true",
    ) -> None:
        super().__init__(eps, alpha, labels=labels)
        if attack not in ("bim", "pgd"):
            raise ValueError(f"attack must be 'bim' or 'pgd', got {attack!r}")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be an int >= 1 or None, got {steps!r}")
        if step_size is not None and not step_size > 0:
            raise ValueError(
                f"step_size (a fraction of eps) must be > 0 or None, got {step_size!r}"
            )
        self.attack, self.steps, self.step_size = attack, steps, step_size
        self._attack = _resolve_attack(attack, steps, step_size)

    def _adversarial(self, model, x, y):
        return self._attack(model, x, y if self.labels == "true" else None, self.eps)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "attack": self.attack,
            "steps": self.steps,
            "step_size": self.step_size,
        }

    def __repr__(self) -> str:
        return (
            f"IterativeRegularizer(eps={self.eps}, alpha={self.alpha}, attack={self.attack!r}, "
            f"steps={self.steps}, step_size={self.step_size}, labels={self.labels!r})"
        )


class PGDMinMax:
    """Madry et al. 2018, eq. (3): min over theta of E[max over ||delta||_inf <= eps of L].

    The inner max is approximated by PGD with a random start (``steps`` steps of
    ``step_size * eps``, default 2.5 / steps, Madry et al.'s rule of thumb); the outer min is
    the training loop. The loss is the adversarial loss alone (no clean term).
    As in the paper, every example takes all ``steps`` and the last iterate is trained on
    (``pgd(..., early_stop=False)``). ``early_stop=True`` instead trains on the first iterate
    that fools the model, just past the decision boundary (close to the "early-stopped PGD"
    of Zhang et al. 2020), a gentler inner max kept for comparison.

    ``warmup_epochs``: epsilon grows linearly from 0 to ``eps`` over that many epochs (per
    batch, not per epoch). On MNIST at eps = 0.3, PGD training from scratch can sit at a
    constant predictor for many epochs without it (COURSE.md section 6); a ramp is the usual
    cure (e.g. Gowal et al. 2018; Wong et al. 2020 use one too).
    """

    name = "pgd_minmax"

    def __init__(
        self,
        eps: float,
        *,
        steps: int = 10,
        step_size: float | None = None,
        warmup_epochs: float = 0.0,
        random_start: bool = True,
        early_stop: bool = False,
    ) -> None:
        self.eps = _check_eps(eps)
        self.early_stop = bool(early_stop)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        if step_size is not None and not step_size > 0:
            raise ValueError(
                f"step_size (a fraction of eps) must be > 0 or None, got {step_size!r}"
            )
        self.steps = steps
        self.step_size = 2.5 / steps if step_size is None else float(step_size)
        self.warmup_epochs = _check_warmup(warmup_epochs)
        self.random_start = bool(random_start)

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
            early_stop=self.early_stop,
        )
        return F.cross_entropy(model(x_adv), y)

    def end_epoch(self, model: nn.Module, epoch: int, history: History) -> None:
        history.extra.setdefault("eps", []).append(self.eps_at(epoch + 1))

    def config(self) -> dict[str, Any]:
        return {
            "objective": self.name,
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.step_size,
            "warmup_epochs": self.warmup_epochs,
            "random_start": self.random_start,
            "early_stop": self.early_stop,
        }

    def __repr__(self) -> str:
        return (
            f"PGDMinMax(eps={self.eps}, steps={self.steps}, step_size={self.step_size:.4g}, "
            f"warmup_epochs={self.warmup_epochs})"
        )


class FastFGSM:
    """Wong, Rice & Kolter 2020 ("Fast is better than free"), Algorithm 3: FGSM training
    from a random start.

        delta ~ U(-eps, eps);  delta <- clip_eps(delta + a sign(grad_delta L(x + delta)))
        theta <- theta - lr grad_theta L(x + delta, y)

    with step ``a = step_size`` (default 1.25 eps, the paper's choice), x + delta kept in
    [0, 1]. ``random_start=False`` with ``step_size=eps`` is plain FGSM training from a zero
    start, the paper's "zero init" baseline. ``warmup_epochs`` ramps eps (and the step with
    it) linearly from 0, as in ``PGDMinMax``; without one, on the 4,000-digit default at
    eps = 0.3, single-step training never gets off the ground.

    The paper's failure mode is *catastrophic overfitting*: within an epoch, accuracy under
    PGD falls to about zero while accuracy under FGSM climbs. With ``early_stop=True`` each
    epoch ends by measuring accuracy under PGD (``check_steps`` steps of eps/4, full eps) on a
    fixed batch of the first ``check_size`` training points; if it falls more than ``drop``
    below the previous epoch's, training stops and the previous epoch's weights are restored
    (the paper's early stopping, section 5.3). The check accuracies are stored per epoch in
    ``history.extra["check_robust_acc"]``, eps in ``history.extra["eps"]``.
    """

    name = "fast_fgsm"

    def __init__(
        self,
        eps: float,
        *,
        step_size: float | None = None,
        random_start: bool = True,
        warmup_epochs: float = 0.0,
        early_stop: bool = True,
        check_size: int = 256,
        check_steps: int = 10,
        drop: float = 0.2,
    ) -> None:
        self.eps = _check_eps(eps)
        self.step_size = 1.25 * self.eps if step_size is None else step_size
        if not isinstance(self.step_size, int | float) or not self.step_size > 0:
            raise ValueError(f"step_size must be a number > 0 (pixel units), got {step_size!r}")
        if not isinstance(check_size, int) or check_size < 1:
            raise ValueError(f"check_size must be an int >= 1, got {check_size!r}")
        if not isinstance(check_steps, int) or check_steps < 1:
            raise ValueError(f"check_steps must be an int >= 1, got {check_steps!r}")
        if not isinstance(drop, int | float) or not 0 < drop <= 1:
            raise ValueError(
                f"drop (a fall in accuracy, a fraction) must be in (0, 1], got {drop!r}"
            )
        self.random_start = bool(random_start)
        self.warmup_epochs = _check_warmup(warmup_epochs)
        self.early_stop = bool(early_stop)
        self.check_size, self.check_steps, self.drop = check_size, check_steps, float(drop)
        self._check: tuple[torch.Tensor, torch.Tensor] | None = None
        self._previous: tuple[float, dict[str, torch.Tensor]] | None = None

    def eps_at(self, epoch: float) -> float:
        """Epsilon after ``epoch`` epochs of training (the linear warm-up)."""
        return _ramp(self.eps, epoch, self.warmup_epochs)

    def start(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        # a fixed batch, the same for every epoch: the first check_size training points
        self._check = (x[: self.check_size], y[: self.check_size])
        self._previous = None

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

    def check_accuracy(self, model: nn.Module) -> float:
        """Accuracy under PGD at the full eps on the fixed check batch (the stopping signal)."""
        if self._check is None:
            raise RuntimeError("call start(model, x, y) (train() does) before check_accuracy")
        xc, yc = self._check
        x_adv = xc
        if self.eps > 0:
            x_adv = attacks.pgd(model, xc, yc, self.eps, self.eps / 4, self.check_steps)
        with torch.no_grad():
            return (model(x_adv).argmax(1) == yc).float().mean().item()

    def end_epoch(self, model: nn.Module, epoch: int, history: History) -> str | None:
        acc = self.check_accuracy(model)
        history.extra.setdefault("check_robust_acc", []).append(acc)
        history.extra.setdefault("eps", []).append(self.eps_at(epoch + 1))
        if not self.early_stop:
            return None
        if self._previous is not None and acc < self._previous[0] - self.drop:
            model.load_state_dict(self._previous[1])
            return (
                f"catastrophic overfitting in epoch {epoch + 1}: PGD accuracy on the check batch "
                f"fell from {self._previous[0]:.2f} to {acc:.2f}; weights of epoch {epoch} restored"
            )
        self._previous = (acc, copy.deepcopy(model.state_dict()))
        return None

    def config(self) -> dict[str, Any]:
        return {
            "objective": self.name,
            "eps": self.eps,
            "step_size": self.step_size,
            "random_start": self.random_start,
            "warmup_epochs": self.warmup_epochs,
            "early_stop": self.early_stop,
            "check_size": self.check_size,
            "check_steps": self.check_steps,
            "drop": self.drop,
        }

    def __repr__(self) -> str:
        return (
            f"FastFGSM(eps={self.eps}, step_size={self.step_size:.4g}, "
            f"random_start={self.random_start}, warmup_epochs={self.warmup_epochs}, "
            f"early_stop={self.early_stop})"
        )


class EnsembleAdversarial:
    """Tramer et al. 2018, "Ensemble Adversarial Training" (section 3.2): eq. (2) of
    Goodfellow et al. with the adversarial half crafted, per batch, on a source drawn at
    random from the model being trained and the ``static`` pre-trained models.

    Decoupling the generation of adversarial examples from the parameters being trained
    keeps single-step training from learning to mask its own gradients, and makes the model
    more robust to examples transferred from other models. ``attack`` is ``"fgsm"`` (default),
    ``"bim"``, ``"pgd"`` or a callable ``attack(model, x, y, eps)``. The static models are
    never trained; ``source_counts[i]`` counts the batches whose source was model ``i``
    (0 = the model being trained, ``i >= 1`` = ``static[i - 1]``).
    """

    name = "ensemble_adversarial"

    def __init__(
        self,
        static: Sequence[nn.Module],
        eps: float,
        alpha: float = 0.5,
        *,
        attack: str | EpsAttack = "fgsm",
        labels: str = "true",
    ) -> None:
        static = list(static)
        if not static or not all(isinstance(m, nn.Module) for m in static):
            raise TypeError("static must be a non-empty list of pre-trained nn.Module models")
        self.static = static
        self.eps = _check_eps(eps)
        self.alpha = _check_alpha(alpha)
        self.labels = _check_labels(labels)
        self.attack = attack
        self._attack = _resolve_attack(attack)
        self.source_counts = [0] * (len(static) + 1)

    def start(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        for m in self.static:
            m.to(x.device).eval()  # never trained: only their input gradients are used
        self.source_counts = [0] * (len(self.static) + 1)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: float):
        k = int(torch.randint(len(self.static) + 1, ()).item())
        self.source_counts[k] += 1
        source = model if k == 0 else self.static[k - 1]
        labels = y if self.labels == "true" else None
        x_adv = x if self.eps == 0 else self._attack(source, x, labels, self.eps)
        return _mixed_loss(model, x, x_adv, y, self.alpha)

    def config(self) -> dict[str, Any]:
        return {
            "objective": self.name,
            "eps": self.eps,
            "alpha": self.alpha,
            "attack": _attack_name(self.attack),
            "labels": self.labels,
            "static": [type(m).__name__ for m in self.static],
        }

    def __repr__(self) -> str:
        return (
            f"EnsembleAdversarial({len(self.static)} static models, eps={self.eps}, "
            f"alpha={self.alpha}, attack={_attack_name(self.attack)!r})"
        )
